"""Pictures of Heat and Blur: the paper's Figure 3 for any batch (matplotlib, Agg backend).

One row per image: the input, its LRP heatmap, the blurred image, the restored pixels (the mask,
shown over a dimmed input) and the cleaned image, with the model's top class and probability in
the titles of the input, blurred and cleaned columns.
"""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from hbjax import xla
from hbjax.defense import Cleaned, clean  # noqa: E402
from hbjax.models.model import Model  # noqa: E402

__all__ = ["figure3", "panel", "top_classes"]


def top_classes(logits: Any, class_names: Sequence[str], k: int = 5) -> list[list[tuple[str, int, float]]]:
    """For each row of logits (B, N): the k most probable classes as (name, index, probability)."""
    p = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1))
    k = min(k, p.shape[-1])
    out = []
    for row in p:
        order = np.argsort(-row, kind="stable")[:k]
        out.append([(class_names[i], int(i), float(row[i])) for i in order])
    return out


def _label(top: tuple[str, int, float]) -> str:
    name, _, prob = top
    return f"{name} ({prob:.2f})"


def _show(ax, image: np.ndarray, title: str, **kwargs: Any) -> None:
    ax.imshow(image, interpolation="nearest", **kwargs)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def panel(
    x: Any,
    cleaned: Cleaned,
    *,
    cleaned_logits: Any,
    blurred_logits: Any | None = None,
    class_names: Sequence[str] | None = None,
    labels: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    heatmap: bool = True,
    title: str | None = None,
) -> Figure:
    """Figure 3 of the paper from computed results.

    Args:
      x: the input images (B, H, W, 3) in [0, 1] (benign or adversarial).
      cleaned: :func:`hbjax.defense.clean`'s result for x.
      cleaned_logits: the model's logits of ``cleaned.image`` (B, N).
      blurred_logits: the logits of ``cleaned.blurred``, for the blurred column's title.
      class_names: the names of the N classes (default: the indices).
      labels: true classes, shown in the input's title.
      names: a short name per image (a file name), shown at the left of its row.
      heatmap: show the heatmap column.
      title: the figure's title.
    """
    x = np.asarray(x, np.float32)
    n_img = x.shape[0]
    num_classes = np.shape(cleaned.logits)[-1]
    class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    before = top_classes(cleaned.logits, class_names, 1)
    after = top_classes(cleaned_logits, class_names, 1)
    blurred = top_classes(blurred_logits, class_names, 1) if blurred_logits is not None else None
    mask = np.asarray(cleaned.mask)
    heat = np.asarray(cleaned.heatmap, np.float32)
    sigma = np.asarray(cleaned.sigma)
    cols = 5 if heatmap else 4
    fig = Figure(figsize=(2.1 * cols, 2.5 * n_img + (0.4 if title else 0)), dpi=110)
    axes = fig.subplots(n_img, cols, squeeze=False)
    for i in range(n_img):
        row = iter(axes[i])
        head = f"input: {_label(before[i][0])}"
        if labels is not None:
            head += f"\nlabel: {class_names[int(labels[i])]}"
        ax = next(row)
        _show(ax, np.clip(x[i], 0, 1), head)
        if names is not None:
            ax.set_ylabel(names[i], fontsize=7)
        if heatmap:
            lim = float(np.abs(heat[i]).max()) or 1.0
            _show(next(row), heat[i], "LRP heatmap", cmap="bwr", vmin=-lim, vmax=lim)
        sub = f"blurred, sigma {sigma[i]:.2f}"
        if blurred is not None:
            sub += f"\n{_label(blurred[i][0])}"
        _show(next(row), np.clip(np.asarray(cleaned.blurred[i]), 0, 1), sub)
        shown = np.where(mask[i][..., None], x[i], 0.25 * x[i])
        _show(next(row), np.clip(shown, 0, 1), f"restored pixels: {100 * mask[i].mean():.1f}%")
        _show(next(row), np.clip(np.asarray(cleaned.image[i]), 0, 1), f"cleaned: {_label(after[i][0])}")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def figure3(
    model: Model,
    x: Any,
    key: jax.Array | None = None,
    *,
    labels: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    heatmap: bool = True,
    title: str | None = None,
    **clean_kwargs: Any,
) -> Figure:
    """Runs Heat and Blur on x and draws the paper's Figure 3 (see :func:`panel`).

    ``clean_kwargs`` go to :func:`hbjax.defense.clean` (sigma, composite, binarize, mode, ...).
    """
    out = clean(model, x, key, **clean_kwargs)
    apply = xla.jit(model.apply)
    return panel(
        x, out, cleaned_logits=apply(model.params, out.image),
        blurred_logits=apply(model.params, out.blurred), class_names=model.class_names,
        labels=labels, names=names, heatmap=heatmap, title=title,
    )  # fmt: skip
