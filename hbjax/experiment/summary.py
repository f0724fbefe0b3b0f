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
    out["readings"] = readings(col, correct)
    return out


def readings(col: Mapping[str, np.ndarray], correct: np.ndarray) -> dict:
    """Whether the attack's output fools (a) the undefended network (Adv view; the literal reading
    of Algorithm 2's line 7), (b) the defended classifier (Cleaned view, its own sigma draw,
    independent of the attack's), (c) both; untargeted: wrong label, targeted: the target.

    Rates over ``n``: the images the undefended network gets right and the *defended* classifier
    gets right when benign (Control top-1), so that an image the defense already misclassifies does
    not count as a success of the attack; ``*_over_correct`` over every correct image instead.
    """
    targeted = bool(np.any(col["target"].astype(np.int64) >= 0))
    if targeted:
        fooled_a = col["target_hit_adv"].astype(bool)
        fooled_b = col["target_hit_cleaned"].astype(bool)
    else:
        fooled_a = ~col["top1_adv"].astype(bool)
        fooled_b = ~col["top1_cleaned"].astype(bool)
    base = correct & col["top1_control"].astype(bool)
    out: dict = {"n": int(base.sum()), "n_correct": int(correct.sum())}
    for name, fooled in (("undefended", fooled_a), ("defended", fooled_b), ("both", fooled_a & fooled_b)):
        out[name] = float(fooled[base].mean()) if base.any() else float("nan")
        out[f"{name}_over_correct"] = float(fooled[correct].mean()) if correct.any() else float("nan")
    return out
