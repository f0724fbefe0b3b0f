"""``hbjax-report RUN_OR_MULTIRUN_DIR``: gathers evaluation runs into a table and draws the paper's
figures.

- ``table.md`` / ``table.csv``: one row per run (attack, sigma, coverage, accuracies, NDCG, distances);
- ``fig4_sigma.png`` (Figure 4): against sigma, the accuracy of the cleaned benign images (Control),
  of the cleaned adversarial images against the true label and against the adversarial label, and
  the mean Linf distance of the cleaned adversarial image from the benign one with the paper's
  line at 0.031; the L-BFGS sweep (the paper's) when there is one; ``fig4_sigma_<attack>.png``
  for every other swept attack (e.g. the PGD sweep);
- ``fig5_ndcg.png`` (Figure 5): mean NDCG@1..5 of Adv, Cleaned and Control, a panel per attack,
  top-1 accuracy in the legend;
- ``fig3_<run>.png`` (Figure 3): benign, adversarial, heatmap mask, blurred and cleaned images of a
  few examples with the predictions in the titles.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import zipfile
from typing import Any

import numpy as np

from hbjax.errors import HbjaxError
from hbjax.experiment.store import atomic_write_text, finished_batches, rows_to_csv

VIEWS = ("adv", "cleaned", "control")


class ReportError(HbjaxError):
    """A run or sweep directory that cannot be reported: missing, unreadable or unfinished."""


def resume_command(run_dir: str) -> str:
    """The command that resumes an unfinished run: its overrides (from Hydra's
    ``.hydra/overrides.yaml``) and its directory."""
    overrides: list[str] = []
    path = os.path.join(run_dir, ".hydra", "overrides.yaml")
    try:
        import yaml

        with open(path) as f:
            loaded = yaml.safe_load(f)
        overrides = [str(o) for o in loaded or [] if not str(o).startswith("hydra.run.dir=")]
    except (OSError, ValueError, ImportError, yaml.YAMLError):
        overrides = ["<the same overrides>"]
    return " ".join(["hbjax-evaluate", *overrides, f"hydra.run.dir={run_dir}"])


def unfinished_runs(root: str) -> list[str]:
    """Run directories under root that an hbjax-evaluate run started (``experiment.json``) but did
    not finish (no ``results.json``), sorted."""
    return sorted(
        d for d, _, files in os.walk(root) if "experiment.json" in files and "results.json" not in files
    )


def _unfinished_note(run_dir: str) -> str:
    return (f"{run_dir} is an unfinished run ({len(finished_batches(run_dir))} batches done); "
            f"resume it with: {resume_command(run_dir)}")  # fmt: skip


def find_runs(root: str) -> list[str]:
    """Run directories (holding results.json) under root, sorted. Unfinished runs are named on
    stderr (with the command that resumes each); with no finished run, a ReportError says why."""
    if not os.path.isdir(root):
        raise ReportError(f"{root}: no such directory")
    runs = []
    for dirpath, _, filenames in os.walk(root):
        if "results.json" in filenames:
            runs.append(dirpath)
    unfinished = unfinished_runs(root)
    if not runs:
        if unfinished:
            raise ReportError(_unfinished_note(unfinished[0]) + (
                f" (and {len(unfinished) - 1} more unfinished runs under {root})" if len(unfinished) > 1 else ""))
        raise ReportError(f"{root}: no results.json found (not an hbjax-evaluate run or sweep)")
    for run_dir in unfinished:
        print(f"hbjax-report: warning: left out of the report: {_unfinished_note(run_dir)}", file=sys.stderr)
    return sorted(runs)


def _sigma_label(sigma: Any) -> str:
    if isinstance(sigma, (list, tuple)):
        return f"U[{sigma[0]:g},{sigma[1]:g}]"
    return f"{float(sigma):g}"


def _sigma_value(sigma: Any) -> float:
    """A number to plot sigma at: the value, or the midpoint of a range."""
    if isinstance(sigma, (list, tuple)):
        return (float(sigma[0]) + float(sigma[1])) / 2
    return float(sigma)


def _attack_label(cfg: dict) -> str:
    attack = cfg["attack"]
    label = attack.get("label") or attack["name"]
    if attack.get("targeted") and "targeted" not in label:
        label += " (targeted)"
    return label


def _coverage_label(cov: Any) -> str:
    if isinstance(cov, (list, tuple)):
        return f"{cov[0]:g}/{cov[1]:g}"
    return f"{float(cov):g}"


def load_runs(root: str) -> list[dict]:
    runs = []
    for run_dir in find_runs(root):
        path = os.path.join(run_dir, "results.json")
        try:
            with open(path) as f:
                summary = json.load(f)
            cfg = summary["config"]
            _attack_label(cfg), cfg["defense"]["sigma"], cfg["metrics"]["coverage"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ReportError(
                f"{path}: cannot read it ({type(e).__name__}: {' '.join(str(e).split())}); "
                f"rewrite it from the run's parts with: {resume_command(run_dir)}"
            ) from None
        runs.append(
            {
                "dir": run_dir,
                "name": os.path.relpath(run_dir, root) if run_dir != root else os.path.basename(run_dir),
                "attack": _attack_label(cfg),
                "sigma": cfg["defense"]["sigma"],
                "coverage": cfg["metrics"]["coverage"],
                "summary": summary,
            }
        )
    return runs


def table_rows(runs: list[dict]) -> dict[str, list]:
    cols: dict[str, list] = {k: [] for k in (
        "run", "attack", "sigma", "coverage", "n_correct", "n_adv", "attack_success",
        "adv_top1", "cleaned_top1", "cleaned_top5", "control_top1", "control_top5", "control_all_top1",
        "adv_target", "cleaned_target", "adv_ndcg@1", "cleaned_ndcg@1", "control_ndcg@1",
        "cleaned_ndcg_full", "adv_l2_median", "adv_linf", "cleaned_linf", "cleaned_l2",
    )}  # fmt: skip
    for r in runs:
        s = r["summary"]
        vals = {
            "run": r["name"], "attack": r["attack"], "sigma": _sigma_label(r["sigma"]),
            "coverage": _coverage_label(r["coverage"]), "n_correct": s["n_correct"],
            "n_adv": s["n_attack_success"], "attack_success": s["attack_success_rate"],
            "adv_top1": s["adv"]["top1"], "cleaned_top1": s["cleaned"]["top1"],
            "cleaned_top5": s["cleaned"]["top5"], "control_top1": s["control"]["top1"],
            "control_top5": s["control"]["top5"],
            "control_all_top1": s.get("control_all", {}).get("top1", float("nan")),
            "adv_target": s["adv"]["target_rate"],
            "cleaned_target": s["cleaned"]["target_rate"], "adv_ndcg@1": s["adv"]["ndcg@1"],
            "cleaned_ndcg@1": s["cleaned"]["ndcg@1"], "control_ndcg@1": s["control"]["ndcg@1"],
            "cleaned_ndcg_full": s["cleaned"]["ndcg_full"],
            "adv_l2_median": s["adv"].get("l2_median", float("nan")), "adv_linf": s["adv"]["linf_mean"],
            "cleaned_linf": s["cleaned"]["linf_mean"], "cleaned_l2": s["cleaned"]["l2_mean"],
        }  # fmt: skip
        for k, v in vals.items():
            cols[k].append(v)
    return cols


def markdown_table(cols: dict[str, list]) -> str:
    names = list(cols)
    out = io.StringIO()
    out.write("| " + " | ".join(names) + " |\n")
    out.write("|" + "---|" * len(names) + "\n")
    for i in range(len(cols[names[0]])):
        cells = []
        for name in names:
            v = cols[name][i]
            cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        out.write("| " + " | ".join(cells) + " |\n")
    return out.getvalue()


def _save(fig, path: str) -> None:
    tmp = path + ".tmp.png"
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


LINF_BOUND = 0.031  # the paper's Figure 4 marks Linf(cleaned, benign) < 0.031 (8/255)


def swept_attacks(runs: list[dict]) -> list[str]:
    """Attacks run at two or more values of sigma, L-BFGS (the paper's Figure 4) first."""
    names = sorted({r["attack"] for r in runs if len({_sigma_label(x["sigma"]) for x in runs if x["attack"] == r["attack"]}) >= 2})
    return sorted(names, key=lambda a: (a != "lbfgs", a))


def figure4(runs: list[dict], path: str, attacks: list[str] | None = None) -> str | None:
    """Figure 4: accuracies and cleaned Linf distance against sigma, one panel per attack run at
    two or more values of sigma (only ``attacks`` when given; None when there is none), with the
    paper's line Linf(cleaned, benign) = 0.031."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    for attack in sorted({r["attack"] for r in runs}):
        if attacks is not None and attack not in attacks:
            continue
        rs = [r for r in runs if r["attack"] == attack]
        # a sweep over fixed sigmas is drawn without the runs that draw sigma from a range (the
        # range's midpoint would fall on a fixed value); one point per sigma, and with several
        # coverages the accuracies are the same, so the first run of a sigma is kept
        fixed = [r for r in rs if not isinstance(r["sigma"], (list, tuple))]
        by_sigma: dict[float, dict] = {}
        for r in fixed or rs:
            by_sigma.setdefault(_sigma_value(r["sigma"]), r)
        if len(by_sigma) >= 2:
            curves[attack] = by_sigma
    if not curves:
        return None  # no attack was run at two or more values of sigma
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.6), squeeze=False)
    for ax, (attack, by_sigma) in zip(axes[0], curves.items()):
        sig = sorted(by_sigma)
        s = [by_sigma[v]["summary"] for v in sig]
        ax.plot(sig, [x["control"]["top1"] for x in s], "o-", label="benign (control, this group), true label")
        ax.plot(sig, [x["cleaned"]["top1"] for x in s], "s-", label="cleaned adv., true label")
        ax.plot(sig, [x["cleaned"]["target_rate"] for x in s], "^-", label="cleaned adv., adv. label")
        ax.set_xlabel("sigma")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(attack)
        ax2 = ax.twinx()
        ax2.plot(sig, [x["cleaned"]["linf_mean"] for x in s], "k--", label="Linf(cleaned, benign)")
        ax2.axhline(LINF_BOUND, color="tab:red", ls=":", lw=1, label=f"Linf = {LINF_BOUND} (paper)")
        ax2.set_ylabel("mean Linf distance")
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="center right")
    fig.suptitle("Heat and Blur against sigma (cf. the paper's Figure 4)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def figure5(runs: list[dict], path: str) -> str | None:
    """Figure 5: mean NDCG@1..5 of Adv, Cleaned and Control, one panel per attack (four a row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = sorted({r["attack"] for r in runs})
    ncols = min(4, len(attacks))
    nrows = -(-len(attacks) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(attacks):]:
        ax.axis("off")
    for ax, attack in zip(axes.flat, attacks):
        rs = [r for r in runs if r["attack"] == attack]
        default = [r for r in rs if _sigma_label(r["sigma"]) == "U[0.8,1.2]"]
        r = (default or rs)[0]
        s = r["summary"]
        ks = sorted(int(k.split("@")[1]) for k in s["adv"] if k.startswith("ndcg@"))
        for view, marker in zip(VIEWS, "os^"):
            ax.plot(ks, [s[view][f"ndcg@{k}"] for k in ks], marker + "-",
                    label=f"{view} (top-1 {s[view]['top1']:.2f})")  # fmt: skip
        ax.set_xlabel("k")
        ax.set_ylabel("mean NDCG@k")
        values = [s[view][f"ndcg@{k}"] for view in VIEWS for k in ks]
        finite = [v for v in values if np.isfinite(v)]  # logit relevances can leave [0, 1]
        ax.set_ylim(min(-0.02, *finite) if finite else -0.02, max(1.02, *finite) if finite else 1.02)
        ax.set_xticks(ks)
        ax.set_title(f"{attack}, sigma {_sigma_label(r['sigma'])}, C {_coverage_label(r['coverage'])}", fontsize=9)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("NDCG@k against the benign prediction (cf. the paper's Figure 5)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def figure3(panels_path: str, path: str, *, max_examples: int = 4) -> str | None:
    """Figure 3 for a run: benign, adversarial, heatmap mask, blurred and cleaned images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with np.load(panels_path, allow_pickle=False) as z:
        p = {k: z[k] for k in z.files}
    names = [str(n) for n in p["class_names"]]
    n = min(max_examples, len(p["x"]))
    columns = [
        ("benign", "x", "pred_benign"), ("adversarial", "x_adv", "pred_adv"),
        ("heatmap", "heatmap", None), ("mask", "mask", None), ("blurred", "x_blurred", None),
        ("cleaned", "x_cleaned", "pred_cleaned"),
    ]  # fmt: skip
    fig, axes = plt.subplots(n, len(columns), figsize=(2.0 * len(columns), 2.1 * n), squeeze=False)
    for i in range(n):
        for j, (title, key, pred_key) in enumerate(columns):
            ax = axes[i, j]
            img = p[key][i]
            if key == "heatmap":
                lim = float(np.abs(img).max()) or 1.0
                ax.imshow(img, cmap="bwr", vmin=-lim, vmax=lim)
            elif key == "mask":
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(np.clip(img, 0, 1))
            label = title
            if pred_key is not None:
                label += f"\n{names[int(p[pred_key][i])]}"
            if key == "x":
                label = f"benign ({names[int(p['labels'][i])]})\n{names[int(p[pred_key][i])]}"
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _check_out_dir(out_dir: str, root: str) -> None:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ReportError(f"{out_dir} is a file, not a directory; pass --out DIR")
    os.makedirs(out_dir, exist_ok=True)
    if not os.access(out_dir, os.W_OK | os.X_OK):
        hint = "; pass --out DIR to write the report elsewhere" if out_dir == root else ""
        raise ReportError(f"{out_dir} is not writable{hint}")


def report(root: str, out_dir: str | None = None) -> dict[str, str]:
    """Writes the table and figures for the run or sweep under root into ``out_dir`` (default:
    root); returns their paths. Every run is read before anything is written."""
    runs = load_runs(root)
    out_dir = root if out_dir is None else out_dir
    _check_out_dir(out_dir, root)
    cols = table_rows(runs)
    out = {"table_md": os.path.join(out_dir, "table.md"), "table_csv": os.path.join(out_dir, "table.csv")}
    atomic_write_text(out["table_md"], markdown_table(cols))
    atomic_write_text(out["table_csv"], rows_to_csv(cols))
    # fig4_sigma.png: the L-BFGS sweep when there is one (the paper's Figure 4), else the first swept
    # attack; every other swept attack (e.g. PGD) in fig4_sigma_<attack>.png
    swept = swept_attacks(runs)
    for i, attack in enumerate(swept):
        name = "fig4_sigma.png" if i == 0 else f"fig4_sigma_{attack}.png"
        fig4 = figure4(runs, os.path.join(out_dir, name), [attack])
        if fig4 is not None:
            out["fig4" if i == 0 else f"fig4_{attack}"] = fig4
    out["fig5"] = figure5(runs, os.path.join(out_dir, "fig5_ndcg.png"))
    for r in runs:
        panels = os.path.join(r["dir"], "panels.npz")
        if os.path.exists(panels):
            tag = r["name"].replace(os.sep, "_").replace(".", "_") or "run"
            try:
                out[f"fig3_{tag}"] = figure3(panels, os.path.join(out_dir, f"fig3_{tag}.png"))
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # truncated, foreign
                print(f"hbjax-report: warning: {panels}: cannot read it ({type(e).__name__}: "
                      f"{' '.join(str(e).split())}); its Figure 3 is left out (delete the file and run "
                      f"{resume_command(r['dir'])} to redraw it)", file=sys.stderr)  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hbjax-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="an hbjax-evaluate run directory or a multirun sweep directory")
    parser.add_argument("--out", help="write the tables and figures here (default: RUN_DIR)")
    args = parser.parse_args(argv)
    try:
        paths = report(args.run_dir, args.out)
    except (HbjaxError, OSError) as e:
        print(f"hbjax-report: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hbjax-report: interrupted; files already written are complete", file=sys.stderr)
        return 130
    with open(paths["table_md"]) as f:
        print(f.read())
    for k, v in paths.items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
