"""AutoAttack ensembles on small networks: the worst case over the attacks, the first attack that
succeeded, the cumulative robust accuracy; the sanity checks' warnings (randomised model, zero
gradients, Square beating the white-box attacks on a gradient-masked model)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hbjax import attacks
from tests._attack_models import tiny_mlp

SHAPE = (8, 8, 3)


def problem(seed=0, n=12):
    fn = tiny_mlp(jax.random.key(seed), SHAPE, classes=6)
    x = jax.random.uniform(jax.random.key(seed + 1), (n, *SHAPE))
    return fn, x, jnp.argmax(fn(x), -1).astype(jnp.int32)


def test_standard_reports_the_worst_case_and_the_first_success():
    fn, x, y = problem()
    eps = 0.004
    r = attacks.autoattack(fn, x, y, jax.random.key(0), eps=eps, steps=10, square_queries=40)
    assert r.attack_names == ("apgd_ce", "apgd_t", "square")
    success = np.asarray(r.success)
    first = np.asarray(r.first_attack)
    per = np.asarray(r.attack_success)
    np.testing.assert_array_equal(success, per.any(0))
    assert np.all(per.sum(0) <= 1), "an attack runs only on the examples still robust"
    np.testing.assert_array_equal(first, np.where(success, per.argmax(0), -1))
    pred = np.asarray(jnp.argmax(fn(r.x_adv), -1))
    np.testing.assert_array_equal(pred != np.asarray(y), success)
    np.testing.assert_array_equal(np.asarray(r.x_adv)[~success], np.asarray(x)[~success])
    assert float(jnp.max(r.linf)) <= eps * (1 + 1e-5) + 1e-6  # float32 rounding of x +- eps
    assert r.robust_after[-1] == pytest.approx(1 - success.mean())
    assert list(r.robust_after) == sorted(r.robust_after, reverse=True)
    assert 0 < success.mean() < 1, f"the budget should leave examples on both sides: {r.robust_after}"
    assert r.warnings == ()


def test_a_randomised_model_is_flagged_under_standard_and_accepted_by_rand():
    fn, x, y = problem(1)
    rnd = attacks.randomized(lambda z, k: fn(z + 0.01 * jax.random.normal(k, z.shape)))
    r = attacks.autoattack(rnd, x, y, jax.random.key(0), eps=0.02, steps=4, square_queries=4)
    assert any("randomised" in w for w in r.warnings)
    rr = attacks.autoattack_rand(rnd, x, y, jax.random.key(0), eps=0.02, steps=4, eot=3)
    assert rr.attack_names == ("apgd_ce", "apgd_dlr")
    assert not any("randomised" in w for w in rr.warnings)
    det = attacks.autoattack_rand(fn, x, y, jax.random.key(0), eps=0.02, steps=4, eot=3)
    assert any("same logits on two draws" in w for w in det.warnings)


def test_gradient_masking_is_flagged():
    """A model whose gradient is zero: APGD does not move, Square fools, and both checks say so."""
    fn, x, y = problem(2)

    def masked(z):
        return fn(jax.lax.stop_gradient(z))

    r = attacks.autoattack(masked, x, y, jax.random.key(0), eps=0.05, steps=4, square_queries=60)
    per = np.asarray(r.attack_success)
    # APGD cannot move (sign(0) = 0; only its random start can fool), Square still finds some
    assert per[2].sum() > 0
    assert any("zero gradient" in w for w in r.warnings)
    assert any("Square fooled" in w for w in r.warnings)


def test_probabilities_and_targeted_use_are_flagged():
    fn, x, y = problem(3)
    r = attacks.autoattack(lambda z: jax.nn.softmax(fn(z)), x, y, jax.random.key(0), eps=0.01, steps=2, square_queries=2)
    assert any("probabilities" in w for w in r.warnings)
    with pytest.raises(ValueError, match="untargeted"):
        attacks.autoattack(fn, x, y, jax.random.key(0), targeted=True, targets=y)
    with pytest.raises(ValueError, match="version must be one of"):
        attacks.autoattack(fn, x, y, jax.random.key(0), version="plus")
