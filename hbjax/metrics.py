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
- NDCG@k(a) = DCG_min(k, K2)(a) / DCG_K1(b) (eq. 6): one normaliser for every k, the IDCG "given by
  the predictions for the benign image"; eq. 7 is the case k = N (``k=None``). NDCG@k is therefore
  non-decreasing in k when the relevances are non-negative, reaches its eq. 7 value at k >= K2, and
  is 1 for a = b only from k >= K1 on (below, DCG_k(b) / DCG_K1(b) < 1): the curves of the paper's
  section 5.1 and Figure 5 rise with k.

With ``relevance="logit"`` the relevances are l / S with S the sum of the top-K1 benign logits. They
are in [0, 1] when those logits are positive (the usual case for a trained network); otherwise some
are negative (gain 2^R - 1 in (-1, 0)) or, when S is near 0, huge, and NDCG can leave [0, 1] or be
inf / nan. ``relevance="prob"`` is always in [0, 1] and does not depend on the logits' shift; use it
for random or uncalibrated networks.

:func:`ndcg` is the fast batched implementation (no full sort unless k = N is asked for);
:func:`ndcg_reference` is the same measure written per image with a full sort, vmapped over the batch.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hbjax import validation
from jax import lax

__all__ = [
    "Distances",
    "distances",
    "l2_distance",
    "linf_distance",
    "ndcg",
    "ndcg_reference",
    "topk_accuracy",
    "topk_correct",
]

_RELEVANCES = ("logit", "prob")
# The K1 search splits each row's bracket into this many parts a pass; after _FULL_STEPS passes
# over the whole batch it finishes the few unfinished rows alone.
_WAYS = 8
_FULL_STEPS = 4
# DCG_K1(b) reads the benign ranking down to K1: a top-k of this many ranks, a full sort past it.
_IDCG_PREFIX = 32


# --------------------------------------------------------------------------------------------------
# argument checks (eager; skipped for tracers, where nan inputs propagate to nan outputs)


@jax.jit
def _row_sums(x: jnp.ndarray) -> jnp.ndarray:
    return jnp.sum(x, axis=-1)


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
        validation.check_logits(x, name=name, where="hbjax.metrics.ndcg")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{name} must be floating point; got dtype {x.dtype}")
        # a nan or inf anywhere makes its row's sum non-finite (one cheap pass)
        if validation.is_concrete(x) and not bool(jnp.isfinite(_row_sums(x)).all()):
            bad = np.argwhere(~np.isfinite(np.asarray(x)))
            if not len(bad):  # finite values whose sum overflows
                raise ValueError(f"{name} are too large: a row's sum overflows {x.dtype}")
            bad = bad[0]
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
    return gain_a[jnp.minimum(ks_, k2) - 1] / gain_b[k1 - 1]  # eq. 6 with IDCG = DCG_K1(b)


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


def _row_reduce(operands: Sequence[jnp.ndarray], inits: Sequence[Any], ops: Sequence[Callable]):
    """One pass over the rows computing several reductions at once (a variadic lax.reduce):
    on the CPU, each extra output costs a small fraction of a pass."""
    return lax.reduce(
        tuple(operands),
        tuple(np.asarray(i, o.dtype) for i, o in zip(inits, operands)),
        lambda x, y: tuple(op(u, v) for op, u, v in zip(ops, x, y)),
        (1,),
    )


def _unfinished(state) -> jnp.ndarray:
    lo, hi, cnt_lo, cnt_hi, _ = state
    return (cnt_lo - cnt_hi > 2) & (hi - lo > 1)


def _narrow_step(p: jnp.ndarray, c: float, state):
    """One ``_WAYS``-ary step of the K1 search on every row (one pass over p)."""
    lo, hi, cnt_lo, cnt_hi, g_hi = state
    ways, dt = _WAYS, p.dtype
    d = hi - lo
    mids = [lo + (d // ways) * i + ((d % ways) * i) // ways for i in range(1, ways)]
    operands = []
    for mid in mids:
        above = p >= _float_view(mid, dt)[:, None]
        operands += [jnp.where(above, p, 0), above.astype(dt)]
    sums = _row_reduce(operands, [0] * len(operands), [lax.add] * len(operands))
    new_lo, new_cnt_lo = lo, cnt_lo
    for mid, g, cnt in zip(mids, sums[0::2], sums[1::2]):  # G falls with t: the last G > c wins
        new_lo, new_cnt_lo = jnp.where(g > c, mid, new_lo), jnp.where(g > c, cnt, new_cnt_lo)
    new_hi, new_cnt_hi, new_g_hi = hi, cnt_hi, g_hi
    for mid, g, cnt in reversed(list(zip(mids, sums[0::2], sums[1::2]))):  # the first G <= c wins
        fits = g <= c
        new_hi = jnp.where(fits, mid, new_hi)
        new_cnt_hi, new_g_hi = jnp.where(fits, cnt, new_cnt_hi), jnp.where(fits, g, new_g_hi)
    return new_lo, new_hi, new_cnt_lo, new_cnt_hi, new_g_hi


def _narrow_loop(p: jnp.ndarray, c: float, state, max_steps: int | None = None):
    """Steps until every row is finished (or max_steps steps)."""

    def cond(carry):
        i, st = carry
        more = jnp.any(_unfinished(st))
        return more if max_steps is None else more & (i < max_steps)

    return lax.while_loop(cond, lambda carry: (carry[0] + 1, _narrow_step(p, c, carry[1])), (0, state))[1]


def _narrow_brackets(p: jnp.ndarray, c: float, state):
    """Runs the K1 search to the end. Most rows finish within ``_FULL_STEPS`` steps; then the
    unfinished rows (up to a quarter of the batch) are gathered and finished alone, so the last
    steps cost a fraction of a pass; any rows left over finish on the whole batch."""
    bsz = p.shape[0]
    state = _narrow_loop(p, c, state, _FULL_STEPS)
    cap = bsz // 4
    if cap >= 16:
        rows = jnp.nonzero(_unfinished(state), size=cap, fill_value=bsz)[0]
        valid = rows < bsz
        safe = jnp.where(valid, rows, 0)
        sub = _narrow_loop(p[safe], c, tuple(x[safe] for x in state))
        state = tuple(x.at[jnp.where(valid, rows, bsz)].set(y, mode="drop") for x, y in zip(state, sub))
    return _narrow_loop(p, c, state)


def _benign_top_set(p: jnp.ndarray, r: jnp.ndarray, c: float):
    """Finds each row's top-K1 set, K1 = K(p, c), without sorting the row.

    The K1 most probable classes are the classes with p >= t for a threshold t, plus possibly the
    first few (by index) of a group of classes tied at the next value. A ``_WAYS``-ary search on the
    integer view of p (whose order is p's) narrows, row by row, a bracket [lo, hi) with
    G(hi) <= c < G(lo), G(t) = sum of p over the classes with p >= t, until the bracket holds at
    most two classes or a single (tied) value; one more pass finds which of them fit. Each step is
    one pass over the rows that evaluates G and the class counts at ``_WAYS - 1`` thresholds (a
    variadic reduction: on the CPU hardly dearer than one sum); six or seven steps finish a
    50,000 x 1,000 batch.

    Returns (k1, s, member): K1 (B,), S = sum of r over the top-K1 classes (B,), and a function that
    tells, for class indices (B, M), whether each is in the top-K1 set (bool (B, M)).
    """
    bsz, n = p.shape
    dt = p.dtype
    add, mx, mn = lax.add, lax.max, lax.min
    total, pmin, pmax = jnp.sum(p, axis=-1), jnp.min(p, axis=-1), jnp.max(p, axis=-1)  # fast, unlike one variadic pass
    everything = total <= c  # the whole row fits: K1 = N
    vmin, vmax = _int_view(pmin), _int_view(pmax)
    state = (
        vmin,
        jnp.where(everything, vmin, vmax + 1),
        jnp.full((bsz,), n, dt),  # classes with p >= lo (counts are exact in floating point)
        jnp.where(everything, n, 0).astype(dt),  # classes with p >= hi
        jnp.where(everything, total, 0).astype(dt),  # G(hi)
    )

    lo, hi, cnt_lo, cnt_hi, g_hi = _narrow_brackets(p, c, state)
    t_lo, t_hi = _float_view(lo, dt), _float_view(hi, dt)

    # One more pass: S over the classes above the bracket; the bracket's largest p (with its r)
    # and smallest p.
    above = p >= t_hi[:, None]
    inside = (p >= t_lo[:, None]) & ~above

    def pick(x, y):  # (sum, max p with its r, min p)
        bigger = y[1] > x[1]
        return x[0] + y[0], jnp.where(bigger, y[1], x[1]), jnp.where(bigger, y[2], x[2]), lax.min(x[3], y[3])

    s_above, w_max, r_max, w_min = lax.reduce(
        (jnp.where(above, r, 0), jnp.where(inside, p, -1), r, jnp.where(inside, p, np.inf)),
        tuple(np.asarray(v, dt) for v in (0, -1, 0, np.inf)),
        pick,
        (1,),
    )
    # The bracket holds g <= 2 classes or g classes tied at one value. Since G(lo) > c, at most
    # g - 1 of them fit: of two distinct classes, the larger if G(hi) + its p <= c; of g tied at
    # w, the first j = floor((c - G(hi)) / w) by index (tied probabilities come from equal
    # logits, so each adds the same r to S).
    g = (cnt_lo - cnt_hi).astype(jnp.int32)
    tied = (w_max == w_min) & (g > 1)
    j_ties = jnp.floor((c - g_hi) / jnp.where(w_max > 0, w_max, 1)).astype(jnp.int32)
    j_ties = jnp.where(w_max > 0, j_ties, g)  # classes with p == 0 cost nothing
    j_two = (g_hi + w_max <= c).astype(jnp.int32)
    j = jnp.clip(jnp.where(tied, j_ties, j_two), 0, jnp.maximum(g - 1, 0))
    # The clamp K1 >= 1: when nothing fits (p_(1) > c), the top class alone: the bracket's first.
    j = jnp.where(cnt_hi == 0, jnp.maximum(j, 1), j)
    k1 = cnt_hi.astype(jnp.int32) + j
    s = s_above + jnp.where(j > 0, j * r_max, 0)
    partial = tied & (j > 0) & (j < g)  # part of a tied group is in

    def member(idx: jnp.ndarray) -> jnp.ndarray:
        p_idx = jnp.take_along_axis(p, idx, axis=-1)
        in_bracket = (p_idx >= t_lo[:, None]) & (p_idx < t_hi[:, None])
        whole = (j >= g)[:, None] | (~tied & (j > 0))[:, None] & (p_idx == w_max[:, None])
        chosen = (p_idx >= t_hi[:, None]) | (in_bracket & whole)

        def tie_rank(_):  # (rare) recomputes the bracket so the common path never stores it
            group = (p >= t_lo[:, None]) & (p < t_hi[:, None]) & partial[:, None]
            before = jnp.cumsum(group, axis=-1, dtype=jnp.int32) - group  # tied classes before each
            rank = jnp.take_along_axis(before, idx, axis=-1)
            return jnp.take_along_axis(group, idx, axis=-1) & (rank < j[:, None])

        in_ties = lax.cond(jnp.any(partial), tie_rank, lambda _: jnp.zeros(idx.shape, bool), None)
        return chosen | in_ties

    return k1, s, member


def _ndcg_batch(b: jnp.ndarray, a: jnp.ndarray, ks: tuple[int, ...], cb: float, ca: float, relevance: str):
    kmax = max(ks)
    pb, pa = jax.nn.softmax(b, axis=-1), jax.nn.softmax(a, axis=-1)
    r = b if relevance == "logit" else pb
    pb_top, ib_top = lax.top_k(pb, kmax)  # benign ranking, first kmax ranks
    pa_top, ia_top = lax.top_k(pa, kmax)  # the other image's ranking
    k1, s, member = _benign_top_set(pb, r, cb)
    # min(K2, kmax) is all that NDCG@k with k <= kmax needs; the top-kmax prefix gives it exactly.
    k2 = jnp.maximum(1, jnp.sum(jnp.cumsum(pa_top, axis=-1) <= ca, axis=-1))
    ranks = jnp.arange(kmax)
    ra_rel = jnp.take_along_axis(r, ia_top, axis=-1) / s[:, None]
    ra_sorted = jnp.where((ranks < k2[:, None]) & member(ia_top), ra_rel, 0)
    disc = _discounts(kmax, b.dtype)
    gain_a = jnp.cumsum((2.0**ra_sorted - 1) * disc, axis=-1)
    ks_ = jnp.asarray(ks)
    at_a = jnp.minimum(ks_[None, :], k2[:, None]) - 1
    return jnp.take_along_axis(gain_a, at_a, axis=-1) / _ideal_dcg(pb, r, k1, s, kmax)[:, None]


def _benign_dcg(r_sorted: jnp.ndarray, k1: jnp.ndarray, s: jnp.ndarray) -> jnp.ndarray:
    """DCG_K1(b) (eqs. 5-6) from r in the benign ranking order (B, M), M >= max K1."""
    ranks = jnp.arange(r_sorted.shape[-1])
    rb = jnp.where(ranks < k1[:, None], r_sorted / s[:, None], 0)
    return jnp.sum((2.0**rb - 1) * _discounts(r_sorted.shape[-1], r_sorted.dtype), axis=-1)


def _ideal_dcg(pb: jnp.ndarray, r: jnp.ndarray, k1: jnp.ndarray, s: jnp.ndarray, kmax: int) -> jnp.ndarray:
    """IDCG = DCG_K1(b), the normaliser of every NDCG@k. K1 can exceed the largest k asked for:
    the benign top ``_IDCG_PREFIX`` ranks (a partial top-k) serve when every row's K1 fits, a full
    sort of the rows otherwise."""
    n = pb.shape[-1]
    m = min(n, max(kmax, _IDCG_PREFIX))

    def prefix(_):
        _, idx = lax.top_k(pb, m)
        return _benign_dcg(jnp.take_along_axis(r, idx, axis=-1), k1, s)

    def full(_):
        idx = jnp.argsort(-pb, axis=-1, stable=True)
        return _benign_dcg(jnp.take_along_axis(r, idx, axis=-1), k1, s)

    if m == n:
        return prefix(None)
    return lax.cond(jnp.all(k1 <= m), prefix, full, None)


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
        largest k: k <= 5 needs no sort; k = N sorts every row (timings: docs/defense.md).
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
    if getattr(logits, "ndim", 0) == 2:
        validation.check_classes(labels, batch=logits.shape[0], num_classes=logits.shape[1], where="hbjax.metrics.topk_correct")
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


class Distances(NamedTuple):
    """The L2 and Linf distances (B,) of a batch from another (unpack as ``l2, linf = ...``)."""

    l2: jnp.ndarray
    linf: jnp.ndarray


def distances(x: jnp.ndarray, y: jnp.ndarray) -> Distances:
    """(l2, linf): the (B,) L2 and Linf distances of each y[i] from x[i] (the one distance function
    of the library: the attacks' results and the evaluation's columns use it)."""
    return Distances(l2_distance(x, y), linf_distance(x, y))
