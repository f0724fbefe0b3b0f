"""Evaluation measures: NDCG between two outputs (section 4, eqs. 3-7), top-k accuracy, distances.

NDCG compares the ranking of classes that a model gives a benign image b with the ranking it gives
another image a (the adversarial example, or a cleaned image). With logits l and probabilities
p = softmax(l), both ranked by p descending (ties broken by the lower class index):

- K(p, C) = max(1, largest k with p_(1) + ... + p_(k) <= C): the number of classes that hold the
  coverage C. The clamp to 1 keeps a confident prediction (p_(1) > C) scoreable.
- Benign relevance (eq. 3): R_b[j] = r_b(j) / sum_{i <= K1} r_b(i) for ranks j <= K1 = K(p_b, C_b),
  else 0, where r = l (``relevance="logit"``, the paper) or r = p (``relevance="prob"``).
- Other image (eq. 4): R_a[j] = R_b of the class that a ranks j-th, for j <= K2 = K(p_a, C_a), else 0.
- DCG_k = sum_{j <= k} (2^R[j] - 1) / log2(1 + j) (eq. 5).
- NDCG@k(a) = DCG_min(k, K2)(a) / DCG_min(k, K1)(b) (eq. 6); eq. 7 is the case k = N (``k=None``).

With ``relevance="logit"`` the relevances are l / S with S the sum of the top-K1 benign logits. They
are in [0, 1] when those logits are positive (the usual case for a trained network); otherwise some
are negative (gain 2^R - 1 in (-1, 0)) or, when S is near 0, huge, and NDCG can leave [0, 1] or be
inf / nan. ``relevance="prob"`` is always in [0, 1] and does not depend on the logits' shift; use it
for random or uncalibrated networks.

:func:`ndcg` is the fast batched implementation (no full sort unless k = N is asked for);
:func:`ndcg_reference` is the same measure written per image with a full sort, vmapped over the batch.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "distances",
    "l2_distance",
    "linf_distance",
    "ndcg",
    "ndcg_reference",
    "topk_accuracy",
    "topk_correct",
]

_RELEVANCES = ("logit", "prob")
# Candidates left in a row's search bracket before one small top_k finishes the K1 search.
_BRACKET = 8


# --------------------------------------------------------------------------------------------------
# argument checks (eager; skipped for tracers, where nan inputs propagate to nan outputs)


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_logits(benign_logits: Any, other_logits: Any) -> tuple[jnp.ndarray, jnp.ndarray]:
    b, a = jnp.asarray(benign_logits), jnp.asarray(other_logits)
    if b.ndim != 2:
        raise ValueError(f"benign_logits must have shape (batch, classes); got shape {b.shape}")
    if a.shape != b.shape:
        raise ValueError(
            f"benign_logits and other_logits must have the same shape; got {b.shape} and {a.shape}"
        )
    if b.shape[1] < 1:
        raise ValueError("logits need at least one class")
    for name, x in (("benign_logits", b), ("other_logits", a)):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{name} must be floating point; got dtype {x.dtype}")
        if _is_concrete(x) and not bool(jnp.isfinite(x).all()):
            bad = np.argwhere(~np.isfinite(np.asarray(x)))[0]
            raise ValueError(f"{name} must be finite; found {np.asarray(x)[tuple(bad)]} at {tuple(bad)}")
    dtype = jnp.result_type(jnp.float32, b.dtype, a.dtype)
    return b.astype(dtype), a.astype(dtype)


def _check_ks(ks: Sequence[int | None], num_classes: int) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)) or ks is None:
        ks = (ks,)
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks must name at least one cut-off k")
    out = []
    for k in ks:
        if k is None:
            out.append(num_classes)
        elif isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1:
            out.append(min(int(k), num_classes))
        else:
            raise ValueError(f"each k must be a positive int or None (k = N); got {k!r}")
    return tuple(out)


def _check_coverage(coverage: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(coverage, (int, float, np.floating)):
        coverage = (coverage, coverage)
    coverage = tuple(float(c) for c in coverage)
    if len(coverage) != 2:
        raise ValueError(f"coverage must be C or (C_b, C_a); got {coverage}")
    for c in coverage:
        if not 0.0 < c <= 1.0:
            raise ValueError(f"coverage values must be in (0, 1]; got {coverage}")
    return coverage  # type: ignore[return-value]


def _check_relevance(relevance: str) -> None:
    if relevance not in _RELEVANCES:
        raise ValueError(f"relevance must be one of {_RELEVANCES}; got {relevance!r}")


# --------------------------------------------------------------------------------------------------
# the reference: one image, a full sort, the formulas as written


def _discounts(n: int, dtype: Any) -> jnp.ndarray:
    return 1.0 / jnp.log2(jnp.arange(2, n + 2, dtype=dtype))


def _coverage_count(p_sorted: jnp.ndarray, c: float) -> jnp.ndarray:
    """K(p, C) from probabilities sorted in descending order (eq. 3's K, clamped to >= 1)."""
    return jnp.maximum(1, jnp.sum(jnp.cumsum(p_sorted) <= c))


def _ndcg_one(b: jnp.ndarray, a: jnp.ndarray, ks: tuple[int, ...], cb: float, ca: float, relevance: str):
    n = b.shape[0]
    pb, pa = jax.nn.softmax(b), jax.nn.softmax(a)
    ob = jnp.argsort(-pb, stable=True)  # benign ranking: class ob[j] has rank j + 1
    oa = jnp.argsort(-pa, stable=True)
    k1 = _coverage_count(pb[ob], cb)
    k2 = _coverage_count(pa[oa], ca)
    r = b if relevance == "logit" else pb
    ranks = jnp.arange(n)
    top_b = ranks < k1
    s = jnp.sum(jnp.where(top_b, r[ob], 0))
    rb_sorted = jnp.where(top_b, r[ob] / s, 0)  # eq. 3, in benign rank order
    rb_class = jnp.zeros_like(rb_sorted).at[ob].set(rb_sorted)  # R_b by class
    ra_sorted = jnp.where(ranks < k2, rb_class[oa], 0)  # eq. 4
    disc = _discounts(n, b.dtype)
    gain_b = jnp.cumsum((2.0**rb_sorted - 1) * disc)
    gain_a = jnp.cumsum((2.0**ra_sorted - 1) * disc)
    ks_ = jnp.asarray(ks)
    return gain_a[jnp.minimum(ks_, k2) - 1] / gain_b[jnp.minimum(ks_, k1) - 1]


def ndcg_reference(
    benign_logits: jnp.ndarray,
    other_logits: jnp.ndarray,
    *,
    ks: Sequence[int | None] = (1, 2, 3, 4, 5),
    coverage: float | tuple[float, float] = (0.99, 0.99),
    relevance: str = "logit",
) -> jnp.ndarray:
    """NDCG@k (eqs. 3-7) written per image with a full sort and vmapped; same result as :func:`ndcg`.

    Slow (a full sort of each row); kept as the readable definition and the reference for tests.
    """
    b, a = _check_logits(benign_logits, other_logits)
    ks_ = _check_ks(ks, b.shape[1])
    cb, ca = _check_coverage(coverage)
    _check_relevance(relevance)
    fn = lambda b, a: _ndcg_one(b, a, ks_, cb, ca, relevance)  # noqa: E731
    return jax.jit(jax.vmap(fn))(b, a)


# --------------------------------------------------------------------------------------------------
# the fast batched version


def _int_view(p: jnp.ndarray) -> jnp.ndarray:
    """Non-negative floats as integers of the same width; the order is preserved."""
    itype = {4: jnp.int32, 8: jnp.int64}[p.dtype.itemsize]
    return lax.bitcast_convert_type(p, itype)


def _float_view(v: jnp.ndarray, dtype: Any) -> jnp.ndarray:
    return lax.bitcast_convert_type(v, dtype)


def _benign_top_set(p: jnp.ndarray, r: jnp.ndarray, c: float, top_idx0: jnp.ndarray):
    """Finds each row's top-K1 set, K1 = K(p, c), without sorting the row.

    The K1 most probable classes are the classes above a threshold plus the first few of the classes
    at the threshold. A bisection on the integer view of p (whose order is p's) narrows, row by row,
    a bracket [lo, hi) with G(hi) <= c < G(lo), G(t) = sum of p over the classes with p >= t, until
    at most ``_BRACKET`` classes (or a single value) lie inside; a top_k over the bracket finishes
    the count. Each step is one pass over the row; about a dozen steps finish a 1,000-class batch.

    Returns (k1, s, member): K1 (B,), S = sum of r over the top-K1 classes (B,), and a function that
    tells, for class indices (B, M), whether each is in the top-K1 set (bool (B, M)).
    """
    bsz, n = p.shape
    total = jnp.sum(p, axis=-1)
    vmin, vmax = _int_view(jnp.min(p, axis=-1)), _int_view(jnp.max(p, axis=-1))
    everything = total <= c  # the whole row fits: K1 = N
    hi0 = jnp.where(everything, vmin, vmax + 1)
    cnt_hi0 = jnp.where(everything, n, 0).astype(jnp.int32)
    g_hi0 = jnp.where(everything, total, 0).astype(p.dtype)
    cnt_lo0 = jnp.full((bsz,), n, jnp.int32)

    def undone(state):
        lo, hi, cnt_lo, cnt_hi, _ = state
        return jnp.any((cnt_lo - cnt_hi > _BRACKET) & (hi - lo > 1))

    def narrow(state):
        lo, hi, cnt_lo, cnt_hi, g_hi = state
        mid = lo + (hi - lo) // 2
        above = p >= _float_view(mid, p.dtype)[:, None]
        g = jnp.sum(jnp.where(above, p, 0), axis=-1)
        cnt = jnp.sum(above, axis=-1, dtype=jnp.int32)
        fits = g <= c
        return (
            jnp.where(fits, lo, mid),
            jnp.where(fits, mid, hi),
            jnp.where(fits, cnt_lo, cnt),
            jnp.where(fits, cnt, cnt_hi),
            jnp.where(fits, g, g_hi),
        )

    state = (vmin, hi0, cnt_lo0, cnt_hi0, g_hi0)
    lo, hi, cnt_lo, cnt_hi, g_hi = lax.while_loop(undone, narrow, state)
    t_lo, t_hi = _float_view(lo, p.dtype), _float_view(hi, p.dtype)

    above = p >= t_hi[:, None]
    inside = (p >= t_lo[:, None]) & ~above
    s_above = jnp.sum(jnp.where(above, r, 0), axis=-1)
    q, q_idx = lax.top_k(jnp.where(inside, p, -1), min(_BRACKET, n))
    q_ok = q >= 0
    prefix = g_hi[:, None] + jnp.cumsum(jnp.where(q_ok, q, 0), axis=-1)
    j = jnp.sum(q_ok & (prefix <= c), axis=-1, dtype=jnp.int32)
    q_r = jnp.take_along_axis(r, q_idx, axis=-1)
    s_inside = jnp.sum(jnp.where(jnp.arange(q.shape[1]) < j[:, None], q_r, 0), axis=-1)

    # A bracket narrowed to one value w may hold more than _BRACKET tied classes; then the first
    # j = floor((c - G(hi)) / w) of them in index order belong to the top set.
    n_inside = cnt_lo - cnt_hi
    w = q[:, 0]
    many_ties = n_inside > q.shape[1]
    j_ties = jnp.clip(jnp.floor((c - g_hi) / jnp.where(w > 0, w, 1)), 0, n_inside).astype(j.dtype)
    j_ties = jnp.where(w > 0, j_ties, n_inside)  # classes with p == 0 cost nothing
    j = jnp.where(many_ties, j_ties, j)
    r_tied = jnp.sum(jnp.where(inside, r, 0), axis=-1) / jnp.maximum(n_inside, 1)
    s_inside = jnp.where(many_ties, j * r_tied, s_inside)

    k_raw = cnt_hi + j
    clamp = k_raw == 0  # p_(1) > c: K1 = 1, the top class alone
    k1 = jnp.maximum(k_raw, 1)
    s = jnp.where(clamp, jnp.take_along_axis(r, top_idx0[:, None], axis=-1)[:, 0], s_above + s_inside)

    def member(idx: jnp.ndarray) -> jnp.ndarray:
        p_idx = jnp.take_along_axis(p, idx, axis=-1)
        chosen = jnp.arange(q.shape[1]) < j[:, None]
        in_bracket = jnp.any((idx[:, :, None] == q_idx[:, None, :]) & chosen[:, None, :], axis=-1)

        def tie_rank(_):
            tied = inside & many_ties[:, None]
            before = jnp.cumsum(tied, axis=-1, dtype=jnp.int32) - tied  # tied classes before each
            rank = jnp.take_along_axis(before, idx, axis=-1)
            return jnp.take_along_axis(tied, idx, axis=-1) & (rank < j[:, None])

        in_ties = lax.cond(jnp.any(many_ties), tie_rank, lambda _: jnp.zeros(idx.shape, bool), None)
        in_top = (p_idx >= t_hi[:, None]) | jnp.where(many_ties[:, None], in_ties, in_bracket)
        return jnp.where(clamp[:, None], idx == top_idx0[:, None], in_top)

    return k1, s, member


def _ndcg_batch(b: jnp.ndarray, a: jnp.ndarray, ks: tuple[int, ...], cb: float, ca: float, relevance: str):
    kmax = max(ks)
    pb, pa = jax.nn.softmax(b, axis=-1), jax.nn.softmax(a, axis=-1)
    r = b if relevance == "logit" else pb
    pb_top, ib_top = lax.top_k(pb, kmax)  # benign ranking, first kmax ranks
    pa_top, ia_top = lax.top_k(pa, kmax)  # the other image's ranking
    k1, s, member = _benign_top_set(pb, r, cb, ib_top[:, 0])
    # min(K2, kmax) is all that NDCG@k with k <= kmax needs; the top-kmax prefix gives it exactly.
    k2 = jnp.maximum(1, jnp.sum(jnp.cumsum(pa_top, axis=-1) <= ca, axis=-1))
    ranks = jnp.arange(kmax)
    rb_sorted = jnp.where(ranks < k1[:, None], jnp.take_along_axis(r, ib_top, axis=-1) / s[:, None], 0)
    ra_rel = jnp.take_along_axis(r, ia_top, axis=-1) / s[:, None]
    ra_sorted = jnp.where((ranks < k2[:, None]) & member(ia_top), ra_rel, 0)
    disc = _discounts(kmax, b.dtype)
    gain_b = jnp.cumsum((2.0**rb_sorted - 1) * disc, axis=-1)
    gain_a = jnp.cumsum((2.0**ra_sorted - 1) * disc, axis=-1)
    ks_ = jnp.asarray(ks)
    at_a = jnp.minimum(ks_[None, :], k2[:, None]) - 1
    at_b = jnp.minimum(ks_[None, :], k1[:, None]) - 1
    return jnp.take_along_axis(gain_a, at_a, axis=-1) / jnp.take_along_axis(gain_b, at_b, axis=-1)


_ndcg_jit = jax.jit(_ndcg_batch, static_argnums=(2, 3, 4, 5))


def ndcg(
    benign_logits: jnp.ndarray,
    other_logits: jnp.ndarray,
    *,
    ks: Sequence[int | None] = (1, 2, 3, 4, 5),
    coverage: float | tuple[float, float] = (0.99, 0.99),
    relevance: str = "logit",
) -> jnp.ndarray:
    """NDCG@k of ``other_logits`` against ``benign_logits`` (section 4, eqs. 3-7), per image.

    Args:
      benign_logits: (B, N) logits of the benign images.
      other_logits: (B, N) logits of the other images (adversarial or cleaned), row by row.
      ks: the cut-offs k; ``None`` (or any k >= N) is the full NDCG of eq. 7. The cost grows with the
        largest k: k <= 5 needs no sort; k = N sorts every row (about 3 s a 10,000 x 1,000 block on
        two CPU cores).
      coverage: (C_b, C_a), or one C for both, each in (0, 1].
      relevance: "logit" (eq. 3 as written) or "prob" (p instead of l; see the module docstring).

    Returns:
      (B, len(ks)) NDCG@k, in the dtype of the logits (at least float32).

    Raises:
      ValueError: shapes differ or are not (B, N); non-finite logits (checked when the inputs are
        concrete; under ``jit`` a nan input gives a nan row); a bad k, coverage or relevance.

    Jit-able (the hyper-parameters are static) and vmap-able over extra leading axes. Ties in p are
    broken by the lower class index, as a stable sort would.
    """
    b, a = _check_logits(benign_logits, other_logits)
    ks_ = _check_ks(ks, b.shape[1])
    cb, ca = _check_coverage(coverage)
    _check_relevance(relevance)
    return _ndcg_jit(b, a, ks_, cb, ca, relevance)


# --------------------------------------------------------------------------------------------------
# accuracy and distances


def topk_correct(logits: jnp.ndarray, labels: jnp.ndarray, *, k: int = 1) -> jnp.ndarray:
    """(B,) bool: whether labels[i] is among the k largest logits of row i (ties: lower index first)."""
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"need logits (B, N) and labels (B,); got {logits.shape} and {labels.shape}")
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k must be in [1, {logits.shape[1]}]; got {k}")
    _, idx = lax.top_k(logits, k)
    return jnp.any(idx == labels[:, None], axis=-1)


def topk_accuracy(logits: jnp.ndarray, labels: jnp.ndarray, *, ks: Sequence[int] = (1, 5)) -> jnp.ndarray:
    """(len(ks),) fraction of rows whose label is in the top-k, for each k (k clipped to N)."""
    n = jnp.shape(logits)[-1]
    return jnp.stack([jnp.mean(topk_correct(logits, labels, k=min(k, n))) for k in ks])


def _flat_diff(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.shape != y.shape or x.ndim < 1:
        raise ValueError(f"need two batches of the same shape; got {x.shape} and {y.shape}")
    return (x - y).reshape(x.shape[0], -1)


def l2_distance(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """(B,) Euclidean distance between x[i] and y[i] over all other axes."""
    return jnp.sqrt(jnp.sum(_flat_diff(x, y) ** 2, axis=-1))


def linf_distance(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """(B,) largest absolute difference between x[i] and y[i]."""
    return jnp.max(jnp.abs(_flat_diff(x, y)), axis=-1)


def distances(x: jnp.ndarray, y: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """{"l2": (B,), "linf": (B,)} distances of each y[i] from x[i]."""
    return {"l2": l2_distance(x, y), "linf": linf_distance(x, y)}
