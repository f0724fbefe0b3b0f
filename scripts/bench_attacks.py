#!/usr/bin/env python
"""Benchmark: the attacks' loop overhead, and their speed against torchattacks and foolbox.

On the CIFAR VGG19 (``hbjax.models.vgg_cifar``, random weights, width 0.25 by default), a batch of
128 random images, on the default JAX device (CPU here):

- ``grad_step_s``: one jitted gradient of the summed cross-entropy with respect to the input;
- ``pgd_s``: ``hbjax.attacks.pgd`` Linf, eps 8/255, 20 steps of 2/255 with random start (its final
  evaluation included), as jitted chunks of unrolled steps (``loop="unroll"``) and as one
  ``lax.while_loop`` (``loop="lax"``);
- ``cw_s``: ``hbjax.attacks.carlini_wagner_l2``, ``--cw-binary`` binary-search steps x
  ``--cw-steps`` Adam steps without early abort (2 x 50 = 100 gradient steps by default);
- ``apgd_s``: ``hbjax.attacks.apgd`` (CE, Linf, ``--apgd-steps``) at a radius so small
  (``--apgd-eps``) that no example is fooled and every step runs, labels = the model's predictions;
  its overhead is its time over (steps + 1) gradient steps; ``square``: ``--square-queries`` queries;
  torchattacks' APGD and Square on the same batch;
- the same attacks in torch on a twin of the network (same weights and inputs): torchattacks' PGD
  and foolbox's L2CarliniWagnerAttack.

Compilation is excluded (a warm-up run first). A loop overhead is the attack's time over its
number of gradient steps times one gradient step, the gradient step timed as the median of a few
calls just before and just after the attack run (so that a shared machine's changing load falls on
both), the best of ``--repeats`` runs (``--cw-repeats`` for CW). A speedup is the reference's time
over ours, each the best of the repeats, the two alternating. The load average is printed so that a
busy machine shows. The last line printed is a JSON object with ``pgd_loop_overhead`` (PGD time /
(20 gradient steps)) and ``cw_loop_overhead`` (CW time / (500 gradient steps)) for the default loop
of the device (``"unroll"`` on CPU, ``"lax"`` elsewhere; ``--loops unroll,lax`` times both),
``apgd_loop_overhead``, the bars' verdicts (``bars``: each overhead <= 1.15),
``pgd_speedup_vs_torchattacks``, ``apgd_speedup_vs_torchattacks``,
``square_speedup_vs_torchattacks``, ``cw_speedup_vs_foolbox``, every measured time and the
run's wall time (``duration_s``). Before it, a verdict line per bar and the APGD and Square times
against torchattacks.

The default run is sized to finish in under 3 minutes on 4 idle cores (the device's loop only,
CW 2 x 50 steps, 2 repeats); ``--loops unroll,lax --cw-binary 5 --cw-steps 100 --repeats 3`` is the longer run of
docs/attacks.md.

    python scripts/bench_attacks.py                   # the bars: PGD, APGD and CW loop overheads <= 1.15
    python scripts/bench_attacks.py --batch 8 --pgd-steps 4 --apgd-steps 4 --cw-binary 1 --cw-steps 4 \
        --square-queries 10 --repeats 1              # a quick check that everything runs
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

OVERHEAD_BAR = 1.15  # an attack's time over its gradient steps' time
PAUSE_S = 0.2  # before each timed call of a comparison between frameworks


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_of(fns: dict, repeats: int) -> dict:
    """Each function's best time over ``repeats`` rounds, the functions alternating in a round, each
    call after a pause of PAUSE_S (torch's and XLA's worker threads spin for a while after their
    work and would slow the other framework's call)."""
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(PAUSE_S)
            times[name].append(timed(fn))
    return {name: min(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--pgd-steps", type=int, default=20)
    parser.add_argument("--cw-binary", type=int, default=2)
    parser.add_argument("--cw-steps", type=int, default=50)
    parser.add_argument("--unroll", type=int, default=10, help="steps a chunk for loop='unroll'")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cw-repeats", type=int, default=1)
    parser.add_argument("--loops", default=None,
                        help="JAX loops to time, comma-separated (default: the device's, unroll on CPU, lax elsewhere)")  # fmt: skip
    parser.add_argument("--skip-reference", action="store_true", help="no torchattacks / foolbox")
    parser.add_argument("--apgd-steps", type=int, default=20)
    parser.add_argument("--apgd-eps", type=float, default=0.25 / 255,
                        help="small, so that no example is fooled early and every step runs")
    parser.add_argument("--square-queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()

    import jax
    import jax.numpy as jnp

    import hbjax
    from hbjax import attacks, xla

    default_loop = "unroll" if jax.default_backend() == "cpu" else "lax"
    loops = [s for s in (args.loops or default_loop).split(",") if s]
    model = hbjax.models.vgg_cifar(width=args.width, key=jax.random.key(args.seed))
    rng = np.random.default_rng(args.seed)
    x_np = rng.uniform(0.0, 1.0, (args.batch, 32, 32, 3)).astype(np.float32)
    y_np = rng.integers(0, 10, args.batch).astype(np.int32)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    fn = attacks.model_logits(model)
    key = jax.random.key(args.seed)
    eps, alpha = 8 / 255, 2 / 255
    print(f"device {jax.devices()[0]}, batch {args.batch}, width {args.width}, load {os.getloadavg()}")

    grad = xla.jit(
        lambda f, z, c: jax.grad(lambda v: jnp.sum(attacks.attack_loss(f(v), c, "ce", False)))(z)
    )

    def run_grad():
        jax.block_until_ready(grad(fn, x, y))

    def pgd_runner(loop):
        def run():
            r = attacks.pgd(
                fn, x, y, key, eps=eps, norm="linf", steps=args.pgd_steps, step_size=alpha,
                loop=loop, unroll=args.unroll,
            )  # fmt: skip
            jax.block_until_ready(r)

        return run

    def cw_runner(loop, binary, steps):
        def run():
            r = attacks.carlini_wagner_l2(
                fn, x, y, key, binary_search_steps=binary, steps=steps, learning_rate=1e-2,
                initial_const=1e-2, abort_early=False, loop=loop, unroll=args.unroll,
            )  # fmt: skip
            jax.block_until_ready(r)

        return run

    y_pred = jnp.argmax(fn(x), -1).astype(jnp.int32)  # APGD and Square: every example starts robust

    def apgd_runner(loop):
        def run():
            r = attacks.apgd(fn, x, y_pred, key, eps=args.apgd_eps, steps=args.apgd_steps, loop=loop,
                             unroll=args.unroll)  # fmt: skip
            jax.block_until_ready(r)

        return run

    def square_run():
        r = attacks.square(fn, x, y_pred, key, eps=args.apgd_eps, queries=args.square_queries, unroll=args.unroll)
        jax.block_until_ready(r)

    def bracketed(run, n_steps: int, k: int) -> tuple[float, float]:
        """(attack time, gradient-step time) of one run, the gradient step timed as the median of
        k calls just before and k just after it (the load of the moment, on a shared machine)."""
        before = float(np.median([timed(run_grad) for _ in range(k)]))
        t = timed(run)
        after = float(np.median([timed(run_grad) for _ in range(k)]))
        return t, (before + after) / 2

    def measure(name: str, run, n_steps: int, repeats: int, k: int) -> None:
        """The repeat with the smallest overhead: attack time / (n_steps x gradient step)."""
        best = None
        for _ in range(repeats):
            t, g = bracketed(run, n_steps, k)
            if best is None or t / (n_steps * g) < best[0] / (n_steps * best[1]):
                best = (t, g)
        t, g = best
        results[f"{name}_s"], results[f"{name}_grad_step_s"] = t, g
        results[f"{name}_overhead"] = t / (n_steps * g)
        print(f"{name}: {t:.3f} s, gradient step {g:.4f} s, overhead {t / (n_steps * g):.3f}", flush=True)

    results: dict = {}
    run_grad()
    for loop in loops:  # compile
        pgd_runner(loop)()
        cw_runner(loop, 1, min(args.cw_steps, args.unroll))()
        apgd_runner(loop)()
    square_run()
    print(f"warm-up (compilation) done at {time.perf_counter() - started:.0f} s", flush=True)
    cw_steps = args.cw_binary * args.cw_steps
    for loop in loops:
        measure(f"pgd_{loop}", pgd_runner(loop), args.pgd_steps, args.repeats, 5)
    for loop in loops:  # APGD: steps + 1 gradients (the start's) and one final forward
        measure(f"apgd_{loop}", apgd_runner(loop), args.apgd_steps + 1, args.repeats, 5)
    for loop in loops:
        measure(f"cw_{loop}", cw_runner(loop, args.cw_binary, args.cw_steps), cw_steps, args.cw_repeats, 10)
    results["grad_step_s"] = min(results[f"pgd_{loop}_grad_step_s"] for loop in loops)
    main_loop = default_loop if default_loop in loops else loops[0]
    results["loop"] = main_loop
    results["pgd_loop_overhead"] = results[f"pgd_{main_loop}_overhead"]
    results["cw_loop_overhead"] = results[f"cw_{main_loop}_overhead"]
    results["apgd_loop_overhead"] = results[f"apgd_{main_loop}_overhead"]

    print(f"hbjax timings done at {time.perf_counter() - started:.0f} s", flush=True)
    if not args.skip_reference:
        import foolbox as fb
        import torch
        import torchattacks

        net = hbjax.models.to_torch(model)
        xt, yt = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y_np).long()
        with torch.no_grad():
            diff = np.abs(net(xt).numpy() - np.asarray(fn(x))).max()
        print(f"torch twin: max logit difference {diff:.2e}; torch threads {torch.get_num_threads()}")

        def run_torch_pgd():
            torchattacks.PGD(net, eps=eps, alpha=alpha, steps=args.pgd_steps, random_start=True)(xt, yt)

        fmodel = fb.PyTorchModel(net, bounds=(0, 1))
        cw = fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=args.cw_binary, steps=args.cw_steps, stepsize=1e-2,
            initial_const=1e-2, abort_early=False,
        )  # fmt: skip

        def run_foolbox_cw():
            cw.run(fmodel, xt, fb.criteria.Misclassification(yt))

        yt_pred = torch.from_numpy(np.asarray(y_pred)).long()

        def run_torch_apgd():
            torchattacks.APGD(net, eps=args.apgd_eps, steps=args.apgd_steps, loss="ce", seed=0)(xt, yt_pred)

        def run_torch_square():
            torchattacks.Square(net, eps=args.apgd_eps, n_queries=args.square_queries, seed=0)(xt, yt_pred)

        run_torch_apgd()
        ta = best_of({"torch": run_torch_apgd, "ours": apgd_runner(main_loop)}, args.repeats)
        results["torchattacks_apgd_s"] = ta["torch"]
        results["apgd_speedup_vs_torchattacks"] = ta["torch"] / ta["ours"]
        print(f"torchattacks apgd: {ta['torch']:.3f} s, ours {ta['ours']:.3f} s", flush=True)
        run_torch_square()
        ts = best_of({"torch": run_torch_square, "ours": square_run}, args.repeats)
        results["torchattacks_square_s"] = ts["torch"]
        results["square_speedup_vs_torchattacks"] = ts["torch"] / ts["ours"]
        print(f"torchattacks square: {ts['torch']:.3f} s, ours {ts['ours']:.3f} s", flush=True)
        run_torch_pgd()
        tp = best_of({"torch": run_torch_pgd, "ours": pgd_runner(main_loop)}, args.repeats)
        results["torchattacks_pgd_s"] = tp["torch"]
        results["pgd_speedup_vs_torchattacks"] = tp["torch"] / tp["ours"]
        print(f"torchattacks pgd: {tp['torch']:.3f} s, ours {tp['ours']:.3f} s", flush=True)
        ours_cw = cw_runner(main_loop, args.cw_binary, args.cw_steps)
        tc = best_of({"fb": run_foolbox_cw, "ours": ours_cw}, args.cw_repeats)
        results["foolbox_cw_s"] = tc["fb"]
        results["cw_speedup_vs_foolbox"] = tc["fb"] / tc["ours"]
        print(f"foolbox cw: {tc['fb']:.2f} s, ours {tc['ours']:.2f} s", flush=True)

    results["bars"] = {
        f"{name}_loop_overhead": bool(results[f"{name}_loop_overhead"] <= OVERHEAD_BAR) for name in ("pgd", "apgd", "cw")
    }  # fmt: skip
    for name, steps in (("pgd", args.pgd_steps), ("apgd", args.apgd_steps + 1), ("cw", cw_steps)):
        value = results[f"{name}_loop_overhead"]
        verdict = "meets" if value <= OVERHEAD_BAR else "MISSES"
        print(f"bar: {name} loop overhead ({main_loop}, {steps} gradient steps) {value:.3f} {verdict} <= {OVERHEAD_BAR}")
    for name in ("apgd", "square"):
        if f"torchattacks_{name}_s" in results:
            ours = results[f"torchattacks_{name}_s"] / results[f"{name}_speedup_vs_torchattacks"]
            print(f"{name} vs torchattacks: hbjax {ours:.3f} s, torchattacks {results[f'torchattacks_{name}_s']:.3f} s "
                  f"(torchattacks / hbjax = {results[f'{name}_speedup_vs_torchattacks']:.2f})")  # fmt: skip
    results.update(
        device=str(jax.devices()[0]), batch=args.batch, width=args.width, unroll=args.unroll,
        load_average=list(os.getloadavg()), duration_s=time.perf_counter() - started,
    )  # fmt: skip
    print(f"duration {results['duration_s']:.0f} s, load average {os.getloadavg()}")
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items()}))


if __name__ == "__main__":
    main()
