"""The Square attack (Andriushchenko, Croce, Flammarion and Hein 2020): a score-based black-box
attack (logits only, no gradient) by random search over square-shaped updates, Linf and L2.

Each query changes one random square of side s (per image) of the current best perturbation and
keeps the change if the margin loss fell or the image became adversarial. s shrinks with the
authors' schedule of the fraction p of pixels changed: p = p_init halved at iterations 10, 50,
200, 500, 1000, 2000, 4000, 6000, 8000 of a 10,000-query run (rescaled to the query budget).
Works unchanged on a :class:`hbjax.attacks.Randomized` classifier (Heat and Blur): every query is
a fresh draw, as a deployed randomised defense answers.

The steps follow the authors' code (as torchattacks 3.5 ports it), with one difference: the square's
position, its signs (and for L2 the orientation of its profile) are drawn per image, as in the
paper's original implementation, where the ported code draws them once per batch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hbjax import xla
from hbjax.attacks import base
from hbjax.attacks.apgd import run_on_robust
from hbjax.attacks.base import AttackResult
from hbjax.attacks.randomized import Randomized, as_sampler

SQUARE_LOSSES = ("margin", "ce")
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(i: int, queries: int, p_init: float) -> float:
    """The fraction of pixels a query changes at iteration i (the authors' p_selection, rescaled
    from 10,000 queries to ``queries``)."""
    it = int(i / queries * 10000)
    halvings = sum(it > b for b in _HALVINGS)
    return p_init / 2**halvings


def square_sizes(queries: int, p_init: float, h: int, w: int, c: int, norm: str) -> np.ndarray:
    """The square side of each iteration: round(sqrt(p h w)), at least 1 (Linf) or an odd size of at
    least 3 (L2), at most min(h, w)."""
    sizes = np.empty(queries, np.int32)
    for i in range(queries):
        s = int(round(math.sqrt(p_schedule(i, queries, p_init) * h * w * c / c)))
        if norm == "linf":
            s = max(s, 1)
        else:
            s = max(s, 3)
            s += 1 - s % 2
        sizes[i] = min(s, min(h, w))
    return sizes


# ------------------------------------------------------------------------------------- losses
def margin_and_loss(logits, labels, targeted: bool, loss: str):
    """(margin, loss) of the authors' code, both to be minimised; margin <= 0 means adversarial.

    Untargeted: margin z_y - max_{j != y} z_j, loss that margin (``"margin"``) or minus the
    cross-entropy (``"ce"``). Targeted (labels = targets): margin max_{j != t} z_j - z_t, loss that
    margin or the target's cross-entropy."""
    m = -base.margin(logits, labels, targeted)
    if loss == "margin":
        return m, m
    ce = -base.class_logit(jax.nn.log_softmax(logits, -1), labels)
    return m, (ce if targeted else -ce)


# ------------------------------------------------------------------------------- square shapes
def _window(pos_h, pos_w, s, h, w):
    """(B, H, W) bool: the s x s square at (pos_h, pos_w), and each pixel's (row, col) inside it."""
    rows = jnp.arange(h)[None, :, None] - pos_h[:, None, None]
    cols = jnp.arange(w)[None, None, :] - pos_w[:, None, None]
    inside = (rows >= 0) & (rows < s) & (cols >= 0) & (cols < s)
    return inside, rows, cols


def _harmonic2(n_max: int) -> jax.Array:
    """tab[n] = sum_{k=1..n} 1/k^2, n = 0 .. n_max."""
    return jnp.asarray(np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n_max + 1) ** 2)]))


def _eta_rect(rows, cols, X, Y, tab):
    """The authors' eta_rectangles(X, Y) at (rows, cols) (0 outside): nested rectangles around
    the centre (X//2, Y//2), weight sum_{k >= max(|r - X//2|, |c - Y//2|)}^{M-1} 1/(k+1)^2,
    M = max(X//2 + 1, Y//2 + 1), not yet normalised."""
    m = jnp.maximum(jnp.abs(rows - X // 2), jnp.abs(cols - Y // 2))
    big_m = jnp.maximum(X // 2 + 1, Y // 2 + 1)
    inside = (rows >= 0) & (rows < X) & (cols >= 0) & (cols < Y)
    value = tab[jnp.clip(big_m, 0, tab.shape[0] - 1)] - tab[jnp.clip(m, 0, tab.shape[0] - 1)]
    return jnp.where(inside, value, 0.0)


def _eta(rows, cols, s, flip, dtype):
    """The authors' eta(s) on each image's s x s square (rows, cols relative to its corner; 0
    outside): the upper half +eta_rect, the lower half -eta_rect, each of unit norm, all of unit
    norm, transposed where ``flip``."""
    rows, cols = jnp.where(flip, cols, rows), jnp.where(flip, rows, cols)
    s = s[:, None, None] if jnp.ndim(s) else s
    half = s // 2
    tab = _harmonic2(2 * max(rows.shape[1], rows.shape[2]) + 2).astype(dtype)
    top = _eta_rect(rows, cols, half, s, tab)
    bottom = _eta_rect(rows - half, cols, s - half, s, tab)

    def unit(a):  # a half is empty for s = 1
        return a / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(a), axis=(1, 2), keepdims=True)), 1e-30)

    return unit(unit(top) - unit(bottom))


def _signs(key, n, c, dtype):
    return jnp.where(jax.random.bernoulli(key, 0.5, (n, 1, 1, c)), 1.0, -1.0).astype(dtype)


def _l2_per(a):
    return base._bcast(base.l2_norm(a), a)


def _normalize_l2(d):
    return d / (_l2_per(d) + 1e-12)


# ------------------------------------------------------------------------------------------ loop
class _State(NamedTuple):
    x_best: jax.Array
    margin_min: jax.Array
    loss_min: jax.Array
    queries: jax.Array  # (B,) int32


@functools.partial(xla.jit, static_argnames=("norm", "targeted", "loss"))
def _init(sampler, x, classes, eps, key, *, norm, targeted, loss):
    """The authors' start: vertical stripes of +-eps (Linf) or a grid of eta(h // 5) squares with
    random signs, scaled to norm eps (L2)."""
    n, h, w, c = x.shape
    k_sign, k_model = jax.random.split(key)
    eps = eps.astype(x.dtype)
    if norm == "linf":
        stripes = jnp.where(jax.random.bernoulli(k_sign, 0.5, (n, 1, w, c)), 1.0, -1.0)
        x_best = jnp.clip(x + eps * stripes.astype(x.dtype), 0.0, 1.0)
    else:
        s = h // 5
        start = (h - s * 5) // 2
        delta = jnp.zeros_like(x)
        signs_key = k_sign
        for bh in range(h // s):
            for bw in range(w // s):
                signs_key, k = jax.random.split(signs_key)
                ph = jnp.full((n,), start + bh * s)
                pw = jnp.full((n,), start + bw * s)
                inside, rows, cols = _window(ph, pw, s, h, w)
                profile = _eta(rows, cols, s, jnp.zeros((n, 1, 1), bool), x.dtype)
                delta = delta + jnp.where(inside, profile, 0.0)[..., None] * _signs(k, n, c, x.dtype)
        x_best = jnp.clip(x + _normalize_l2(delta) * eps, 0.0, 1.0)
    m, l = margin_and_loss(sampler(x_best, k_model), classes, targeted, loss)
    return _State(x_best, m, l, jnp.ones((n,), jnp.int32))


@dataclasses.dataclass(frozen=True)
class SquareStep(base.Settings):
    """One query of the Square attack for every example still robust. Operands:
    (sampler, x, classes, eps, key, sizes (queries,))."""

    norm: str
    targeted: bool
    loss: str

    def __call__(self, operands, i, st: _State) -> _State:
        sampler, x, classes, eps, key, sizes = operands
        n, h, w, c = x.shape
        eps = eps.astype(x.dtype)
        s = sizes[i]
        k = jax.random.split(jax.random.fold_in(key, i), 7)
        hi = jnp.maximum(h - s, 1)
        wi = jnp.maximum(w - s, 1)
        ph = jax.random.randint(k[0], (n,), 0, hi)
        pw = jax.random.randint(k[1], (n,), 0, wi)
        inside, rows, cols = _window(ph, pw, s, h, w)
        inside = inside[..., None]
        if self.norm == "linf":
            delta = jnp.where(inside, 2.0 * eps * _signs(k[2], n, c, x.dtype), 0.0)
            x_new = jnp.clip(jnp.clip(st.x_best + delta, x - eps, x + eps), 0.0, 1.0)
        else:
            delta_curr = st.x_best - x
            ph2 = jax.random.randint(k[3], (n,), 0, hi)
            pw2 = jax.random.randint(k[4], (n,), 0, wi)
            inside2 = _window(ph2, pw2, s, h, w)[0][..., None]
            norms_window_1 = jnp.sqrt(jnp.sum(jnp.where(inside, delta_curr, 0.0) ** 2, (1, 2), keepdims=True))
            norms_image = _l2_per(delta_curr)
            norms_windows = _l2_per(jnp.where(inside | inside2, delta_curr, 0.0))
            flip = jax.random.bernoulli(k[5], 0.5, (n, 1, 1))
            profile = _eta(rows, cols, s, flip, x.dtype)[..., None]
            new = profile * _signs(k[2], n, c, x.dtype) + jnp.where(inside, delta_curr, 0.0) / (
                1e-12 + norms_window_1
            )
            new = jnp.where(inside, new, 0.0)
            new_norm = jnp.sqrt(jnp.sum(new**2, (1, 2), keepdims=True))
            budget = jnp.sqrt(jnp.maximum(eps**2 - norms_image**2, 0.0) / c + norms_windows**2)
            new = new / (1e-12 + new_norm) * budget
            delta_curr = jnp.where(inside, new, jnp.where(inside2, 0.0, delta_curr))
            x_new = jnp.clip(x + _normalize_l2(delta_curr) * eps, 0.0, 1.0)
        x_new = x_new.astype(x.dtype)
        m, l = margin_and_loss(sampler(x_new, k[6]), classes, self.targeted, self.loss)
        active = st.margin_min > 0
        improved = l < st.loss_min
        loss_min = jnp.where(active & improved, l, st.loss_min)
        keep = active & (improved | (m <= 0))
        margin_min = jnp.where(keep, m, st.margin_min)
        x_best = base.select(keep, x_new, st.x_best)
        return _State(x_best, margin_min, loss_min, st.queries + active.astype(jnp.int32))


def _all_fooled(operands, st: _State) -> jax.Array:
    return jnp.all(st.margin_min <= 0)


@functools.partial(xla.jit, static_argnames=("targeted",))
def _verdict(sampler, x_adv, classes, key, *, targeted):
    pred = jnp.argmax(sampler(x_adv, key), -1)
    return (pred == classes) if targeted else (pred != classes)


def square(
    logits_fn: Callable | Randomized,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    targeted: bool = False,
    targets: jax.Array | None = None,
    eps: float = 8 / 255,
    norm: str = "linf",
    queries: int = 5000,
    p_init: float = 0.8,
    restarts: int = 1,
    loss: str = "margin",
    loop: str = "auto",
    unroll: int = 10,
) -> AttackResult:
    """The Square attack (Andriushchenko et al. 2020), score-based, in the Linf or L2 ball.

    Args:
      logits_fn: x -> logits, or a :class:`hbjax.attacks.Randomized` classifier (each query a
        fresh draw); only its outputs are used.
      x: (B, H, W, C) images in [0, 1]; labels, key, targeted, targets: the common arguments.
      eps: radius of the ball.
      norm: ``"linf"`` or ``"l2"``.
      queries: the query budget of a run (iterations; the start costs one more query). The run
        stops early once every example is adversarial; an adversarial example stops querying.
      p_init: the fraction of pixels the first squares change (authors: 0.05 for Linf on ImageNet,
        0.8 in AutoAttack and torchattacks; see :func:`p_schedule`).
      restarts: runs; each further run attacks only the examples still robust.
      loss: ``"margin"`` (AutoAttack's) or ``"ce"``.
      loop, unroll: loop runner (:func:`hbjax.attacks.base.iterate`).

    Returns:
      :class:`AttackResult`; x_adv is the best point found (the adversarial one where the attack
      succeeded); model_calls counts batch evaluations (iterations run + starts + the final check).

    References:
      Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box
      adversarial attack via random search", ECCV 2020.
    """
    name = "square"
    x, labels, classes = base.check_inputs(x, labels, targeted=targeted, targets=targets, name=name)
    if x.ndim != 4:
        raise ValueError(f"{name}: x must be a batch of images (B, H, W, C); got shape {x.shape}")
    base.check_choice(norm, base.NORMS, "norm", name)
    base.check_choice(loss, SQUARE_LOSSES, "loss", name)
    eps = base.check_nonnegative(eps, "eps", name)
    queries = base.check_count(queries, "queries", name)
    restarts = base.check_count(restarts, "restarts", name)
    unroll = base.check_count(unroll, "unroll", name)
    p_init = float(p_init)
    if not 0.0 < p_init <= 1.0:
        raise ValueError(f"{name}: p_init must lie in (0, 1]; got {p_init!r}")
    loop = base.resolve_loop(loop, name)
    sampler, _ = as_sampler(logits_fn)
    _, h, w, c = x.shape
    if norm == "l2" and min(h, w) < 5:
        raise ValueError(f"{name}: the L2 attack needs images of at least 5 x 5 pixels; got {h} x {w}")
    sizes = jnp.asarray(square_sizes(queries, p_init, h, w, c, norm))
    eps_arr = jnp.asarray(eps, x.dtype)
    step = SquareStep(norm, bool(targeted), loss)

    def run(xs, cs, _unused, k):
        k_init, k_walk = jax.random.split(k)
        st = _init(sampler, xs, cs, eps_arr, k_init, norm=norm, targeted=bool(targeted), loss=loss)
        operands = (sampler, xs, cs, eps_arr, k_walk, sizes)
        st, done = base.iterate(step, operands, st, queries, loop=loop, unroll=unroll, done=_all_fooled)
        return st.x_best, st.margin_min <= 0, int(done)

    x_adv, fooled, calls = run(x, classes, classes, jax.random.fold_in(key, 0))
    calls += 1
    robust = ~np.asarray(fooled)
    for r in range(1, restarts):
        x_adv, robust, done = run_on_robust(run, x, classes, classes, robust, x_adv, jax.random.fold_in(key, r))
        calls += done + (1 if done else 0)
    x_adv = jnp.clip(x_adv, 0.0, 1.0).astype(x.dtype)
    success = _verdict(sampler, x_adv, classes, jax.random.fold_in(key, 2**31 - 1), targeted=bool(targeted))
    l2, linf = base.distances(x_adv, x)
    return AttackResult(x_adv, success, l2, linf, jnp.asarray(calls + 1, jnp.int32))
