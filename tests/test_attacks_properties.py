"""Properties every attack must have, over random small networks and inputs (hypothesis): results
in [0, 1] and inside the eps-ball, the reported success and distances true of x_adv, failures of
minimisation attacks returned as x; the common calling convention; clear errors on bad input."""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hbjax import attacks
from tests._attack_models import small_cnn, tiny_mlp

SHAPE = (4, 4, 3)
CLASSES = 5
BATCH = 6
PROPERTY = settings(
    deadline=None, max_examples=12, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
FEW = settings(
    deadline=None, max_examples=4, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
PLAIN = ("fgsm", "pgd", "carlini_wagner_l2", "lbfgs", "boundary")


def problem(seed: int, scale: float = 3.0):
    """A random network, a batch in [0, 1] (some pixels exactly 0 or 1), its predictions as labels
    and random other classes as targets."""
    k_model, k_x, k_edge, k_t = jax.random.split(jax.random.key(seed), 4)
    fn = tiny_mlp(k_model, SHAPE, classes=CLASSES, scale=scale)
    x = jax.random.uniform(k_x, (BATCH, *SHAPE))
    edge = jax.random.randint(k_edge, x.shape, 0, 8)
    x = jnp.where(edge == 0, 0.0, jnp.where(edge == 1, 1.0, x))
    labels = jnp.argmax(fn(x), -1).astype(jnp.int32)
    targets = ((labels + jax.random.randint(k_t, labels.shape, 1, CLASSES)) % CLASSES).astype(jnp.int32)
    return fn, x, labels, targets


def check_result(fn, x, classes, targeted, r):
    """The invariants of every AttackResult."""
    x_adv = np.asarray(r.x_adv)
    assert r.x_adv.shape == x.shape and r.x_adv.dtype == x.dtype
    assert np.all(np.isfinite(x_adv))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    d = (x_adv - np.asarray(x)).reshape(x.shape[0], -1)
    np.testing.assert_allclose(np.asarray(r.l2), np.linalg.norm(d, axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(r.linf), np.abs(d).max(axis=1), rtol=1e-5, atol=1e-7)
    logits = fn(r.x_adv)
    pred = np.asarray(jnp.argmax(logits, -1))
    expected = pred == np.asarray(classes) if targeted else pred != np.asarray(classes)
    # away from the decision boundary (where float rounding of another evaluation can decide)
    clear = np.abs(np.asarray(attacks.margin(logits, classes, targeted))) > 1e-4
    np.testing.assert_array_equal(np.asarray(r.success)[clear], expected[clear])
    assert r.success.shape == (x.shape[0],) and r.success.dtype == jnp.bool_
    assert int(r.model_calls) >= 1


def check_ball(r, eps, norm):
    if norm == "linf":
        assert float(jnp.max(r.linf)) <= eps + 1e-6
    else:
        assert float(jnp.max(r.l2)) <= eps * (1 + 1e-5) + 1e-6


# ------------------------------------------------------------------------------------ properties
@PROPERTY
@given(
    seed=st.integers(0, 2**31 - 1),
    eps=st.floats(0.0, 0.5),
    norm=st.sampled_from(["linf", "l2"]),
    loss=st.sampled_from(["ce", "margin"]),
    targeted=st.booleans(),
    random_start=st.booleans(),
    steps=st.sampled_from([0, 2]),
    restarts=st.integers(1, 2),
)
def test_pgd_stays_in_the_box_and_the_ball(seed, eps, norm, loss, targeted, random_start, steps, restarts):
    fn, x, labels, targets = problem(seed)
    r = attacks.pgd(
        fn, x, labels, jax.random.key(seed), targeted=targeted, targets=targets if targeted else None,
        eps=eps, norm=norm, steps=steps, step_size=eps / 2, random_start=random_start,
        restarts=restarts, loss=loss, unroll=2,
    )  # fmt: skip
    check_result(fn, x, targets if targeted else labels, targeted, r)
    check_ball(r, eps, norm)
    assert int(r.model_calls) == restarts * steps + (restarts if restarts > 1 else 0) + 1


@PROPERTY
@given(
    seed=st.integers(0, 2**31 - 1),
    eps=st.floats(0.0, 1.0),
    norm=st.sampled_from(["linf", "l2"]),
    targeted=st.booleans(),
)
def test_fgsm_stays_in_the_box_and_the_ball(seed, eps, norm, targeted):
    fn, x, labels, targets = problem(seed)
    r = attacks.fgsm(
        fn, x, labels, jax.random.key(0), targeted=targeted, targets=targets if targeted else None,
        eps=eps, norm=norm,
    )  # fmt: skip
    check_result(fn, x, targets if targeted else labels, targeted, r)
    check_ball(r, eps, norm)


def check_minimization(fn, x, classes, targeted, r):
    """Minimisation attacks: invariants, and x itself where they fail."""
    check_result(fn, x, classes, targeted, r)
    failed = ~np.asarray(r.success)
    np.testing.assert_array_equal(np.asarray(r.x_adv)[failed], np.asarray(x)[failed])


@FEW
@given(seed=st.integers(0, 2**31 - 1), targeted=st.booleans(), confidence=st.sampled_from([0.0, 0.5]))
def test_carlini_wagner_results_are_valid(seed, targeted, confidence):
    fn, x, labels, targets = problem(seed)
    classes = targets if targeted else labels
    r = attacks.carlini_wagner_l2(
        fn, x, labels, jax.random.key(0), targeted=targeted, targets=targets if targeted else None,
        binary_search_steps=3, steps=20, learning_rate=0.05, confidence=confidence, unroll=2,
    )  # fmt: skip
    check_minimization(fn, x, classes, targeted, r)
    # success needs the margin kappa (up to float error at the boundary)
    m = np.asarray(attacks.margin(fn(r.x_adv), classes, targeted))
    assert np.all(m[np.asarray(r.success)] >= confidence - 1e-4)


@FEW
@given(seed=st.integers(0, 2**31 - 1), targeted=st.booleans())
def test_lbfgs_results_are_valid(seed, targeted):
    fn, x, labels, targets = problem(seed)
    r = attacks.lbfgs(
        fn, x, labels, jax.random.key(0), targeted=targeted, targets=targets if targeted else None,
        search_steps=4, steps=5, memory=3,
    )  # fmt: skip
    check_minimization(fn, x, targets if targeted else labels, targeted, r)


@FEW
@given(seed=st.integers(0, 2**31 - 1))
def test_boundary_results_are_valid_and_approach_x(seed):
    fn, x, labels, _ = problem(seed)
    key = jax.random.key(seed)
    start, found, _ = attacks.blended_noise_start(
        attacks.as_pytree_fn(fn), x, labels, jax.random.split(key)[0], targeted=False
    )
    r = attacks.boundary(fn, x, labels, key, steps=40, update_stats_every=5, init_trials=1000)
    check_minimization(fn, x, labels, False, r)
    np.testing.assert_array_equal(np.asarray(r.success), np.asarray(found))
    start_l2 = np.linalg.norm(np.asarray(start - x).reshape(BATCH, -1), axis=1)
    ok = np.asarray(found)
    assert np.all(np.asarray(r.l2)[ok] <= start_l2[ok] + 1e-5)


# --------------------------------------------------------------------------- specific behaviour
def test_pgd_with_zero_eps_returns_x():
    fn, x, labels, _ = problem(1)
    r = attacks.pgd(fn, x, labels, jax.random.key(0), eps=0.0, steps=3)
    np.testing.assert_array_equal(np.asarray(r.x_adv), np.asarray(x))
    assert not np.any(np.asarray(r.success))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_unrolled_and_lax_loops_agree(norm):
    fn, x, labels, _ = problem(2)
    kw = dict(eps=0.2 if norm == "linf" else 1.0, norm=norm, steps=7, step_size=0.05)
    a = attacks.pgd(fn, x, labels, jax.random.key(3), loop="unroll", unroll=3, **kw)
    b = attacks.pgd(fn, x, labels, jax.random.key(3), loop="lax", **kw)
    np.testing.assert_allclose(np.asarray(a.x_adv), np.asarray(b.x_adv), atol=1e-6)
    cw = dict(binary_search_steps=2, steps=30, learning_rate=0.05)
    a = attacks.carlini_wagner_l2(fn, x, labels, jax.random.key(0), loop="unroll", **cw)
    b = attacks.carlini_wagner_l2(fn, x, labels, jax.random.key(0), loop="lax", **cw)
    np.testing.assert_array_equal(np.asarray(a.success), np.asarray(b.success))
    np.testing.assert_allclose(np.asarray(a.l2), np.asarray(b.l2), rtol=1e-4, atol=1e-6)


def test_targeted_attacks_reach_their_targets_on_a_small_network():
    fn, x, labels, targets = problem(5)
    r = attacks.pgd(fn, x, labels, jax.random.key(0), targeted=True, targets=targets, eps=1.0, steps=30, step_size=0.1)
    assert np.all(np.asarray(r.success))
    r = attacks.carlini_wagner_l2(
        fn, x, labels, jax.random.key(0), targeted=True, targets=targets, binary_search_steps=6,
        steps=100, learning_rate=0.05,
    )  # fmt: skip
    assert np.all(np.asarray(r.success))


def test_restarts_keep_a_successful_run():
    fn, x, labels, _ = problem(7)
    one = attacks.pgd(fn, x, labels, jax.random.key(0), eps=0.05, steps=3, restarts=1)
    many = attacks.pgd(fn, x, labels, jax.random.key(0), eps=0.05, steps=3, restarts=4)
    # the first restart uses the same start as the single run, so success can only grow
    assert np.all(np.asarray(many.success) >= np.asarray(one.success))


def test_results_follow_the_input_dtype():
    with jax.enable_x64(True):
        fn, x, labels, _ = problem(3)
        x = x.astype(jnp.float64)
        for r in (
            attacks.pgd(fn, x, labels, jax.random.key(0), eps=0.1, steps=1),
            attacks.carlini_wagner_l2(fn, x, labels, jax.random.key(0), binary_search_steps=1, steps=1),
        ):
            assert r.x_adv.dtype == jnp.float64 and r.l2.dtype == jnp.float64


def test_logits_functions_are_traced_with_their_parameters():
    w = jnp.ones((4, 2))
    part = functools.partial(lambda w, x: x @ w, w)
    tree = attacks.as_pytree_fn(part)
    assert isinstance(tree, jax.tree_util.Partial) and len(jax.tree.leaves(tree)) == 1
    static = attacks.as_pytree_fn(functools.partial(lambda s, x: x * s, "not an array"))
    assert jax.tree.leaves(static) == []
    model = small_cnn(jax.random.key(0), widths=(2,), size=4)
    a, b = attacks.model_logits(model), attacks.model_logits(model)
    assert jax.tree.structure(a) == jax.tree.structure(b)  # one compilation for both
    with pytest.raises(TypeError, match="callable"):
        attacks.as_pytree_fn(3)


# -------------------------------------------------------------------------------- conventions
def test_registry_and_aliases():
    assert set(attacks.names()) == {
        "fgsm", "pgd", "carlini_wagner_l2", "lbfgs", "boundary", "adaptive_heatmap", "bpda_eot",
        "apgd", "apgd_t", "square", "autoattack", "autoattack_rand",
    }  # fmt: skip
    assert attacks.get("apgd_ce") is attacks.apgd
    assert attacks.get("cw") is attacks.carlini_wagner_l2
    assert attacks.get("bpda") is attacks.bpda_eot
    with pytest.raises(KeyError, match="unknown attack 'nope'"):
        attacks.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        attacks.register("pgd", attacks.pgd)


@pytest.mark.parametrize("name", sorted(attacks.ATTACKS))
def test_every_attack_follows_the_calling_convention(name):
    fn = attacks.get(name)
    params = list(inspect.signature(fn).parameters.values())
    first = "model" if attacks.metadata(name)["needs_model"] else "logits_fn"
    assert [p.name for p in params[:4]] == [first, "x", "labels", "key"]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:4])
    rest = params[4:]
    assert all(p.kind is p.KEYWORD_ONLY for p in rest), "hyper-parameters are keyword-only"
    names = {p.name for p in rest}
    assert {"targeted", "targets"} <= names and "rng" not in names
    assert inspect.signature(fn).parameters["targeted"].default is False
    assert fn.__doc__ and "References" in fn.__doc__


# ------------------------------------------------------------------------------------- errors
def _call(name, fn, x, labels, **kw):
    defaults = dict(
        fgsm={}, pgd=dict(steps=1), carlini_wagner_l2=dict(binary_search_steps=1, steps=1),
        lbfgs=dict(search_steps=1, steps=1), boundary=dict(steps=1, init_trials=2),
    )  # fmt: skip
    return attacks.get(name)(fn, x, labels, jax.random.key(0), **{**defaults[name], **kw})


@pytest.mark.parametrize("name", PLAIN)
def test_bad_inputs_are_clear_errors(name):
    fn, x, labels, targets = problem(0)
    with pytest.raises(ValueError, match="must be finite; found nan"):
        _call(name, fn, x.at[0, 0, 0, 0].set(jnp.nan), labels)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _call(name, fn, x * 2.0, labels)
    with pytest.raises(ValueError, match="labels must have shape"):
        _call(name, fn, x, labels[:-1])
    with pytest.raises(ValueError, match="floating point"):
        _call(name, fn, (x * 255).astype(jnp.uint8), labels)
    with pytest.raises(ValueError, match="targeted=True needs targets"):
        _call(name, fn, x, labels, targeted=True)
    with pytest.raises(ValueError, match="targeted=False"):
        _call(name, fn, x, labels, targets=targets)
    with pytest.raises(ValueError, match="integer class indices"):
        _call(name, fn, x, labels.astype(jnp.float32))
    if name != "fgsm":
        with pytest.raises(ValueError, match="loop must be one of"):
            _call(name, fn, x, labels, loop="while")
    with pytest.raises(TypeError):
        _call(name, fn, x, labels, not_a_parameter=1)


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_bad_hyper_parameters_are_clear_errors(name):
    fn, x, labels, _ = problem(0)
    with pytest.raises(ValueError, match="eps must be"):
        _call(name, fn, x, labels, eps=-0.1)
    with pytest.raises(ValueError, match="eps must be"):
        _call(name, fn, x, labels, eps=float("nan"))
    with pytest.raises(ValueError, match="norm must be one of"):
        _call(name, fn, x, labels, norm="l1")
    with pytest.raises(ValueError, match="loss must be one of"):
        _call(name, fn, x, labels, loss="hinge")


def test_more_bad_hyper_parameters():
    fn, x, labels, _ = problem(0)
    with pytest.raises(ValueError, match="steps must be an integer"):
        _call("pgd", fn, x, labels, steps=-1)
    with pytest.raises(ValueError, match="step_size"):
        _call("pgd", fn, x, labels, step_size=-1.0)
    with pytest.raises(ValueError, match="restarts"):
        _call("pgd", fn, x, labels, restarts=0)
    with pytest.raises(ValueError, match="learning_rate"):
        _call("carlini_wagner_l2", fn, x, labels, learning_rate=0.0)
    with pytest.raises(ValueError, match="confidence"):
        _call("carlini_wagner_l2", fn, x, labels, confidence=-1.0)
    with pytest.raises(ValueError, match="initial_const"):
        _call("lbfgs", fn, x, labels, initial_const=0.0)
    with pytest.raises(ValueError, match="starting_points"):
        _call("boundary", fn, x, labels, targeted=True, targets=labels)
    with pytest.raises(ValueError, match="not adversarial"):
        _call("boundary", fn, x, labels, starting_points=x)
    with pytest.raises(ValueError, match="logits_fn must return"):
        _call("pgd", lambda z: fn(z)[:, 0], x, labels)
