"""VGG19 forward pass, jitted JAX against torch, on the same weights and the same images.

    python scripts/bench_forward.py [--batch-size 8] [--repeats 5] [--arch vgg19]

Random torchvision weights (non-zero biases) are ported with ``hbjax.models.from_torchvision``;
the inputs are ImageNet-sample images preprocessed by ``hbjax.data`` (224x224). Both frameworks
are warmed up (JAX: compilation), then timed over ``--repeats`` runs; the median is reported. The
logits are checked to agree (max |diff| <= 1e-4 max |logit|). The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import numpy as np
import torch
import torchvision

import hbjax
from hbjax import xla
from hbjax.data import ImageFolder, Preprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET_MEAN = np.asarray((0.485, 0.456, 0.406), np.float32)
IMAGENET_STD = np.asarray((0.229, 0.224, 0.225), np.float32)


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg19")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--data", default=os.environ.get("HBJAX_DATA", os.path.join(REPO, "..", "shared", "data"))
    )
    args = parser.parse_args()

    folder = ImageFolder(
        os.path.join(args.data, "imagenet-sample"), "val", Preprocess("imagenet"), limit_per_class=1
    )
    indices = np.linspace(0, len(folder) - 1, args.batch_size).astype(int)
    x, _, _ = next(folder.batches(args.batch_size, indices=indices))

    torch.manual_seed(0)
    net = getattr(torchvision.models, args.arch)(weights=None).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
    model = hbjax.models.from_torchvision(args.arch, net.state_dict())
    params = jax.device_put(model.params)
    x_jax = jax.device_put(x)
    x_torch = torch.from_numpy(((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2).copy())

    forward = xla.jit(model.apply)
    start = time.perf_counter()
    jax_logits = np.asarray(forward(params, x_jax).block_until_ready())
    compile_s = time.perf_counter() - start
    jax_times = timed(lambda: forward(params, x_jax).block_until_ready(), args.repeats)

    with torch.inference_mode():
        torch_logits = net(x_torch).numpy()  # warm-up
        torch_times = timed(lambda: net(x_torch), args.repeats)

    scale = float(np.abs(torch_logits).max())
    err = float(np.abs(jax_logits - torch_logits).max())
    jax_s, torch_s = statistics.median(jax_times), statistics.median(torch_times)
    result = {
        "arch": args.arch,
        "batch_size": args.batch_size,
        "image_size": 224,
        "repeats": args.repeats,
        "jax_s": round(jax_s, 4),
        "torch_s": round(torch_s, 4),
        "jax_over_torch": round(jax_s / torch_s, 3),
        "jax_compile_and_first_run_s": round(compile_s, 3),
        "jax_times_s": [round(t, 4) for t in jax_times],
        "torch_times_s": [round(t, 4) for t in torch_times],
        "max_abs_logit_diff": err,
        "max_abs_logit": scale,
        "logits_agree": err <= 1e-4 * scale,
        "jax": jax.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result))
    return 0 if result["logits_agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
