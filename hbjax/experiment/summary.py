"""Summary of an evaluation (section 5): accuracies, target rates, NDCG and distances for the
adversarial ("adv"), cleaned adversarial ("cleaned") and cleaned benign ("control") images.

Adv, Cleaned and Control are averaged over the kept examples (benign correctly classified and the
attack successful): the paper's Control is "the control benign group" of each experimental group,
the benign counterparts of that group's adversarial examples. ``control_all`` holds the same
measures of the cleaned benign images over every correctly classified benign image (the same for
every attack on the same images).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

VIEWS = ("adv", "cleaned", "control")
GROUPS = VIEWS + ("control_all",)  # the summary's groups; control_all reads the control columns


def _as_array(values: Sequence) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind in "US":
        arr = arr.astype(np.float64)
    return arr


def summarize(rows: Mapping[str, Sequence], ks: Sequence[int]) -> dict:
    """Aggregates per-example columns (as written to ``examples.csv``) into the results dict."""
    col = {k: _as_array(v) for k, v in rows.items() if k not in ("id",)}
    n = len(col["label"])
    correct = col["benign_correct"].astype(bool)
    success = col["attack_success"].astype(bool)
    kept = correct & success
    out: dict = {
        "n_images": int(n),
        "n_correct": int(correct.sum()),
        "benign_accuracy": float(correct.mean()) if n else float("nan"),
        "n_attack_success": int(kept.sum()),
        "n_attack_failed": int((correct & ~success).sum()),
        "attack_success_rate": float(kept.sum() / max(1, correct.sum())),
    }
    if "model_calls" in col and correct.any():
        out["attack_model_calls_mean"] = float(col["model_calls"][correct].mean())
    for group in GROUPS:
        view = "control" if group == "control_all" else group
        sel = correct if group == "control_all" else kept
        stats: dict = {"n": int(sel.sum())}

        def mean(name: str) -> float:
            return float(col[name][sel].mean()) if sel.any() else float("nan")

        def median(name: str) -> float:
            return float(np.median(col[name][sel])) if sel.any() else float("nan")

        stats["top1"] = mean(f"top1_{view}")
        stats["top5"] = mean(f"top5_{view}")
        stats["target_rate"] = mean(f"target_hit_{view}")
        for k in ks:
            stats[f"ndcg@{k}"] = mean(f"ndcg{k}_{view}")
        stats["ndcg_full"] = mean(f"ndcg_full_{view}")
        for d in ("l2", "linf"):
            stats[f"{d}_mean"] = mean(f"{d}_{view}")
            stats[f"{d}_median"] = median(f"{d}_{view}")
        out[group] = stats
    return out
