#!/usr/bin/env python
"""Benchmark: hbjax LRP against the jitted JAX forward and against zennit, same weights and inputs.

VGG19 or a ResNet (``--arch resnet50``; torchvision layout, random weights with random biases in
[-0.05, 0.05], random batch-norm statistics), 224x224, batch 8, on the CPU:

- ``forward_s``: the jitted JAX forward (``hbjax.jit(model.apply)``: compiled with the same XLA
  options as hbjax's LRP, see :mod:`hbjax.xla`; ``forward_xla_defaults_s`` is the same forward under
  a plain ``jax.jit``, for reference; the ratios use ``forward_s``);
- ``lrp_s``: ``hbjax.lrp.relevance_fn(model, composite="epsilon_plus_flat")`` (one jitted function: the
  forward, the z+ forwards, one backward), the function behind ``hbjax.lrp.relevance``;
- ``zennit_s``: zennit's ``EpsilonPlusFlat`` through ``zennit.attribution.Gradient`` on the same
  torchvision network, with its ``ResNetCanonizer`` for a ResNet (and ``torch_forward_s``, a
  plain torch forward, for scale).

The four are timed in interleaved rounds (forward, LRP, zennit, torch forward, then again) after a
warm-up round, so that other load on the machine hits all of them alike, with a 0.2 s pause before
each call (torch's and XLA's worker threads spin for a while after their work and would slow the
next part). zennit and the torch forward run in a child process of their own (each side times its
own calls): in one process, torch's work slowed the XLA work after it for longer than any pause
(see :class:`benchparts.ChildParts`). The run is bounded: no further round starts once it would end more than ``--budget-s``
(170) seconds after the first call; at least two timed rounds run. The ratios are the medians
over the rounds of each round's ratio (the two timings of a ratio are taken back to back, which
keeps them robust when the load on the machine changes); ``*_s`` are the best times and
``ratios_of_best`` the ratios of those. zennit runs as a user would call it on a torchvision model
(parameters left with ``requires_grad``). Memory: the peak
growth of the resident set during each call (sampled every 2 ms from /proc/self/statm), in the
warm-up call (compilation included for JAX) and in one more call of each part after the timed
rounds (never during a timed call, so that the sampling thread cannot take CPU from the part it
times on a machine with few cores), and XLA's own account of the compiled LRP function (``memory_analysis``: arguments,
outputs, temporaries).

The bars' verdicts are printed ("holds" or "FAILS"); the last line printed is a JSON object with
``lrp_over_forward``, ``zennit_over_hbjax`` and ``bars`` (name -> [operator, limit, holds]).

    python scripts/bench_lrp.py                       # bar: lrp_over_forward <= 3.2, zennit_over_hbjax >= 2
    python scripts/bench_lrp.py --arch resnet50       # bar: lrp_over_forward <= 3.2
    python scripts/bench_lrp.py --batch 2 --size 128 --rounds 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
from benchparts import ChildParts, local

MIB = 1024.0 * 1024.0
PAUSE_S = 0.2
BAR_LRP_OVER_FORWARD = 3.2  # VGG19 and ResNet-50, issue 14 item 6
BAR_ZENNIT_OVER_HBJAX = 2.0  # VGG19


def torch_net(arch: str, seed: int):
    """A torchvision VGG or ResNet with random weights, random biases in [-0.05, 0.05] and (ResNet)
    random batch-norm statistics."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.05, 0.05)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


def bench_inputs(args, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The images (B, H, W, 3) in [0, 1] and the explained classes, from ``args.seed``."""
    rng = np.random.default_rng(args.seed)
    x_np = rng.uniform(0.0, 1.0, (args.batch, args.size, args.size, 3)).astype(np.float32)
    return x_np, (np.arange(args.batch) * 97) % num_classes


def torch_parts(args, num_classes: int, normalization) -> tuple[dict, dict]:
    """The torch side, built in its own process (:class:`benchparts.ChildParts`): zennit and the
    plain torch forward on the same network and inputs."""
    import torch
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    net = torch_net(args.arch, args.seed)
    x_np, targets_np = bench_inputs(args, num_classes)
    mean, std = (np.asarray(v, np.float32) for v in normalization)
    xn = torch.tensor(((x_np - mean) / std).transpose(0, 3, 1, 2), dtype=torch.float32)
    onehot = torch.eye(num_classes)[targets_np]

    def torch_forward():
        with torch.no_grad():
            net(xn)

    def zennit_lrp():
        xr = xn.clone().requires_grad_(True)
        canonizers = [ResNetCanonizer()] if args.arch.startswith("resnet") else None
        with Gradient(net, EpsilonPlusFlat(canonizers=canonizers)) as attributor:
            attributor(xr, onehot)

    parts = {"zennit": zennit_lrp, "torch_forward": torch_forward}
    return parts, {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="vgg19")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up round")
    p.add_argument("--composite", default="epsilon_plus_flat",
                   help="hbjax composite (zennit runs EpsilonPlusFlat)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-s", type=float, default=170.0,
                   help="no further timed round once another would end past this many seconds "
                        "after the first call (at least 2 timed rounds run)")  # fmt: skip
    args = p.parse_args(argv)
    if args.rounds < 1 or args.batch < 1 or args.size < 32:
        p.error("--rounds and --batch must be at least 1 and --size at least 32")

    import jax
    import jax.numpy as jnp

    import hbjax
    from hbjax import lrp, xla

    net = torch_net(args.arch, args.seed)
    model = hbjax.models.from_torchvision(args.arch, net.state_dict())
    del net
    params = jax.device_put(model.params)
    model = model.replace(params=params)

    x_np, targets_np = bench_inputs(args, model.num_classes)
    x = jnp.asarray(x_np)
    targets = jnp.asarray(targets_np, jnp.int32)
    normalization = (np.asarray(model.normalization.mean).tolist(), np.asarray(model.normalization.std).tolist())

    forward = xla.jit(model.apply)
    forward_defaults = jax.jit(model.apply)
    explain = lrp.relevance_fn(model, composite=args.composite)

    def jax_forward():
        forward(params, x).block_until_ready()

    def jax_forward_defaults():
        forward_defaults(params, x).block_until_ready()

    def hbjax_lrp():
        explain(params, x, targets)[0].block_until_ready()

    torch_side = ChildParts(torch_parts, args, model.num_classes, normalization)
    parts = {
        "forward": local(jax_forward),
        "lrp": local(hbjax_lrp),
        "zennit": torch_side.part("zennit"),
        "torch_forward": torch_side.part("torch_forward"),
        "forward_xla_defaults": local(jax_forward_defaults),
    }
    times: dict[str, list[float]] = {k: [] for k in parts}
    warm_mib: dict[str, float] = {}
    run_mib: dict[str, float] = {k: 0.0 for k in parts}
    started = time.perf_counter()
    for r in range(args.rounds + 1):
        round_start = time.perf_counter()
        for name, fn in parts.items():
            time.sleep(PAUSE_S)  # lets the previous part's idle threads (OpenMP, XLA) stop spinning
            if r == 0:
                warm_mib[name] = fn(memory=True)[1]
                continue
            times[name].append(fn(memory=False)[0])
        if r:
            print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        last_round = time.perf_counter() - round_start
        if r >= 2 and r < args.rounds and time.perf_counter() - started + last_round > args.budget_s:
            print(f"stopping after {r} timed rounds: another would pass --budget-s {args.budget_s:g}", flush=True)
            break

    for name, fn in parts.items():  # memory, apart from the timed calls (the sampler takes CPU)
        time.sleep(PAUSE_S)
        run_mib[name] = fn(memory=True)[1]
    torch_side.close()
    analysis = explain.lower(params, x, targets).compile().memory_analysis()
    xla_mib = None
    if analysis is not None:
        xla_mib = {
            "arguments": analysis.argument_size_in_bytes / MIB,
            "outputs": analysis.output_size_in_bytes / MIB,
            "temporaries": analysis.temp_size_in_bytes / MIB,
        }
    best = {k: min(v) for k, v in times.items()}
    t = {k: np.asarray(v) for k, v in times.items()}

    def ratio(a: str, b: str) -> float:
        return float(np.median(t[a] / t[b]))

    result = {
        "arch": args.arch,
        "input": [args.batch, args.size, args.size, 3],
        "composite": args.composite,
        "rounds": len(times["forward"]),
        "rounds_requested": args.rounds,
        "cpu_count": os.cpu_count(),
        "forward_s": best["forward"],
        "lrp_s": best["lrp"],
        "torch_forward_s": best["torch_forward"],
        "forward_xla_defaults_s": best["forward_xla_defaults"],
        "compiler_options": xla.compiler_options(),
        "zennit_s": best["zennit"],
        "median_s": {k: float(np.median(v)) for k, v in times.items()},
        "rss_growth_warmup_mib": warm_mib,
        "rss_growth_mib": run_mib,
        "xla_lrp_memory_mib": xla_mib,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "jax": jax.__version__,
        **torch_side.info,
        "ratios_of_best": {
            "lrp_over_forward": best["lrp"] / best["forward"],
            "zennit_over_hbjax": best["zennit"] / best["lrp"],
            "zennit_over_torch_forward": best["zennit"] / best["torch_forward"],
        },
        "lrp_over_forward": ratio("lrp", "forward"),
        "zennit_over_hbjax": ratio("zennit", "lrp"),
        "zennit_over_torch_forward": ratio("zennit", "torch_forward"),
    }
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["bars"] = bars(args.arch, result)
    for name, (op, limit, holds) in result["bars"].items():
        print(f"{name} {result[name]:.3f} (bar {op} {limit}): {'holds' if holds else 'FAILS'}")
    print(json.dumps(result))


def bars(arch: str, result: dict) -> dict[str, tuple[str, float, bool]]:
    """The bars of issue 14 (item 6) that apply to ``arch``: name -> (operator, limit, holds)."""
    checks = {}
    if arch.startswith(("vgg", "resnet")):
        checks["lrp_over_forward"] = ("<=", BAR_LRP_OVER_FORWARD)
    if arch.startswith("vgg"):
        checks["zennit_over_hbjax"] = (">=", BAR_ZENNIT_OVER_HBJAX)
    return {
        name: (op, limit, result[name] <= limit if op == "<=" else result[name] >= limit)
        for name, (op, limit) in checks.items()
    }


if __name__ == "__main__":
    main()
