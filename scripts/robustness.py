#!/usr/bin/env python
"""Robust accuracy of the undefended model and of Heat and Blur's defended classifier against eps.

Takes the first ``--num`` CIFAR-10 test images (interleaved over the classes; another folder with
``--data``, ``--split``, ``--preprocess``, and ``--shuffle-seed`` for a seeded order) that the model
classifies correctly and reports, for each threat model (Linf eps in ``--eps-linf`` / 255, L2 eps
in ``--eps-l2``; an empty list skips that norm) and attack, the robust accuracy: the fraction of
those images the attack did not fool. Attacks, each at every eps of both norms:

- undefended model: PGD (``--steps`` steps of 2.5 eps / steps, random start), APGD-CE
  (``--steps``), Square (``--queries``);
- defended classifier (sigma ~ U[0.8, 1.2] per image and per query): ``pgd_transfer`` (the
  undefended model's PGD images, a non-adaptive attack), BPDA+EOT (PGD through the defense,
  ``--eot`` draws a step), APGD-EOT (APGD-CE on :func:`hbjax.attacks.defended_logits`, BPDA for the
  mask, ``--eot`` draws a step), APGD-DLR-EOT (the same with the DLR loss, which does not flatten as
  cross-entropy does on a model trained with label smoothing) and Square (every query a fresh draw);
- a convergence table at the first Linf eps on the defended classifier: APGD-EOT with more steps
  and more EOT samples;
- with ``--autoattack-full``: AutoAttack on the defended classifier at its standard budgets
  (Croce and Hein 2020): ``rand`` (APGD-CE and APGD-DLR, 100 steps, EOT over 20 draws) and
  ``standard`` (APGD-CE, APGD-T, 100 steps, Square 5,000 queries), at ``--autoattack-eps-linf`` and
  ``--autoattack-eps-l2`` (budgets adjustable with ``--autoattack-steps/-eot/-queries``).

A defended verdict is one fresh draw of sigma. The images go through every attack in batches of at
most ``--batch`` (equal batches; the last is padded with repeated images, so every batch compiles
once). Each cell (attack, norm, eps, budget) draws its keys from the seed and its own name, so a
cell's result does not depend on which other cells run or in what order. Cells run in priority
order (the first eps of each norm first) and the JSON (``--out``) is rewritten atomically after
every cell, so an interrupted run keeps what finished; ``--resume`` continues from it (same
settings, same images) and runs only the missing cells, giving the result an uninterrupted run
would have. ``--plot`` redraws the figure and ``--markdown`` prints the tables, from the JSON only.

    nice -n 10 python scripts/robustness.py --num 64
    python scripts/robustness.py --num 500 --batch 256 --autoattack-full --resume   # on a GPU
    python scripts/robustness.py --plot
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import zlib
from typing import Callable, Sequence

import numpy as np

OUT = "docs/results/robustness.json"
# what a resumed run must share with the file it continues
SETTINGS = ("model", "num_images", "sigma", "steps", "eot", "queries", "seed", "batch", "images_sha256")
# the attacks of the curves, as --attacks names them (undefended:pgd includes pgd_transfer)
ATTACKS = ("undefended:pgd", "undefended:apgd_ce", "undefended:square", "defended:bpda_eot", "defended:apgd_eot",
           "defended:apgd_dlr_eot", "defended:square")  # fmt: skip
# what names a cell's record (and, without "group", seeds its keys)
IDENTITY = ("model", "attack", "norm", "eps", "group", "steps", "eot", "queries")


def atomic_json(path: str, obj) -> None:
    """Writes obj as JSON through a temporary file in the same folder and ``os.replace``."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def eps_label(norm: str, eps: float) -> str:
    return f"{round(eps * 255, 4):g}/255" if norm == "linf" else f"{eps:g}"


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms = [n for n in ("linf", "l2") if any(r["norm"] == n for r in results["runs"])] or ["linf"]
    fig, axes = plt.subplots(1, len(norms), figsize=(5 * len(norms), 4), squeeze=False)
    for ax, norm in zip(axes[0], norms):  # a panel per norm that has cells
        runs = [r for r in results["runs"] if r["norm"] == norm and r.get("group") == "curve"]
        scale = 255 if norm == "linf" else 1
        for model, style in (("undefended", "--"), ("defended", "-")):
            for attack in sorted({r["attack"] for r in runs if r["model"] == model}):
                pts = sorted((r["eps"], r["robust_accuracy"]) for r in runs if r["model"] == model and r["attack"] == attack)
                e, a = zip(*pts)
                ax.plot([v * scale for v in e], a, style, marker="o", label=f"{model}: {attack}")
        auto = [r for r in results["runs"] if r["norm"] == norm and r.get("group") == "autoattack"]
        for attack in sorted({r["attack"] for r in auto}):
            pts = sorted((r["eps"], r["robust_accuracy"]) for r in auto if r["attack"] == attack)
            e, a = zip(*pts)
            ax.plot([v * scale for v in e], a, "*", markersize=11, label=f"defended: {attack}")
        ax.set_xlabel("eps (/255)" if norm == "linf" else "eps (L2)")
        ax.set_ylabel("robust accuracy")
        ax.set_title(f"{norm.upper()}, {results['num_images']} {results.get('images', 'CIFAR-10 test images')}")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def worst_case(curve: list[dict], norm: str, eps: float, num_images: int) -> str:
    """Robust accuracy of the defended classifier when an image counts as fooled if any defended
    attack at this radius fooled it (from the runs' ``robust_images``), "-" if none recorded them."""
    runs = [r for r in curve if r["model"] == "defended" and r["norm"] == norm and r["eps"] == eps]
    if not runs or any("robust_images" not in r for r in runs):
        return "-"
    robust = set.intersection(*(set(r["robust_images"]) for r in runs))
    return f"{len(robust) / num_images:.3f}"


def markdown(results: dict) -> str:
    """The curve table (robust accuracy by eps and attack), the convergence table and, when run,
    the AutoAttack table with its sanity checks."""
    curve = [r for r in results["runs"] if r["group"] == "curve"]
    cols = sorted({(r["model"], r["attack"]) for r in curve})
    lines = ["| norm | eps | " + " | ".join(f"{m}: {a}" for m, a in cols) + " | best attack (defended) | all defended attacks |",
             "|---" * (len(cols) + 4) + "|"]  # fmt: skip
    for norm, eps in sorted({(r["norm"], r["eps"]) for r in curve}, key=lambda t: (t[0] != "linf", t[1])):
        row = {(r["model"], r["attack"]): r["robust_accuracy"] for r in curve if r["norm"] == norm and r["eps"] == eps}
        cells = [f"{row[c]:.3f}" if c in row else "-" for c in cols]
        defended = {a: v for (m, a), v in row.items() if m == "defended"}
        low = min(defended.values()) if defended else None
        best = " = ".join(sorted(a for a, v in defended.items() if v == low)) if defended else "-"
        lines.append(f"| {norm} | {eps_label(norm, eps)} | " + " | ".join(cells) + f" | {best} | {worst_case(curve, norm, eps, results['num_images'])} |")
    conv = [r for r in results["runs"] if r["group"] == "convergence"]
    if conv:
        lines += ["", "| attack | eps | steps | EOT draws | robust accuracy (defended) |", "|---|---|---|---|---|"]
        for r in sorted(conv, key=lambda r: (r["steps"], r["eot"])):
            lines.append(f"| {r['attack']} | {eps_label(r['norm'], r['eps'])} | {r['steps']} | {r['eot']} | {r['robust_accuracy']:.3f} |")
    auto = [r for r in results["runs"] if r["group"] == "autoattack"]
    if auto:
        lines += ["", "| AutoAttack (defended) | norm | eps | steps | EOT draws | Square queries | robust after each attack | robust accuracy |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        notes = []
        for r in sorted(auto, key=lambda r: (r["norm"] != "linf", r["eps"], r["attack"])):
            after = ", ".join(f"{a} {v:.3f}" for a, v in zip(r["components"], r["robust_after"]))
            dash = lambda v: "-" if v is None else str(v)  # noqa: E731
            lines.append(f"| {r['attack']} | {r['norm']} | {eps_label(r['norm'], r['eps'])} | {r['steps']} | "
                         f"{dash(r['eot'])} | {dash(r['queries'])} | {after} | {r['robust_accuracy']:.3f} |")  # fmt: skip
            notes += [f"- {r['attack']}, {r['norm']} {eps_label(r['norm'], r['eps'])}: {w}" for w in r["warnings"]]
        lines += ["", "Sanity checks:", *(notes or ["- none raised"])]
    return "\n".join(lines)


def batch_indices(n: int, batch: int) -> list[np.ndarray]:
    """Image indices of ceil(n / batch) equal batches; the last is padded with the first images,
    so every batch has one shape (one compilation). The first n of the concatenation are 0..n-1."""
    count = -(-n // batch)
    size = -(-n // count)
    order = np.arange(count * size) % n
    return [order[i * size : (i + 1) * size] for i in range(count)]


def batched(fn: Callable, x: np.ndarray, y: np.ndarray, key, batch: int) -> list[np.ndarray]:
    """``fn(x_b, y_b, key_b)`` returns a tuple of per-image arrays; runs it batch by batch (key_b
    = key folded with the batch index) and returns each array over the n images, padding dropped."""
    import jax

    parts = []
    for b, idx in enumerate(batch_indices(len(y), batch)):
        parts.append([np.asarray(a) for a in fn(x[idx], y[idx], jax.random.fold_in(key, b))])
    return [np.concatenate(p)[: len(y)] for p in zip(*parts)]


def identity(model: str, attack: str, norm: str, eps: float, group: str = "curve", *,
             steps: int | None = None, eot: int | None = None, queries: int | None = None) -> dict:  # fmt: skip
    return dict(model=model, attack=attack, norm=norm, eps=eps, group=group, steps=steps, eot=eot, queries=queries)


def cell_key(key, ident: dict):
    """The cell's key: the seed's key folded with a checksum of the cell's name (not its group, so
    the same attack and budget in two tables is one computation with one result)."""
    import jax

    name = json.dumps({k: ident[k] for k in IDENTITY if k != "group"}, sort_keys=True)
    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def device_name() -> str:
    """Where the cells run, for each record (a JSON can hold cells from several machines):
    ``"cpu: N cores"`` or, e.g., ``"gpu: NVIDIA H200"``."""
    import jax

    d = jax.devices()[0]
    return f"cpu: {os.cpu_count()} cores" if d.platform == "cpu" else f"{d.platform}: {d.device_kind}"


def images_sha256(x: np.ndarray, y: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes() + np.ascontiguousarray(y).tobytes()).hexdigest()


def start_or_resume(path: str, settings: dict, resume: bool) -> dict:
    """A new result record, or (``resume`` and ``path`` exists) the one in ``path`` after checking
    that it was made with the same settings and images; exits with a message naming what differs."""
    if not (resume and os.path.exists(path)):
        return dict(settings, note="robust accuracy over correctly classified test images; defended verdict: one sigma draw",
                    runs=[])  # fmt: skip
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"--resume: cannot read {path} ({e}); move it away to start afresh")
    missing = [k for k in SETTINGS if k not in results]
    if missing:
        sys.exit(f"--resume: {path} has no {', '.join(missing)} (written by an older version); "
                 "move it away to start afresh")  # fmt: skip
    differ = [f"{k}={results[k]!r} in the file, {settings[k]!r} now" for k in SETTINGS if results[k] != settings[k]]
    if differ:
        sys.exit(f"--resume: {path} was made with other settings: " + "; ".join(differ))
    results.pop("complete", None)
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vgg19_cifar")
    parser.add_argument("--data", default=os.environ.get("HBJAX_DATA", "../shared/data") + "/cifar10")
    parser.add_argument("--split", default="test", help="the folder's split (ImageNet sample: val)")
    parser.add_argument("--preprocess", choices=("cifar", "imagenet"), default="cifar")
    parser.add_argument("--shuffle-seed", type=int, default=None,
                        help="take the images in this seeded random order (hbjax-evaluate's folder order) "
                             "instead of class by class; for folders of one image a class")  # fmt: skip
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256,
                        help="images an attack call (equal batches of at most this size)")  # fmt: skip
    parser.add_argument("--eps-linf", type=float, nargs="*", default=[8, 1, 2, 4, 16])
    parser.add_argument("--eps-l2", type=float, nargs="*", default=[0.5, 0.25, 1.0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eot", type=int, default=4)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS),
                        help="the curves' attacks to run (default: all)")  # fmt: skip
    parser.add_argument("--convergence-steps", type=int, nargs="*", default=[10, 40])
    parser.add_argument("--convergence-eot", type=int, nargs="*", default=[1, 12])
    parser.add_argument("--autoattack-full", action="store_true",
                        help="also run AutoAttack (rand and standard) on the defended classifier")  # fmt: skip
    parser.add_argument("--autoattack-versions", nargs="+", choices=("rand", "standard"), default=["rand", "standard"])
    parser.add_argument("--autoattack-eps-linf", type=float, nargs="*", default=[8])
    parser.add_argument("--autoattack-eps-l2", type=float, nargs="*", default=[0.5])
    parser.add_argument("--autoattack-steps", type=int, default=100)
    parser.add_argument("--autoattack-eot", type=int, default=20)
    parser.add_argument("--autoattack-queries", type=int, default=5000)
    parser.add_argument("--sigma", type=float, nargs=2, default=(0.8, 1.2))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--figure", default=None,
                        help="where the figure goes (default: --out with .png, so a run elsewhere leaves docs/ alone)")  # fmt: skip
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out (same settings): run only the cells it lacks")  # fmt: skip
    parser.add_argument("--plot", action="store_true", help="only redraw the figure from --out")
    parser.add_argument("--markdown", action="store_true", help="only print the tables of --out")
    args = parser.parse_args(argv)
    if args.figure is None:
        args.figure = os.path.splitext(args.out)[0] + ".png"
    counts = ["num", "batch", "steps", "eot", "queries", "autoattack_steps", "autoattack_eot", "autoattack_queries"]
    for name in counts:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("convergence_steps", "convergence_eot"):
        if any(v < 1 for v in getattr(args, name)):
            parser.error(f"--{name.replace('_', '-')} values must be at least 1, got {getattr(args, name)}")
    for name in ("eps_linf", "eps_l2", "autoattack_eps_linf", "autoattack_eps_l2"):
        if any(not np.isfinite(v) or v < 0 for v in getattr(args, name)):
            parser.error(f"--{name.replace('_', '-')} values must be finite and >= 0, got {getattr(args, name)}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.plot or args.markdown:
        with open(args.out) as f:
            results = json.load(f)
        if args.plot:
            plot(results, args.figure)
        if args.markdown:
            print(markdown(results))
        return

    import jax
    import jax.numpy as jnp

    import hbjax
    from hbjax import attacks

    model = hbjax.models.load(args.model)
    # in full float32, so that the images (and images_sha256) do not depend on a backend's default
    # (GPUs multiply in TF32 by default) and a run on one machine resumes a run from another
    with jax.default_matmul_precision("highest"):
        x, y = hbjax.data.correctly_classified(
            model, args.data, args.num, split=args.split, preprocess=args.preprocess,
            shuffle_seed=args.shuffle_seed, batch_size=min(1000, 4 * args.batch),
        )
    f = attacks.model_logits(model)
    defense = {"sigma": tuple(args.sigma)}
    g = attacks.defended_logits(model, defense=defense)
    key = jax.random.key(args.seed)
    settings = {
        "model": args.model, "num_images": args.num, "sigma": list(args.sigma), "steps": args.steps,
        "eot": args.eot, "queries": args.queries, "seed": args.seed, "batch": args.batch,
        "images_sha256": images_sha256(x, y),
    }  # fmt: skip
    results = start_or_resume(args.out, settings, args.resume)
    done = {tuple(r.get(k) for k in IDENTITY) for r in results["runs"]}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)

    def verdict(x_adv, k):
        return np.asarray(jnp.argmax(g(x_adv, k), -1))

    (pred,) = batched(lambda xb, yb, k: (verdict(xb, k),), x, y, jax.random.fold_in(key, 999), args.batch)
    results["defended_clean_accuracy"] = float(np.mean(pred == y))
    if args.preprocess != "cifar" or args.shuffle_seed is not None:  # the CIFAR default is not recorded
        order = "class by class" if args.shuffle_seed is None else f"seeded order {args.shuffle_seed}"
        results["images"] = f"images of {os.path.basename(os.path.normpath(args.data))}/{args.split} ({order})"

    device = device_name()

    def record(ident: dict, success: np.ndarray, seconds: float, **extra) -> None:
        r = dict(ident, robust_accuracy=float(1 - np.mean(success)), seconds=round(seconds, 1),
                 robust_images=np.flatnonzero(~success).tolist(), device=device, **extra)  # fmt: skip
        results["runs"].append(r)
        done.add(tuple(r[k] for k in IDENTITY))
        atomic_json(args.out, results)
        print(json.dumps(r), flush=True)

    def cell(idents: list[dict], fn: Callable) -> None:
        """Runs fn over the batches unless every record in idents is already there; fn(x_b, y_b,
        key_b) returns one success array per ident."""
        if all(tuple(i[k] for k in IDENTITY) in done for i in idents):
            return
        t = time.time()
        outs = batched(fn, x, y, cell_key(key, idents[0]), args.batch)
        seconds = time.time() - t
        for i, (ident, success) in enumerate(zip(idents, outs)):
            record(ident, success, seconds if i == 0 else 0.0)

    def pgd_and_transfer(norm, eps):
        def fn(xb, yb, k):
            r = attacks.pgd(f, xb, yb, k, steps=args.steps, eps=eps, norm=norm)
            return r.success, verdict(r.x_adv, jax.random.fold_in(k, 1)) != yb

        cell([identity("undefended", "pgd", norm, eps, steps=args.steps),
              identity("defended", "pgd_transfer", norm, eps, steps=args.steps)], fn)  # fmt: skip

    def apgd_eot(norm, eps, group="curve", steps=args.steps, eot=args.eot, loss="ce"):
        name = "apgd_eot" if loss == "ce" else f"apgd_{loss}_eot"
        cell([identity("defended", name, norm, eps, group, steps=steps, eot=eot)],
             lambda xb, yb, k: (attacks.apgd(g, xb, yb, k, eps=eps, norm=norm, steps=steps, eot=eot, loss=loss,
                                             unroll=2).success,))  # fmt: skip

    def autoattack(norm, eps, version):
        steps, eot, queries = args.autoattack_steps, args.autoattack_eot, args.autoattack_queries
        ident = identity("defended", f"autoattack_{version}", norm, eps, "autoattack", steps=steps,
                         eot=eot if version == "rand" else None, queries=queries if version == "standard" else None)  # fmt: skip
        if tuple(ident[k] for k in IDENTITY) in done:
            return
        warnings: list[str] = []
        names: list[tuple] = []

        def fn(xb, yb, k):
            r = attacks.autoattack(g, xb, yb, k, eps=eps, norm=norm, version=version, steps=steps,
                                   eot=eot, square_queries=queries, unroll=2)  # fmt: skip
            names.append(r.attack_names)
            warnings.extend(w for w in r.warnings if not w.startswith("Square fooled") and w not in warnings)
            return r.success, r.first_attack, np.asarray(r.attack_success).T

        t = time.time()
        success, first, per_attack = batched(fn, x, y, cell_key(key, ident), args.batch)
        seconds = time.time() - t
        components = list(names[0])
        misclassified = success & (first < 0)  # wrong before any attack (AutoAttack's first = -1)
        robust_after = [float(1 - np.mean(misclassified | (success & (first >= 0) & (first <= a))))
                        for a in range(len(components))]  # fmt: skip
        if "square" in components:
            gained = int(per_attack[:, components.index("square")].sum())
            if gained:
                s = components.index("square")
                warnings.append(
                    f"Square fooled {gained} of {len(y)} examples that the white-box attacks did not (robust "
                    f"accuracy {robust_after[s - 1]:.4f} -> {robust_after[s]:.4f}): a sign of gradient masking"
                )  # fmt: skip
        first_counts = {c: int(np.sum(success & (first == a))) for a, c in enumerate(components)}
        record(ident, success, seconds, components=components, robust_after=robust_after,
               first_attack_counts=first_counts, warnings=warnings)  # fmt: skip

    linf, l2 = [("linf", e / 255) for e in args.eps_linf], [("l2", e) for e in args.eps_l2]
    threat = linf[:1] + l2[:1] + linf[1:] + l2[1:]  # priority: the first eps of each norm, then the rest
    auto_eps = {("linf", e / 255) for e in args.autoattack_eps_linf} | {("l2", e) for e in args.autoattack_eps_l2}
    first_linf = linf[0] if linf else None
    try:
        for norm, eps in threat:
            if "undefended:pgd" in args.attacks:
                pgd_and_transfer(norm, eps)
            if "undefended:apgd_ce" in args.attacks:
                cell([identity("undefended", "apgd_ce", norm, eps, steps=args.steps)],
                     lambda xb, yb, k: (attacks.apgd(f, xb, yb, k, steps=args.steps, eps=eps, norm=norm).success,))  # fmt: skip
            if "undefended:square" in args.attacks:
                cell([identity("undefended", "square", norm, eps, queries=args.queries)],
                     lambda xb, yb, k: (attacks.square(f, xb, yb, k, queries=args.queries, eps=eps, norm=norm).success,))  # fmt: skip
            if "defended:bpda_eot" in args.attacks:
                cell([identity("defended", "bpda_eot", norm, eps, steps=args.steps, eot=args.eot)],
                     lambda xb, yb, k: (attacks.bpda_eot(model, xb, yb, k, defense=defense, steps=args.steps,
                                                         eot_samples=args.eot, eps=eps, norm=norm).success,))  # fmt: skip
            if "defended:apgd_eot" in args.attacks:
                apgd_eot(norm, eps)
            if "defended:apgd_dlr_eot" in args.attacks:
                apgd_eot(norm, eps, loss="dlr")
            if "defended:square" in args.attacks:
                cell([identity("defended", "square", norm, eps, queries=args.queries)],
                     lambda xb, yb, k: (attacks.square(g, xb, yb, k, queries=args.queries, unroll=5, eps=eps,
                                                       norm=norm).success,))  # fmt: skip
            if (norm, eps) == first_linf:
                for steps in args.convergence_steps:
                    apgd_eot(norm, eps, "convergence", steps=steps)
                for eot in args.convergence_eot:
                    apgd_eot(norm, eps, "convergence", eot=eot)
            if args.autoattack_full and (norm, eps) in auto_eps:
                for version in args.autoattack_versions:
                    autoattack(norm, eps, version)
            plot(results, args.figure)
        if args.autoattack_full:  # radii not on the curve
            for norm, eps in sorted(auto_eps - set(threat)):
                for version in args.autoattack_versions:
                    autoattack(norm, eps, version)
    except KeyboardInterrupt:
        sys.stderr.write(f"interrupted: {len(results['runs'])} finished runs are in {args.out}; "
                         "run the same command with --resume to add the rest\n")  # fmt: skip
        raise SystemExit(130)
    results["complete"] = True
    atomic_json(args.out, results)
    plot(results, args.figure)


if __name__ == "__main__":
    main()
