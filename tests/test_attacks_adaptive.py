"""The adaptive attacks on Heat and Blur, on the small CNN trained for the attack tests: BPDA+EOT is
plain PGD when the defense keeps every pixel, beats the non-adaptive attack on the defended model,
and Algorithm 2 perturbs only the pixels the defense keeps; results stay in the box and the ball and
their success is judged on the defended classifier."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hbjax.defense
from hbjax import attacks
from hbjax.data import correctly_classified

N = 24
EPS = 8 / 255
KEEP_ALL = {"sigma": [0.8, 1.2], "binarize": {"rule": "top", "fraction": 1.0}}
FIXED = {"sigma": 1.0}


@pytest.fixture(scope="module")
def model(trained_model):
    return trained_model


@pytest.fixture(scope="module")
def data(model, cifar10_dir):
    return correctly_classified(model, str(cifar10_dir), N)


def defended_predictions(model, x, defense, key=None):
    fn = hbjax.defense.defended(model, **defense)
    return np.asarray(jnp.argmax(fn(model.params, jnp.asarray(x), key), -1))


def test_bpda_eot_on_a_defense_that_keeps_every_pixel_is_pgd(model, data):
    x, y = data
    kw = dict(eps=EPS, steps=5, step_size=2 / 255)
    bpda = attacks.bpda_eot(model, x, y, jax.random.key(4), defense=KEEP_ALL, eot_samples=2, **kw)
    pgd = attacks.pgd(attacks.model_logits(model), x, y, jax.random.key(4), **kw)
    np.testing.assert_allclose(np.asarray(bpda.x_adv), np.asarray(pgd.x_adv), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(bpda.success), np.asarray(pgd.success))


def test_bpda_eot_stays_in_the_ball_and_is_judged_on_the_defense(model, data):
    x, y = data
    r = attacks.bpda_eot(model, x, y, jax.random.key(0), defense=FIXED, eps=EPS, steps=4, step_size=2 / 255)
    assert float(jnp.max(r.linf)) <= EPS + 1e-6
    assert float(jnp.min(r.x_adv)) >= 0.0 and float(jnp.max(r.x_adv)) <= 1.0
    # a fixed sigma makes the defense deterministic: the verdict can be checked exactly
    pred = defended_predictions(model, r.x_adv, FIXED)
    np.testing.assert_array_equal(np.asarray(r.success), pred != y)
    assert int(r.model_calls) == 4 * 2 + 1


def test_bpda_eot_is_stronger_than_a_non_adaptive_attack_on_the_defense(model, data):
    x, y = data
    defense = {"sigma": [0.8, 1.2]}
    kw = dict(eps=EPS, steps=10, step_size=2 / 255)
    plain = attacks.pgd(attacks.model_logits(model), x, y, jax.random.key(0), **kw)
    transfer = np.mean(defended_predictions(model, plain.x_adv, defense, jax.random.key(9)) != y)
    adaptive = attacks.bpda_eot(model, x, y, jax.random.key(0), defense=defense, eot_samples=4, **kw)
    assert float(jnp.mean(adaptive.success)) >= transfer
    assert float(jnp.mean(adaptive.success)) > 0.5


def test_algorithm_2_perturbs_only_the_pixels_the_defense_keeps(model, data):
    x, y = data
    base = {"eps": EPS, "steps": 5, "step_size": 2 / 255}
    r = attacks.adaptive_heatmap(
        model, x, y, jax.random.key(0), defense=FIXED, attack_params=base, iterations=1
    )
    mask = np.asarray(hbjax.defense.clean(model, x, None, **FIXED).mask)
    changed = np.any(np.asarray(r.x_adv) != x, axis=-1)
    assert not np.any(changed & ~mask), "pixels outside the heatmap mask were changed"
    assert np.any(changed)
    pred = defended_predictions(model, r.x_adv, FIXED)
    np.testing.assert_array_equal(np.asarray(r.success), pred != y)


def test_algorithm_2_iterates_inside_the_base_attacks_ball(model, data):
    x, y = data
    r = attacks.adaptive_heatmap(
        model, x, y, jax.random.key(1), defense={"sigma": [0.8, 1.2]},
        attack_params={"steps": 5, "step_size": 2 / 255}, iterations=4,
    )  # fmt: skip
    # the base attack's default eps (8/255) bounds the accumulated perturbation
    assert float(jnp.max(r.linf)) <= EPS + 1e-6
    assert float(jnp.min(r.x_adv)) >= 0.0 and float(jnp.max(r.x_adv)) <= 1.0


def test_algorithm_2_literal_reading_stops_once_the_undefended_network_is_fooled(model, data):
    """stop_on="undefended": an example whose round-1 result fools the undefended network keeps it
    in later rounds (round 1 is the same computation under both settings)."""
    x, y = data
    base = {"eps": EPS, "steps": 3, "step_size": 2 / 255}
    kw = dict(defense=FIXED, attack_params=base, stop_on="undefended")
    one = attacks.adaptive_heatmap(model, x, y, jax.random.key(2), iterations=1, **kw)
    three = attacks.adaptive_heatmap(model, x, y, jax.random.key(2), iterations=3, **kw)
    fooled = np.asarray(jnp.argmax(model.apply(model.params, one.x_adv), -1)) != y
    assert 0 < fooled.sum() < len(y)
    np.testing.assert_array_equal(np.asarray(three.x_adv)[fooled], np.asarray(one.x_adv)[fooled])
    assert np.any(np.asarray(three.x_adv)[~fooled] != np.asarray(one.x_adv)[~fooled])


def test_adaptive_attacks_reject_bad_settings(model, data):
    x, y = data
    with pytest.raises(ValueError, match="base attack"):
        attacks.adaptive_heatmap(model, x, y, jax.random.key(0), attack="bpda_eot")
    with pytest.raises(KeyError, match="unknown attack"):
        attacks.adaptive_heatmap(model, x, y, jax.random.key(0), attack="nope")
    with pytest.raises(ValueError, match="stop_on"):
        attacks.adaptive_heatmap(model, x, y, jax.random.key(0), stop_on="never")
    with pytest.raises(ValueError, match="backward must be one of"):
        attacks.bpda_eot(model, x, y, jax.random.key(0), backward="straight")
    with pytest.raises(ValueError, match="eot_samples"):
        attacks.bpda_eot(model, x, y, jax.random.key(0), eot_samples=0)
    with pytest.raises(ValueError, match="sigma"):
        attacks.bpda_eot(model, x, y, jax.random.key(0), defense={"sigma": -1.0})
    with pytest.raises(ValueError, match="targeted=True needs targets"):
        attacks.bpda_eot(model, x, y, jax.random.key(0), targeted=True)
