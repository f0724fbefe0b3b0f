"""NDCG (eqs. 3-7 as DESIGN.md defines them), top-k accuracy and distances."""

from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hbjax
from hbjax import metrics

LOG2_3 = math.log2(3)


def gain(r: float) -> float:
    return 2.0**r - 1.0


def both(b, a, **kw):
    """The fast and the reference implementation, checked to agree."""
    fast = np.asarray(metrics.ndcg(b, a, **kw))
    ref = np.asarray(metrics.ndcg_reference(b, a, **kw))
    np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-6)
    return fast


# --------------------------------------------------------------------------------------------------
# hand-worked examples


@pytest.mark.parametrize("relevance", ["logit", "prob"])
def test_identical_outputs_score_one_from_k1_on(relevance):
    rng = np.random.default_rng(0)
    b = rng.normal(size=(6, 20)).astype(np.float32) + 5.0
    ks = tuple(range(1, 21))
    out = both(b, b, ks=ks + (None,), relevance=relevance)
    k1 = coverage_counts(b, 0.99)
    assert np.all(k1 > 1)  # the example needs K1 > 1: there NDCG@1 of b itself is below 1
    for row, k in zip(out, k1):
        np.testing.assert_allclose(row[k - 1 :], 1.0, rtol=1e-6)  # k >= K1, and eq. 7
        assert np.all(row[: k - 1] < 1.0 - 1e-4)  # DCG_k(b) / DCG_K1(b) for k < K1


def test_disjoint_top_sets_score_zero():
    # b: p = (.5, .3, .15, .03, .015, .005); cumsums .5 .8 .95 .98 .995 1 -> K1 = 4 (classes 0-3).
    pb = np.array([0.5, 0.3, 0.15, 0.03, 0.015, 0.005])
    # a: p = (.001 x 4, .6, .396); cumsums .6 .996 -> K2 = 1, class 4, outside b's top 4.
    pa = np.array([0.001, 0.001, 0.001, 0.001, 0.6, 0.396])
    b, a = np.log(pb)[None].astype(np.float32), np.log(pa)[None].astype(np.float32)
    for relevance in ("logit", "prob"):
        out = both(b, a, ks=(1, 2, 3, 4, 5, None), relevance=relevance)
        np.testing.assert_array_equal(out, 0.0)


def test_swap_of_the_top_two():
    # b = (3, 1, -1): p = (.8668, .1173, .0159), cumsums .8668 .9841 -> K1 = 2; R_b = (3/4, 1/4).
    # a swaps classes 0 and 1: same probabilities, K2 = 2, a's ranking (1, 0).
    b = np.array([[3.0, 1.0, -1.0]], np.float32)
    a = np.array([[1.0, 3.0, -1.0]], np.float32)
    r1, r2 = 0.75, 0.25
    idcg = gain(r1) + gain(r2) / LOG2_3  # DCG_K1(b), the one normaliser (eq. 6)
    at1 = gain(r2) / idcg
    at2 = (gain(r2) + gain(r1) / LOG2_3) / idcg
    out = both(b, a, ks=(1, 2, 3, 5, None))
    np.testing.assert_allclose(out[0], [at1, at2, at2, at2, at2], rtol=1e-5)
    # 0.1892 / (0.6818 + 0.1892 / log2 3) = 0.2362; at k = 2: (0.1892 + 0.6818 / log2 3) / 0.8012 = 0.7731
    assert 0.236 < at1 < 0.2365 and 0.773 < at2 < 0.7735
    np.testing.assert_allclose(both(b, b, ks=(1, 2))[0], [gain(r1) / idcg, 1.0], rtol=1e-5)


def test_swap_with_prob_relevance():
    b = np.array([[3.0, 1.0, -1.0]], np.float32)
    a = np.array([[1.0, 3.0, -1.0]], np.float32)
    p = np.exp([3.0, 1.0, -1.0]) / np.exp([3.0, 1.0, -1.0]).sum()
    r1, r2 = p[0] / (p[0] + p[1]), p[1] / (p[0] + p[1])
    idcg = gain(r1) + gain(r2) / LOG2_3
    at2 = (gain(r2) + gain(r1) / LOG2_3) / idcg
    out = both(b, a, ks=(1, 2), relevance="prob")
    np.testing.assert_allclose(out[0], [gain(r2) / idcg, at2], rtol=1e-5)


def test_clamp_when_the_top_class_holds_more_than_coverage():
    # b = (10, 0, 0): p_(1) = 0.99991 > 0.99, so the formula alone gives K1 = 0; the clamp gives 1.
    b = np.array([[10.0, 0.0, 0.0]] * 3, np.float32)
    a = np.array(
        [
            [10.0, 3.0, 0.0],  # same top class: 1 at every k
            [0.0, 10.0, 0.0],  # another top class, K2 = 1: 0 at every k
            [5.5, 6.0, 2.0],  # p = (.3733, .6154, .0113): K2 = 2 > K1, b's class second
        ],
        np.float32,
    )
    out = both(b, a, ks=(1, 2, 3, None))
    np.testing.assert_allclose(out[0], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(out[1], 0.0)
    # R_b = (1, 0, 0); IDCG = DCG_K1(b) = gain(1) = 1.
    # a ranks class 1 (R 0) then class 0 (R 1): DCG_a@1 = 0, DCG_a@2 = 1 / log2(3).
    np.testing.assert_allclose(out[2], [0.0, 1 / LOG2_3, 1 / LOG2_3, 1 / LOG2_3], rtol=1e-5)


def test_k2_larger_than_k1_counts_only_benign_top_classes():
    # b = (3, 1, 0, -5): p = (.8438, .1142, .0420, .0003), cumsums .8438 .9580 .9997 -> K1 = 2,
    # R_b = (3/4, 1/4, 0, 0).
    b = np.array([[3.0, 1.0, 0.0, -5.0]], np.float32)
    # a: p = (.2, .3, .4, .1), ranking 2, 1, 0, 3, cumsums .4 .7 .9 1 -> K2 = 3 > K1.
    a = np.log(np.array([[0.2, 0.3, 0.4, 0.1]])).astype(np.float32)
    dcg_a = np.cumsum([0.0, gain(0.25) / LOG2_3, gain(0.75) / 2.0, 0.0])
    ideal = gain(0.75) + gain(0.25) / LOG2_3  # DCG_K1(b), K1 = 2
    out = both(b, a, ks=(1, 2, 3, 4))
    np.testing.assert_allclose(out[0], dcg_a / ideal, rtol=1e-5)
    assert out[0, 0] == 0.0


def test_coverage_sets_k():
    # With C = 0.5 both K are 1: only the top classes matter.
    b = np.array([[3.0, 1.0, -1.0]], np.float32)
    a = np.array([[3.0, -1.0, 1.0]], np.float32)
    np.testing.assert_allclose(both(b, a, ks=(1, 2, 3), coverage=0.5)[0], 1.0, rtol=1e-6)
    # With the default 0.99, b's K1 = 2 and a misses class 1 in its top 2.
    out = both(b, a, ks=(2,))
    assert out[0, 0] < 1.0


def test_full_ndcg_is_k_equal_n():
    rng = np.random.default_rng(1)
    b = rng.normal(size=(5, 30)).astype(np.float32) * 2 + 8
    a = b + rng.normal(size=b.shape).astype(np.float32)
    out = both(b, a, ks=(None, 30, 1000))
    np.testing.assert_allclose(out[:, 0], out[:, 1], rtol=1e-6)
    np.testing.assert_allclose(out[:, 0], out[:, 2], rtol=1e-6)


def test_equal_logits_many_ties():
    # 50 equal logits: p = 1/50, K1 = 49 (classes 0-48 by index); R_b = 1/49 on each. K1 lies past
    # the ranks the fast version reads with a partial top-k: its IDCG comes from a full sort.
    b = np.ones((1, 50), np.float32)
    a = np.ones((1, 50), np.float32)
    a[0, 49] = 6.0  # a ranks class 49 (outside b's top set) first, then classes 0, 1, ...
    g = gain(1 / 49)
    disc = 1 / np.log2(np.arange(2, 52))
    idcg = np.sum(g * disc[:49])
    dcg_a = np.cumsum(np.r_[0.0, g * disc[1:5]])
    out = both(b, a, ks=(1, 2, 3, 4, 5))
    np.testing.assert_allclose(out[0], dcg_a / idcg, rtol=1e-5)
    np.testing.assert_allclose(both(b, b, ks=(49, 50, None))[0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(both(b, b, ks=(5,))[0], np.sum(g * disc[:5]) / idcg, rtol=1e-5)


def coverage_counts(logits: np.ndarray, c: float) -> np.ndarray:
    """K(p, C) per row in float64 (eq. 3's K, clamped to >= 1)."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.maximum(1, np.sum(np.cumsum(-np.sort(-p, axis=-1), axis=-1) <= c, axis=-1))


def near_coverage(logits: np.ndarray, c: float, tol: float = 2e-6) -> np.ndarray:
    """Rows whose sorted cumulative probabilities pass within tol of c: there K depends on the
    summation order of float32 sums, so two correct implementations may differ by one."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    cs = np.cumsum(-np.sort(-p, axis=-1), axis=-1)
    return np.any(np.abs(cs - c) < tol, axis=-1)


def test_agrees_with_reference_on_random_logits():
    rng = np.random.default_rng(2)
    for scale in (0.5, 2.0, 8.0):
        b = (rng.normal(size=(200, 100)) * scale + 4 * scale).astype(np.float32)
        a = (b + rng.normal(size=b.shape) * scale).astype(np.float32)
        for kw in (dict(ks=(1, 2, 3, 4, 5, 17, None)), dict(ks=(1, 5, None), relevance="prob", coverage=(0.9, 0.95))):
            cb, ca = kw.get("coverage", (0.99, 0.99))
            keep = ~(near_coverage(b, cb) | near_coverage(a, ca))
            assert keep.mean() > 0.9
            fast = np.asarray(metrics.ndcg(b, a, **kw))
            ref = np.asarray(metrics.ndcg_reference(b, a, **kw))
            np.testing.assert_allclose(fast[keep], ref[keep], rtol=1e-5, atol=1e-6)


def test_agrees_with_reference_on_a_large_batch():
    # Enough rows that the search finishes its slowest rows on a gathered subset.
    rng = np.random.default_rng(5)
    b = (rng.normal(size=(2000, 300)) * 2 + 8).astype(np.float32)
    a = (b + rng.normal(size=b.shape)).astype(np.float32)
    keep = ~(near_coverage(b, 0.99) | near_coverage(a, 0.99))
    fast = np.asarray(metrics.ndcg(b, a, ks=(1, 3, 5)))
    ref = np.asarray(metrics.ndcg_reference(b, a, ks=(1, 3, 5)))
    # S sums ~250 logits in float32, in another order than the reference: relative 1e-5 apart
    np.testing.assert_allclose(fast[keep], ref[keep], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        metrics.ndcg(b, a, ks=(1, 3, 5), relevance="prob")[keep],
        metrics.ndcg_reference(b, a, ks=(1, 3, 5), relevance="prob")[keep], rtol=1e-5, atol=1e-6,
    )


def test_float64_follows_input():
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        b = rng.normal(size=(20, 40)) + 6
        a = b + rng.normal(size=b.shape)
        out = metrics.ndcg(jnp.asarray(b), jnp.asarray(a))
        assert out.dtype == jnp.float64
        np.testing.assert_allclose(out, metrics.ndcg_reference(b, a), rtol=1e-12)


def test_negative_logits_give_documented_values():
    # relevance="logit" with negative top logits: R = l / S can be negative for mixed signs.
    b = np.array([[1.0, -0.5, -3.0]], np.float32)  # K1 = 2, S = 0.5, R = (2, -1)
    a = np.array([[-0.5, 1.0, -3.0]], np.float32)
    out = both(b, a, ks=(1, 2))
    expected = gain(-1) / (gain(2) + gain(-1) / LOG2_3)
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5)
    assert out[0, 0] < 0


def test_jit_and_vmap():
    rng = np.random.default_rng(4)
    b = jnp.asarray(rng.normal(size=(3, 8, 12)).astype(np.float32) + 5)
    a = jnp.asarray(rng.normal(size=(3, 8, 12)).astype(np.float32) + 5)
    direct = np.stack([metrics.ndcg(b[i], a[i]) for i in range(3)])
    jitted = jax.jit(lambda b, a: metrics.ndcg(b, a, ks=(1, 2, 3, 4, 5)))
    np.testing.assert_allclose(jitted(b[0], a[0]), direct[0], rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(metrics.ndcg)(b, a), direct, rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# properties

# One shape (one compilation); values with repeats and wide ranges give ties, clamps and K = N.
values = st.one_of(st.floats(-20, 20, width=32), st.sampled_from([0.0, 1.0, 8.0]))
logit_rows = st.tuples(
    hnp.arrays(np.float32, (6, 12), elements=values), hnp.arrays(np.float32, (6, 12), elements=values)
)


@settings(max_examples=60, deadline=None)
@given(logit_rows)
def test_prob_relevance_lies_in_unit_interval(pair):
    b, a = pair
    out = np.asarray(metrics.ndcg(b, a, ks=(1, 2, 3, 5, None), relevance="prob"))
    assert np.all(out >= 0.0) and np.all(out <= 1.0 + 1e-6)


@settings(max_examples=60, deadline=None)
@given(logit_rows)
def test_positive_logit_relevance_lies_in_unit_interval(pair):
    b, a = pair
    b = np.abs(b) + 0.5  # positive logits: non-negative relevances
    out = np.asarray(metrics.ndcg(b, a, ks=(1, 2, 3, 5, None)))
    assert np.all(out >= 0.0) and np.all(out <= 1.0 + 1e-6)


ALL_KS = tuple(range(1, 13))


@settings(max_examples=60, deadline=None)
@given(logit_rows)
def test_non_decreasing_in_k_and_eq7_from_k2_on(pair):
    """With non-negative relevances (p), NDCG@k rises with k and equals eq. 7 (k = N) from K2 on."""
    b, a = pair
    out = np.asarray(metrics.ndcg(b, a, ks=ALL_KS + (None,), relevance="prob"))
    assert np.all(np.diff(out[:, :-1], axis=1) >= -1e-6)
    ok = ~near_coverage(a, 0.99) & ~near_coverage(b, 0.99)
    for row, k2 in zip(out[ok], coverage_counts(a, 0.99)[ok]):
        np.testing.assert_allclose(row[k2 - 1 :], row[-1], rtol=1e-6, atol=1e-7)


@settings(max_examples=60, deadline=None)
@given(logit_rows)
def test_identical_outputs_reach_one_at_k1(pair):
    b, _ = pair
    out = np.asarray(metrics.ndcg(b, b, ks=ALL_KS + (None,), relevance="prob"))
    ok = ~near_coverage(b, 0.99)
    for row, k1 in zip(out[ok], coverage_counts(b, 0.99)[ok]):
        np.testing.assert_allclose(row[k1 - 1 :], 1.0, rtol=1e-6)
        assert np.all(row[: k1 - 1] <= 1.0 + 1e-6)


@settings(max_examples=40, deadline=None)
@given(logit_rows, st.randoms(use_true_random=False))
def test_invariant_to_batch_order(pair, rnd):
    b, a = pair
    perm = np.arange(b.shape[0])
    rnd.shuffle(perm)
    out = np.asarray(metrics.ndcg(b, a, relevance="prob"))
    np.testing.assert_array_equal(np.asarray(metrics.ndcg(b[perm], a[perm], relevance="prob")), out[perm])


# --------------------------------------------------------------------------------------------------
# bad input


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        metrics.ndcg(np.zeros((2, 10)), np.zeros((2, 9)))
    with pytest.raises(ValueError, match="same shape"):
        metrics.ndcg(np.zeros((2, 10)), np.zeros((3, 10)))
    with pytest.raises(ValueError, match=r"\(batch, classes\)"):
        metrics.ndcg(np.zeros(10), np.zeros(10))


def test_nan_logits_are_an_error():
    b = np.zeros((2, 5), np.float32)
    a = b.copy()
    a[1, 3] = np.nan
    with pytest.raises(ValueError, match="other_logits must be finite"):
        metrics.ndcg(b, a)
    with pytest.raises(ValueError, match="benign_logits must be finite"):
        metrics.ndcg(np.full((1, 3), np.inf, np.float32), np.zeros((1, 3), np.float32))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ks=(0,)), "positive int"),
        (dict(ks=(1.5,)), "positive int"),
        (dict(ks=()), "at least one"),
        (dict(coverage=0.0), r"\(0, 1\]"),
        (dict(coverage=(0.99, 1.5)), r"\(0, 1\]"),
        (dict(relevance="rank"), "relevance"),
    ],
)
def test_bad_options_are_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        metrics.ndcg(np.zeros((1, 4)), np.zeros((1, 4)), **kwargs)


def test_integer_logits_are_an_error():
    with pytest.raises(ValueError, match="floating"):
        metrics.ndcg(np.zeros((1, 4), np.int32), np.zeros((1, 4), np.int32))


# --------------------------------------------------------------------------------------------------
# accuracy and distances


def test_topk_accuracy():
    logits = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]], np.float32)
    labels = np.array([2, 0, 0])
    np.testing.assert_array_equal(metrics.topk_correct(logits, labels, k=1), [False, True, False])
    np.testing.assert_array_equal(metrics.topk_correct(logits, labels, k=2), [True, True, False])
    np.testing.assert_allclose(metrics.topk_accuracy(logits, labels, ks=(1, 2, 3, 5)), [1 / 3, 2 / 3, 1, 1])
    with pytest.raises(ValueError, match="labels"):
        metrics.topk_correct(logits, labels[:2])


def test_distances():
    x = np.zeros((2, 2, 2, 3), np.float32)
    y = x.copy()
    y[0, 0, 0, 0] = 3.0
    y[0, 1, 1, 2] = 4.0
    y[1] = 0.5
    l2, linf = d = metrics.distances(x, y)
    np.testing.assert_allclose(l2, [5.0, math.sqrt(12 * 0.25)], rtol=1e-6)
    np.testing.assert_allclose(linf, [4.0, 0.5])
    assert d.l2 is l2 and d.linf is linf
    assert hbjax.attacks.distances is metrics.distances  # one home
    with pytest.raises(ValueError, match="same shape"):
        metrics.l2_distance(x, y[:1])
