#!/usr/bin/env python
"""Robust accuracy of the undefended model and of Heat and Blur's defended classifier against eps.

Takes the first ``--num`` CIFAR-10 test images (interleaved over the classes) that the model
classifies correctly and reports, for each threat model (Linf eps in ``--eps-linf`` / 255, L2 eps
in ``--eps-l2``) and attack, the robust accuracy: the fraction of those images the attack did not
fool. Attacks:

- undefended model: PGD (``--steps`` steps of 2.5 eps / steps, random start), APGD-CE
  (``--steps``), Square (``--queries``);
- defended classifier (sigma ~ U[0.8, 1.2] per image and per query): ``pgd_transfer`` (the
  undefended model's PGD images, a non-adaptive attack), BPDA+EOT (PGD through the defense,
  ``--eot`` draws a step), APGD-EOT (APGD-CE on :func:`hbjax.attacks.defended_logits`, BPDA for the
  mask, ``--eot`` draws a step) and Square (every query a fresh draw);
- a convergence table at Linf 8/255 on the defended classifier: APGD-EOT with more steps and more
  EOT samples.

A defended verdict is one fresh draw of sigma. Runs go in priority order (8/255 first) and the
JSON (``--out``, written atomically after every run) holds what finished, so a run cut short still
reports; ``--plot`` redraws the figure from the JSON only.

    nice -n 10 python scripts/robustness.py --num 64
    python scripts/robustness.py --plot
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

OUT = "docs/results/robustness.json"
FIGURE = "docs/results/robustness.png"


def atomic_json(path: str, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, norm in zip(axes, ("linf", "l2")):
        runs = [r for r in results["runs"] if r["norm"] == norm and r.get("group") == "curve"]
        for model, style in (("undefended", "--"), ("defended", "-")):
            for attack in sorted({r["attack"] for r in runs if r["model"] == model}):
                pts = sorted((r["eps"], r["robust_accuracy"]) for r in runs if r["model"] == model and r["attack"] == attack)
                if not pts:
                    continue
                e, a = zip(*pts)
                e = [v * 255 for v in e] if norm == "linf" else e
                ax.plot(e, a, style, marker="o", label=f"{model}: {attack}")
        ax.set_xlabel("eps (/255)" if norm == "linf" else "eps (L2)")
        ax.set_ylabel("robust accuracy")
        ax.set_title(f"{norm.upper()}, {results['num_images']} CIFAR-10 test images")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def markdown(results: dict) -> str:
    """The curve table (robust accuracy by eps and attack) and the convergence table."""
    curve = [r for r in results["runs"] if r["group"] == "curve"]
    cols = sorted({(r["model"], r["attack"]) for r in curve})
    lines = ["| norm | eps | " + " | ".join(f"{m}: {a}" for m, a in cols) + " | best attack (defended) |",
             "|---" * (len(cols) + 3) + "|"]  # fmt: skip
    for norm, eps in sorted({(r["norm"], r["eps"]) for r in curve}, key=lambda t: (t[0] != "linf", t[1])):
        row = {(r["model"], r["attack"]): r["robust_accuracy"] for r in curve if r["norm"] == norm and r["eps"] == eps}
        cells = [f"{row[c]:.3f}" if c in row else "-" for c in cols]
        defended = {a: v for (m, a), v in row.items() if m == "defended"}
        low = min(defended.values()) if defended else None
        best = " = ".join(sorted(a for a, v in defended.items() if v == low)) if defended else "-"
        label = f"{eps * 255:.0f}/255" if norm == "linf" else f"{eps:g}"
        lines.append(f"| {norm} | {label} | " + " | ".join(cells) + f" | {best} |")
    conv = [r for r in results["runs"] if r["group"] == "convergence"]
    if conv:
        lines += ["", "| attack | eps | steps | EOT draws | robust accuracy (defended) |", "|---|---|---|---|---|"]
        for r in sorted(conv, key=lambda r: (r["steps"], r["eot"])):
            lines.append(f"| {r['attack']} | {r['eps'] * 255:.0f}/255 | {r['steps']} | {r['eot']} | {r['robust_accuracy']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vgg19_cifar")
    parser.add_argument("--data", default=os.environ.get("HBJAX_DATA", "../shared/data") + "/cifar10")
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--eps-linf", type=float, nargs="+", default=[8, 1, 2, 4, 16])
    parser.add_argument("--eps-l2", type=float, nargs="+", default=[0.5, 0.25, 1.0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eot", type=int, default=4)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--convergence-steps", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--convergence-eot", type=int, nargs="+", default=[1, 12])
    parser.add_argument("--sigma", type=float, nargs=2, default=(0.8, 1.2))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--figure", default=FIGURE)
    parser.add_argument("--plot", action="store_true", help="only redraw the figure from --out")
    parser.add_argument("--markdown", action="store_true", help="only print the tables of --out")
    args = parser.parse_args()
    if args.plot or args.markdown:
        with open(args.out) as f:
            results = json.load(f)
        if args.plot:
            plot(results, args.figure)
        if args.markdown:
            print(markdown(results))
        return

    import jax

    import hbjax
    from hbjax import attacks
    from tests._attack_models import correctly_classified

    model = hbjax.models.load(args.model)
    x, y = correctly_classified(model, args.data, args.num)
    f = attacks.model_logits(model)
    defense = {"sigma": tuple(args.sigma)}
    g = attacks.defended_logits(model, defense=defense)
    key = jax.random.key(args.seed)
    results = {
        "model": args.model, "num_images": args.num, "sigma": list(args.sigma), "steps": args.steps,
        "eot": args.eot, "queries": args.queries, "seed": args.seed,
        "note": "robust accuracy over correctly classified test images; defended verdict: one sigma draw",
        "runs": [],
    }  # fmt: skip
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    k_verdict = jax.random.fold_in(key, 999)
    defended_clean = float(np.mean(np.asarray(jax.numpy.argmax(g(x, k_verdict), -1)) == y))
    results["defended_clean_accuracy"] = defended_clean

    def record(model_name, attack, norm, eps, success, seconds, group="curve", **extra):
        r = dict(model=model_name, attack=attack, norm=norm, eps=eps, group=group,
                 robust_accuracy=float(1 - np.mean(np.asarray(success))), seconds=round(seconds, 1), **extra)  # fmt: skip
        results["runs"].append(r)
        atomic_json(args.out, results)
        print(json.dumps(r), flush=True)

    def timed(fn):
        t = time.time()
        out = fn()
        np.asarray(out.success)
        return out, time.time() - t

    def defended_success(x_adv, k):
        return np.asarray(jax.numpy.argmax(g(x_adv, k), -1)) != y

    threat = [("linf", e / 255) for e in args.eps_linf] + [("l2", e) for e in args.eps_l2]
    # priority: every attack at the first eps of each norm, then the rest
    for i, (norm, eps) in enumerate(threat):
        k = jax.random.fold_in(key, i)
        common = dict(eps=eps, norm=norm)
        r, s = timed(lambda: attacks.pgd(f, x, y, k, steps=args.steps, **common))
        record("undefended", "pgd", norm, eps, r.success, s)
        record("defended", "pgd_transfer", norm, eps, defended_success(r.x_adv, jax.random.fold_in(k, 1)), 0.0)
        r, s = timed(lambda: attacks.apgd(f, x, y, k, steps=args.steps, **common))
        record("undefended", "apgd_ce", norm, eps, r.success, s)
        r, s = timed(lambda: attacks.square(f, x, y, k, queries=args.queries, **common))
        record("undefended", "square", norm, eps, r.success, s)
        r, s = timed(lambda: attacks.bpda_eot(model, x, y, k, defense=defense, steps=args.steps,
                                              eot_samples=args.eot, **common))  # fmt: skip
        record("defended", "bpda_eot", norm, eps, r.success, s)
        r, s = timed(lambda: attacks.apgd(g, x, y, k, steps=args.steps, eot=args.eot, unroll=2, **common))
        record("defended", "apgd_eot", norm, eps, r.success, s)
        r, s = timed(lambda: attacks.square(g, x, y, k, queries=args.queries, unroll=5, **common))
        record("defended", "square", norm, eps, r.success, s)
        if i == 0 and norm == "linf":
            for steps in args.convergence_steps:
                r, s = timed(lambda: attacks.apgd(g, x, y, k, eps=eps, steps=steps, eot=args.eot, unroll=2))
                record("defended", "apgd_eot", norm, eps, r.success, s, group="convergence", steps=steps, eot=args.eot)
            for eot in args.convergence_eot:
                r, s = timed(lambda: attacks.apgd(g, x, y, k, eps=eps, steps=args.steps, eot=eot, unroll=2))
                record("defended", "apgd_eot", norm, eps, r.success, s, group="convergence", steps=args.steps, eot=eot)
        plot(results, args.figure)
    results["complete"] = True
    atomic_json(args.out, results)
    plot(results, args.figure)


if __name__ == "__main__":
    main()
