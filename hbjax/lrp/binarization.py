"""Binarisation of heatmaps (eq. 2 of Brama and Grinshpoun): which pixels Heat and Blur keeps."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

BINARIZE_RULES = ("std", "top")


def binarize(
    h: jnp.ndarray,
    *,
    rule: str = "std",
    k: float = 2.0,
    fraction: float = 0.05,
    signed: bool = False,
) -> jnp.ndarray:
    """The mask of a heatmap's most relevant pixels, per image (over the last two axes).

    Args:
      h: heatmaps (..., H, W), e.g. (B, H, W) from :func:`hbjax.lrp.heatmap`.
      rule: ``"std"``: a = |h| > mean(a) + k std(a) over the image (eq. 2; population std);
        ``"top"``: the round(fraction * H * W) pixels of largest a (ties broken by position).
      k: the number of standard deviations of rule ``std`` (paper: 2).
      fraction: the kept fraction of rule ``top`` (paper: 5%), in [0, 1]; a Python number.
      signed: rank h itself instead of |h| (keeps only positive evidence).

    Returns:
      A bool mask of h's shape.
    """
    h = jnp.asarray(h)
    if h.ndim < 2:
        raise ValueError(f"heatmaps must have shape (..., H, W); got {h.shape}")
    a = h if signed else jnp.abs(h)
    if rule == "std":
        mean = jnp.mean(a, axis=(-2, -1), keepdims=True)
        std = jnp.std(a, axis=(-2, -1), keepdims=True)
        return a > mean + k * std
    if rule == "top":
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
        *lead, height, width = h.shape
        n_pixels = height * width
        n = int(math.floor(float(fraction) * n_pixels + 0.5))
        flat = a.reshape(-1, n_pixels)
        if n == 0:
            return jnp.zeros(h.shape, bool)
        _, idx = jax.lax.top_k(flat, n)
        rows = jnp.arange(flat.shape[0])[:, None]
        mask = jnp.zeros(flat.shape, bool).at[rows, idx].set(True)
        return mask.reshape(h.shape)
    raise ValueError(f"unknown binarisation rule {rule!r}; expected one of {BINARIZE_RULES}")
