#!/usr/bin/env python
"""Success rates of the adaptive attacks against Heat and Blur on CIFAR-10 test images.

Takes the first ``--num`` test images (interleaved over the classes) that the model classifies
correctly, then reports, as fractions of them:

- ``defended_accuracy``: the defended classifier is still right on the benign images;
- ``pgd_undefended``: PGD-Linf (eps 8/255, 20 steps of 2/255) fools the undefended model;
- ``pgd_transfer``: the same adversarial images fool the defended classifier (non-adaptive);
- ``bpda_eot``: PGD through the defense with BPDA and EOT (``hbjax.attacks.bpda_eot``);
- ``adaptive_heatmap``: the paper's Algorithm 2 with PGD-Linf as the base attack;
- ``adaptive_heatmap_cw``: Algorithm 2 with CW-L2 (untargeted; 3 x 50 steps, 5 rounds by default)
  as the base attack, no eps-ball; its median L2 over the successes.

A success counts when the defended classifier (sigma drawn from U[0.8, 1.2] per image) is wrong on
the attack's result, by the attack's own final draw; ``*_all_draws`` re-checks with ``--draws``
other draws and counts the images wrong on every one. ``*_where_defense_right`` restricts a rate to
the images the defended classifier gets right when benign (so that the defense's own errors on
clean images do not count as the attack's successes). The last line is a JSON object.

    python scripts/adaptive_attacks.py                          # the shipped vgg19_cifar, 100 images
    python scripts/adaptive_attacks.py --model path.safetensors --num 32 --eot 4
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vgg19_cifar", help="shipped model name or checkpoint")
    parser.add_argument("--data", default=os.environ.get("HBJAX_DATA", "../shared/data") + "/cifar10")
    parser.add_argument("--num", type=int, default=100)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--eps", type=float, default=8 / 255)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eot", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=10, help="rounds of Algorithm 2")
    parser.add_argument("--draws", type=int, default=5, help="sigma draws per final verdict")
    parser.add_argument("--sigma", type=float, nargs=2, default=(0.8, 1.2))
    parser.add_argument("--skip-cw", action="store_true")
    parser.add_argument("--cw-binary", type=int, default=3, help="CW base attack: binary steps")
    parser.add_argument("--cw-steps", type=int, default=50, help="CW base attack: Adam steps")
    parser.add_argument("--cw-iterations", type=int, default=5, help="rounds of Algorithm 2 with CW")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    import hbjax
    import hbjax.data
    import hbjax.defense
    from hbjax import attacks, xla

    model = hbjax.models.load(args.model)
    folder = hbjax.data.ImageFolder(args.data, "test", limit_per_class=100)
    images, labels = folder.load_uint8()
    order = np.argsort(np.arange(len(labels)) % 100, kind="stable")
    images, labels = images[order].astype(np.float32) / 255.0, labels[order]
    apply = xla.jit(model.apply)
    pred = np.concatenate([
        np.asarray(jnp.argmax(apply(model.params, images[i : i + 500]), -1))
        for i in range(0, len(images), 500)
    ])  # fmt: skip
    clean_accuracy = float(np.mean(pred == labels))
    keep = np.flatnonzero(pred == labels)[: args.num]
    x_all, y_all = images[keep], labels[keep].astype(np.int32)

    defense = {"sigma": tuple(args.sigma)}
    defended = xla.jit(hbjax.defense.defended(model, **defense))
    fn = attacks.model_logits(model)
    pgd_kw = dict(eps=args.eps, norm="linf", steps=args.steps, step_size=2 / 255)

    def fooled_draws(x_adv, y, base_key):
        out = []
        for d in range(args.draws):
            logits = defended(model.params, x_adv, jax.random.fold_in(base_key, d))
            out.append(np.asarray(jnp.argmax(logits, -1)) != y)
        return np.stack(out)  # (draws, B)

    rows: dict[str, list] = {}

    def add(name, value):
        rows.setdefault(name, []).append(np.asarray(value))

    def add_adaptive(name, r, y, check, distance):
        """An adaptive attack's rows: its own verdict, the verdict on every other draw, and its
        distance (``distance`` of the result's fields; NaN where the attack failed for l2)."""
        add(name, r.success)
        add(f"{name}_all_draws", fooled_draws(r.x_adv, y, check).all(0))
        value = np.asarray(getattr(r, distance))
        if distance == "l2":
            value = np.where(np.asarray(r.success), value, np.nan)
        add(f"{name}_{distance}", value)

    times: dict[str, float] = {}

    def timed(name, f):
        start = time.perf_counter()
        out = f()
        jax.block_until_ready(out)
        times[name] = times.get(name, 0.0) + time.perf_counter() - start
        return out

    key = jax.random.key(args.seed)
    for b, start in enumerate(range(0, len(y_all), args.batch)):
        x, y = jnp.asarray(x_all[start : start + args.batch]), y_all[start : start + args.batch]
        kb = jax.random.fold_in(key, b)
        check = jax.random.fold_in(kb, 99)
        add("defended_accuracy", ~fooled_draws(x, y, check)[0])
        r = timed("pgd", lambda: attacks.pgd(fn, x, y, kb, **pgd_kw))
        add("pgd_undefended", r.success)
        f = fooled_draws(r.x_adv, y, check)
        add("pgd_transfer", f[0])
        add("pgd_transfer_all_draws", f.all(0))
        r = timed("bpda_eot", lambda: attacks.bpda_eot(model, x, y, kb, defense=defense, eot_samples=args.eot, **pgd_kw))
        add_adaptive("bpda_eot", r, y, check, "linf")
        r = timed("adaptive_heatmap", lambda: attacks.adaptive_heatmap(
            model, x, y, kb, defense=defense, attack="pgd", attack_params=pgd_kw,
            iterations=args.iterations,
        ))  # fmt: skip
        add_adaptive("adaptive_heatmap", r, y, check, "linf")
        if not args.skip_cw:
            cw_kw = dict(binary_search_steps=args.cw_binary, steps=args.cw_steps, initial_const=1e-2)
            r = timed("adaptive_heatmap_cw", lambda: attacks.adaptive_heatmap(
                model, x, y, kb, defense=defense, attack="carlini_wagner_l2", attack_params=cw_kw,
                iterations=args.cw_iterations,
            ))  # fmt: skip
            add_adaptive("adaptive_heatmap_cw", r, y, check, "l2")
        print(f"batch {b}: {len(y)} images, times {times}", flush=True)

    summary = {"model": args.model, "num_images": int(len(y_all)), "clean_accuracy_test": clean_accuracy}
    kept = np.concatenate(rows["defended_accuracy"]).astype(bool)
    for name, parts in rows.items():
        v = np.concatenate(parts).astype(np.float64)
        if name.endswith(("_linf", "_l2")):
            summary[f"median_{name}"] = float(np.nanmedian(v)) if np.any(np.isfinite(v)) else None
        else:
            summary[name] = float(np.mean(v))
            if name != "defended_accuracy" and name != "pgd_undefended":
                # among the images the defense classifies correctly when benign: what the attack
                # achieves beyond the defense's own errors
                summary[f"{name}_where_defense_right"] = float(np.mean(v[kept])) if kept.any() else None
    summary.update(
        eps=args.eps, steps=args.steps, eot_samples=args.eot, iterations=args.iterations,
        sigma=list(args.sigma), draws=args.draws, seconds={k: round(v, 1) for k, v in times.items()},
    )  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
