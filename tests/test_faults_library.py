"""Fault injection into the library's public entry points (hbjax.lrp, hbjax.defense,
hbjax.attacks, hbjax.metrics): every bad input is an InputError naming the problem, raised by the
one check of hbjax.validation before any work; the inputs are left as they were."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hbjax
from hbjax.errors import HbjaxError, InputError

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NUM_CLASSES = 10


@pytest.fixture(scope="module")
def model():
    return hbjax.models.load("vgg19_cifar")  # loads in a second (initialising a VGG takes longer)


def _images(n=2, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 32, 32, 3)).astype(np.float32)


def entry_points(model):
    """name -> f(x, labels): every public entry point that takes images."""
    logits_fn = hbjax.attacks.model_logits(model)
    key = jax.random.key(0)
    return {
        "lrp.relevance": lambda x, y: hbjax.lrp.relevance(model, x, y),
        "lrp.heatmap": lambda x, y: hbjax.lrp.heatmap(model, x, y, method="clrp"),
        "defense.heat_and_blur": lambda x, y: hbjax.defense.heat_and_blur(model, x, key, sigma=1.0),
        "defense.clean": lambda x, y: hbjax.defense.clean(model, x, key, sigma=(0.8, 1.2)),
        "attacks.pgd": lambda x, y: hbjax.attacks.pgd(logits_fn, x, y, key, steps=1),
        "attacks.fgsm": lambda x, y: hbjax.attacks.fgsm(logits_fn, x, y, key),
        "attacks.carlini_wagner_l2": lambda x, y: hbjax.attacks.carlini_wagner_l2(logits_fn, x, y, key, steps=1, binary_search_steps=1),
        "attacks.lbfgs": lambda x, y: hbjax.attacks.lbfgs(logits_fn, x, y[::-1], key, targeted=True, targets=y, steps=1, search_steps=1),
        "attacks.boundary": lambda x, y: hbjax.attacks.boundary(logits_fn, x, y, key, steps=1),
        "attacks.adaptive_heatmap": lambda x, y: hbjax.attacks.adaptive_heatmap(model, x, y, key, iterations=1),
        "attacks.bpda_eot": lambda x, y: hbjax.attacks.bpda_eot(model, x, y, key, steps=1, eot_samples=1),
    }  # fmt: skip


ENTRY_NAMES = [
    "lrp.relevance", "lrp.heatmap", "defense.heat_and_blur", "defense.clean", "attacks.pgd",
    "attacks.fgsm", "attacks.carlini_wagner_l2", "attacks.lbfgs", "attacks.boundary",
    "attacks.adaptive_heatmap", "attacks.bpda_eot",
]  # fmt: skip
LABELLED = [n for n in ENTRY_NAMES if n.startswith("attacks.") or n.startswith("lrp.")]


def _raises(fn, x, y, match):
    x_before = np.array(x, copy=True)
    with pytest.raises(InputError, match=match) as info:
        fn(x, y)
    assert isinstance(info.value, HbjaxError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)
    np.testing.assert_array_equal(np.asarray(x), x_before)  # nothing changed in place


def test_every_entry_point_is_covered(model):
    assert sorted(entry_points(model)) == sorted(ENTRY_NAMES)


@pytest.mark.parametrize("name", ENTRY_NAMES)
def test_nan_pixel(model, name):
    x = _images()
    x[1, 3, 4, 2] = np.nan
    _raises(entry_points(model)[name], x, np.array([0, 1], np.int32), r"must be finite; found nan at index \(1, 3, 4, 2\)")


@pytest.mark.parametrize("name", ENTRY_NAMES)
def test_values_outside_the_unit_box(model, name):
    _raises(entry_points(model)[name], _images() * 2.0, np.array([0, 1], np.int32), r"must lie in \[0, 1\]")


@pytest.mark.parametrize("name", ENTRY_NAMES)
def test_empty_batch(model, name):
    _raises(entry_points(model)[name], _images()[:0], np.zeros(0, np.int32), "empty batch")


@pytest.mark.parametrize("name", ENTRY_NAMES)
def test_unbatched_image(model, name):
    _raises(entry_points(model)[name], _images()[0], np.array([0], np.int32), "unbatched image")


@pytest.mark.parametrize("name", LABELLED)
def test_labels_outside_the_models_classes(model, name):
    _raises(entry_points(model)[name], _images(), np.array([0, NUM_CLASSES], np.int32), r"\[0, 10\)")


@SETTINGS
@given(index=st.tuples(st.integers(0, 1), st.integers(0, 31), st.integers(0, 31), st.integers(0, 2)),
       bad=st.sampled_from([np.nan, np.inf, -np.inf, -1e-3, 1.001, 255.0]))  # fmt: skip
def test_any_bad_pixel_anywhere_is_named(model, index, bad):
    x = _images()
    x[index] = bad
    fns = entry_points(model)
    for name in ("lrp.relevance", "defense.heat_and_blur", "attacks.pgd"):
        expected = "must be finite" if not np.isfinite(bad) else r"must lie in \[0, 1\]"
        _raises(fns[name], x, np.array([0, 1], np.int32), expected)


@SETTINGS
@given(label=st.one_of(st.integers(-1000, -1), st.integers(NUM_CLASSES, 10**6)))
def test_any_label_outside_the_classes_is_named(model, label):
    fns = entry_points(model)
    for name in ("lrp.relevance", "attacks.pgd"):
        _raises(fns[name], _images(), np.array([0, label], np.int32), str(label))


def test_checks_stay_out_of_traced_code(model):
    """Under jit the inputs are abstract: the entry points trace without a host round trip."""
    logits_fn = hbjax.attacks.model_logits(model)
    f = jax.jit(lambda x, y: hbjax.attacks.fgsm(logits_fn, x, y, jax.random.key(0)).x_adv)
    x, y = _images(), np.array([0, 1], np.int32)
    assert f(x, y).shape == x.shape
    g = jax.jit(lambda x: hbjax.defense.heat_and_blur(model, x, jax.random.key(0), sigma=1.0))
    assert g(x).shape == x.shape


def _logits(seed, n=3, c=NUM_CLASSES):
    return np.clip(np.random.default_rng(seed).normal(size=(n, c)), -3, 3).astype(np.float32)


@SETTINGS
@given(scale=st.floats(3.5e37, 3.4e38), seed=st.integers(0, 100), where=st.integers(0, 29))
def test_ndcg_rejects_logits_whose_softmax_overflows(scale, seed, where):
    """Finite float32 logits above max / N (here N = 10): sums of N of them may overflow."""
    b = _logits(seed)
    b.flat[where] = np.float32(scale) * (1 if where % 2 else -1)
    with pytest.raises(InputError, match="too large for a softmax"):
        hbjax.metrics.ndcg(b, _logits(seed + 1))
    with pytest.raises(InputError, match="too large for a softmax"):
        hbjax.metrics.ndcg(_logits(seed + 1), b)


@SETTINGS
@given(scale=st.floats(1e-3, 1.1e37), seed=st.integers(0, 100))
def test_ndcg_of_accepted_logits_is_finite(scale, seed):
    """What the check lets through (|logit| up to 3.3e37 here) gives a number in [0, 1]: no NaN
    from an overflow."""
    b, a = _logits(seed) * np.float32(scale), _logits(seed + 1) * np.float32(scale)
    s = np.asarray(hbjax.metrics.ndcg(b, a, relevance="prob"))
    assert np.all(np.isfinite(s)) and np.all((s >= -1e-6) & (s <= 1 + 1e-5))


@pytest.mark.parametrize("labels", [[0, 10, 1], [-1, 0, 1], [0.0, 1.0, 2.0], [0, 1]])
def test_topk_labels_outside_the_classes(labels):
    with pytest.raises(InputError, match="labels"):
        hbjax.metrics.topk_accuracy(jnp.asarray(_logits(0)), np.asarray(labels))


@pytest.mark.parametrize("bad,match", [
    (lambda b: b.at[0, 0].set(jnp.nan), "must be finite"),
    (lambda b: b.at[1, 2].set(jnp.inf), "must be finite"),
    (lambda b: b[:, :, None], r"shape \(batch, classes\)"),
    (lambda b: b.astype(jnp.int32), "floating point"),
])  # fmt: skip
def test_ndcg_bad_logits(bad, match):
    b = jnp.asarray(_logits(0))
    with pytest.raises(ValueError, match=match):
        hbjax.metrics.ndcg(bad(b), jnp.asarray(_logits(1)) if bad(b).ndim == 2 else bad(b))
