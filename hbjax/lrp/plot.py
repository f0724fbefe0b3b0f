"""Pictures of heatmaps (the paper's Figures 1-2): image, heatmaps of two classes, binarised mask."""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from hbjax.lrp.binarization import binarize
from hbjax.lrp.explain import heatmap, heatmap_and_logits
from hbjax.models.model import Model


def plot_panels(
    images: np.ndarray,
    columns: Sequence[tuple[str, np.ndarray]],
    *,
    row_titles: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
    cmap: str = "bwr",
    panel_size: float = 2.4,
):
    """A matplotlib figure, one row per image: the image, then one panel per column.

    Args:
      images: (N, H, W, 3) in [0, 1].
      columns: (title, array) pairs; a float (N, H, W) array is a heatmap (colour map ``cmap``,
        symmetric limits +-max|h| per image, so white is zero), a bool one a mask (black/white).
      row_titles: per row, one title per panel (image first), overriding the column titles.
      title: the figure's title.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n, ncol = len(images), 1 + len(columns)
    fig, axes = plt.subplots(n, ncol, figsize=(panel_size * ncol, panel_size * n + 0.3), squeeze=False)
    for i in range(n):
        panels = [("image", np.asarray(images[i]))] + [(t, np.asarray(a[i])) for t, a in columns]
        for j, (label, a) in enumerate(panels):
            ax = axes[i, j]
            if a.ndim == 3:
                ax.imshow(np.clip(a, 0, 1))
            elif a.dtype == bool:
                ax.imshow(a, cmap="gray", vmin=0, vmax=1)
            else:
                vmax = float(np.max(np.abs(a))) or 1.0
                ax.imshow(a, cmap=cmap, vmin=-vmax, vmax=vmax)
            ax.set_title(row_titles[i][j] if row_titles is not None else label, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def explain_figure(
    model: Model,
    x: Any,
    *,
    composite: str | Any = "dtd",
    method: str = "lrp",
    other_rank: int = 2,
    rule: str = "std",
    k: float = 2.0,
    fraction: float = 0.05,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
):
    """Figure for images x (N, H, W, 3): each image, its heatmap for the predicted class, for the
    class ranked ``other_rank`` (2..5: another top-5 class), and the predicted class's binarised
    mask (:func:`hbjax.lrp.binarize` with ``rule``, ``k``, ``fraction``); ``title`` on top."""
    if not 2 <= other_rank <= 5:
        raise ValueError(f"other_rank must be 2..5 (a top-5 class other than the prediction), got {other_rank}")
    x = jnp.asarray(x)
    h_pred, logits = heatmap_and_logits(model, x, None, composite=composite, method=method)
    order = jnp.argsort(-logits, axis=-1)
    other = order[:, other_rank - 1]
    h_other = heatmap(model, x, other, composite=composite, method=method)
    mask = binarize(h_pred, rule=rule, k=k, fraction=fraction)
    names = list(class_names) if class_names is not None else model.class_names
    probs = np.asarray(jnp.exp(logits - logits.max(-1, keepdims=True)))
    probs = probs / probs.sum(-1, keepdims=True)
    pred = np.asarray(order[:, 0])

    def label(c: int) -> str:
        name = names[c] if c < len(names) else str(c)
        return f"{name[:22]} ({c})"

    rows = []
    for i in range(len(x)):
        p, o = int(pred[i]), int(other[i])
        rows.append([
            "image",
            f"{method.upper()} {label(p)}\np={probs[i, p]:.3f} (top-1)",
            f"{method.upper()} {label(o)}\np={probs[i, o]:.3f} (top-{other_rank})",
            f"mask ({rule}), {int(np.asarray(mask[i]).sum())} px",
        ])  # fmt: skip
    columns = [("predicted", np.asarray(h_pred)), ("other", np.asarray(h_other)), ("mask", np.asarray(mask))]
    return plot_panels(np.asarray(x), columns, row_titles=rows, title=title)


def methods_figure(
    model: Model,
    x: Any,
    *,
    composite: str | Any = "dtd",
    methods: Sequence[str] = ("lrp", "clrp", "sglrp"),
    other_ranks: Sequence[int] = (2, 3),
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> list:
    """One figure per image of x (N, H, W, 3), the paper's Figures 1-2 side by side: a row per
    heatmap method (LRP, CLRP, SGLRP), a column per explained class: the predicted class and the
    classes ranked ``other_ranks`` (e.g. 2 and 3) by the model's logits. Each heatmap is scaled to
    its own max |h| (white is zero; CLRP is clipped at zero by definition)."""
    if any(not 2 <= r <= model.num_classes for r in other_ranks):
        raise ValueError(f"other_ranks must lie in 2..{model.num_classes}, got {tuple(other_ranks)}")
    x = jnp.asarray(x)
    logits = np.asarray(model.apply(model.params, x))
    order = np.argsort(-logits, axis=-1, kind="stable")
    ranks = (1, *other_ranks)
    classes = order[:, [r - 1 for r in ranks]]  # (N, len(ranks))
    maps = {
        (m, j): np.asarray(heatmap(model, x, jnp.asarray(classes[:, j]), composite=composite, method=m))
        for m in methods for j in range(len(ranks))
    }  # fmt: skip
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    names = list(class_names) if class_names is not None else model.class_names

    def label(c: int) -> str:
        return f"{(names[c] if c < len(names) else str(c))[:22]} ({c})"

    figures = []
    for i in range(len(x)):
        rows = [
            [f"{m.upper()}"] + [
                f"{m.upper()} {label(int(classes[i, j]))}\np={probs[i, classes[i, j]]:.3f} (top-{r})"
                for j, r in enumerate(ranks)
            ]
            for m in methods
        ]  # fmt: skip
        columns = [
            (f"top-{r}", np.stack([maps[(m, j)][i] for m in methods])) for j, r in enumerate(ranks)
        ]  # fmt: skip
        images = np.repeat(np.asarray(x[i : i + 1]), len(methods), axis=0)
        figures.append(plot_panels(images, columns, row_titles=rows, title=title))
    return figures
