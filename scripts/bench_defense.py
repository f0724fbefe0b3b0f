#!/usr/bin/env python
"""Benchmark: the Heat and Blur defended prediction against a plain forward, and NDCG at scale.

- ``forward_s``: the jitted forward of VGG19 (ImageNet layout, random weights), 224x224, batch 8;
- ``defended_s``: the defended prediction ``hbjax.defense.defended(model, sigma=(0.8, 1.2))`` in one
  jitted call: the LRP pass (composite ``dtd``; its forward gives the prediction), binarisation,
  blur with a per-image sigma, restore, and the second forward on the cleaned images;
- ``ndcg_seconds_50k``: ``hbjax.metrics.ndcg`` with ks = 1..5 on 50,000 x 1,000 logits (benign
  logits N(0, 2^2), the others the benign plus N(0, 1) noise: flat enough that K1 is in the
  hundreds, the hard case for the coverage search), input checks included.

Forward and defended runs alternate and each time is the best of ``--repeats`` runs after a warm-up
(the minimum is the estimate least disturbed by other processes); the load average is reported so
a busy machine shows. The last line printed is a JSON object with ``defense_over_forward`` and
``ndcg_seconds_50k``.

    python scripts/bench_defense.py            # the bar: defense_over_forward <= 4.5, ndcg_seconds_50k <= 2.0
    python scripts/bench_defense.py --batch 2 --size 64 --rows 5000 --repeats 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_defense(args) -> dict:
    import jax
    import jax.numpy as jnp

    import hbjax
    from hbjax import defense, xla

    model = hbjax.models.vgg(args.arch, key=jax.random.key(args.seed), input_size=(args.size, args.size))
    params = jax.device_put(model.params)
    rng = np.random.default_rng(args.seed)
    x = jnp.asarray(rng.uniform(0.0, 1.0, (args.batch, args.size, args.size, 3)).astype(np.float32))
    key = jax.random.key(args.seed)

    forward = xla.jit(model.apply)
    defended = xla.jit(defense.defended(model, sigma=tuple(args.sigma), composite=args.composite))

    def run_forward():
        jax.block_until_ready(forward(params, x))

    def run_defended():
        jax.block_until_ready(defended(params, x, key))

    run_forward(), run_defended()  # compilation
    t_fwd, t_def = [], []
    for _ in range(args.repeats):
        t_fwd.append(timed(run_forward))
        t_def.append(timed(run_defended))
    return {
        "forward_s": round(min(t_fwd), 4),
        "defended_s": round(min(t_def), 4),
        "defense_over_forward": round(min(t_def) / min(t_fwd), 3),
    }


def bench_ndcg(args) -> dict:
    import jax
    import jax.numpy as jnp

    from hbjax import metrics

    rng = np.random.default_rng(args.seed)
    b = (rng.standard_normal((args.rows, args.classes), np.float32) * 2.0).astype(np.float32)
    a = b + rng.standard_normal((args.rows, args.classes), np.float32)
    b, a = jnp.asarray(b), jnp.asarray(a)
    run = lambda: jax.block_until_ready(metrics.ndcg(b, a, ks=(1, 2, 3, 4, 5)))  # noqa: E731
    run()
    times, cpu = [], []
    for _ in range(args.repeats):
        c0 = time.process_time()
        times.append(timed(run))
        cpu.append(time.process_time() - c0)
    out = {
        "ndcg_seconds_50k": round(min(times) * 50_000 / args.rows, 4),
        "ndcg_cpu_seconds_50k": round(min(cpu) * 50_000 / args.rows, 4),  # summed over threads
        "ndcg_rows": args.rows,
    }
    if args.check_rows:
        n = args.check_rows
        ref = metrics.ndcg_reference(b[:n], a[:n])
        out["ndcg_max_abs_diff_vs_reference"] = float(jnp.max(jnp.abs(run()[:n] - ref)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="vgg19")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sigma", type=float, nargs=2, default=(0.8, 1.2))
    parser.add_argument("--composite", default="dtd")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--check-rows", type=int, default=0, help="compare this many rows with ndcg_reference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-defense", action="store_true")
    parser.add_argument("--skip-ndcg", action="store_true")
    args = parser.parse_args()

    import jax


    result: dict = {
        "arch": args.arch, "size": args.size, "batch": args.batch, "backend": jax.default_backend(),
        "cpus": os.cpu_count(), "loadavg_start": [round(v, 2) for v in os.getloadavg()],
    }  # fmt: skip
    if not args.skip_defense:
        result.update(bench_defense(args))
        print(f"forward {result['forward_s']:.3f} s, defended {result['defended_s']:.3f} s", flush=True)
    if not args.skip_ndcg:
        result.update(bench_ndcg(args))
        print(f"ndcg {args.rows} x {args.classes}: {result['ndcg_seconds_50k'] * args.rows / 50_000:.3f} s", flush=True)
    result["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
