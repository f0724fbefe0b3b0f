"""Square attack: robust accuracy within 3 points of torchattacks 3.5 at the same query budget on the
shipped vgg19_cifar model (100 held-fixed correctly classified test images, Linf 4/255, 200
queries); the L2 square profile equals the authors' eta; the schedule; outputs in the box and the
ball; no gradient is taken; a randomised model is queried afresh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchattacks

import hbjax
from hbjax import attacks
from hbjax.attacks.square import _eta, _window, p_schedule, square_sizes
from hbjax.data import correctly_classified
from tests._attack_models import tiny_mlp

N = 100
QUERIES = 200
TOLERANCE = 0.03


def test_robust_accuracy_matches_torchattacks(cifar10_dir):
    model = hbjax.models.load("vgg19_cifar")
    x, y = correctly_classified(model, str(cifar10_dir), N)
    eps = 4 / 255
    r = attacks.square(attacks.model_logits(model), x, y, jax.random.key(0), eps=eps, queries=QUERIES)
    net = hbjax.models.to_torch(model).eval()
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(y).long()
    adv = torchattacks.Square(net, norm="Linf", eps=eps, n_queries=QUERIES, seed=0)(xt, yt)
    with torch.no_grad():
        theirs = float((net(adv).argmax(1) == yt).float().mean())
    ours = 1.0 - float(np.mean(r.success))
    assert abs(ours - theirs) <= TOLERANCE + 1e-9, f"robust {ours:.3f} here, {theirs:.3f} in torchattacks"
    assert 0.0 < theirs < 1.0
    assert float(jnp.max(r.linf)) <= eps * (1 + 1e-5) + 1e-6


@pytest.mark.parametrize("s", [3, 5, 6, 7, 11])
def test_l2_profile_equals_the_authors_eta(s):
    atk = torchattacks.Square(torch.nn.Identity(), norm="L2", eps=1.0)
    atk.device = "cpu"
    torch.manual_seed(s)  # eta transposes its profile when its one torch.rand draw is > 0.5
    flip = float(torch.rand(1)) > 0.5
    torch.manual_seed(s)
    theirs = atk.eta(s).numpy()
    inside, rows, cols = _window(jnp.asarray([2]), jnp.asarray([1]), s, s + 4, s + 3)
    ours = np.asarray(_eta(rows, cols, s, jnp.full((1, 1, 1), flip), jnp.float32))[0]
    np.testing.assert_allclose(ours[2 : 2 + s, 1 : 1 + s], theirs, atol=1e-6)
    assert np.all(ours[~np.asarray(inside[0])] == 0)


def test_schedule():
    assert p_schedule(0, 10000, 0.8) == 0.8 and p_schedule(11, 10000, 0.8) == 0.4
    assert p_schedule(9000, 10000, 0.8) == 0.8 / 512
    assert p_schedule(100, 1000, 0.8) == 0.8 / 16  # rescaled: iteration 1000 of 10,000 (500 < it <= 1000)
    s = square_sizes(1000, 0.8, 32, 32, 3, "l2")
    assert s.min() >= 3 and np.all(s % 2 == 1) and s[0] == 29


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.5)])
def test_outputs_stay_in_the_box_and_the_ball_without_gradients(norm, eps):
    mlp = tiny_mlp(jax.random.key(0), (8, 8, 3), classes=6)

    @jax.custom_vjp
    def no_grad(x):
        return x

    def fail(*_):
        raise AssertionError("the Square attack took a gradient")

    no_grad.defvjp(lambda x: (x, None), fail)

    def fn(x):
        return mlp(no_grad(x))

    x = jax.random.uniform(jax.random.key(1), (10, 8, 8, 3))
    x = x.at[:2].set(0.0).at[2:4].set(1.0)
    y = jnp.argmax(fn(x), -1).astype(jnp.int32)
    r = attacks.square(fn, x, y, jax.random.key(2), eps=eps, norm=norm, queries=60, restarts=2)
    xa = np.asarray(r.x_adv)
    assert np.all(np.isfinite(xa)) and xa.min() >= 0.0 and xa.max() <= 1.0
    assert float(jnp.max(r.linf if norm == "linf" else r.l2)) <= eps * (1 + 1e-5) + 1e-7
    np.testing.assert_array_equal(np.asarray(r.success), np.asarray(jnp.argmax(fn(r.x_adv), -1)) != np.asarray(y))
    assert float(np.mean(r.success)) > 0.0
    t = ((y + 1) % 6).astype(jnp.int32)
    rt = attacks.square(fn, x, y, jax.random.key(3), eps=eps, norm=norm, queries=60, targeted=True, targets=t)
    pred = np.asarray(jnp.argmax(fn(rt.x_adv), -1))
    np.testing.assert_array_equal(np.asarray(rt.success), pred == np.asarray(t))


def test_a_randomised_model_is_queried_afresh():
    """A model that answers with the label only on a given draw: a fresh key each query fools it."""
    mlp = tiny_mlp(jax.random.key(0), (8, 8, 3), classes=6)
    x = jax.random.uniform(jax.random.key(1), (6, 8, 8, 3))
    y = jnp.argmax(mlp(x), -1).astype(jnp.int32)

    def noisy(x, key):
        return mlp(x) + 5.0 * jax.random.normal(key, (x.shape[0], 6))

    f = attacks.randomized(noisy)
    r = attacks.square(f, x, y, jax.random.key(2), eps=0.01, queries=20)
    assert float(np.mean(r.success)) > 0.5  # noise this large fools most single draws
    det = attacks.square(mlp, x, y, jax.random.key(2), eps=0.01, queries=20)
    assert float(np.mean(det.success)) < float(np.mean(r.success))


def test_bad_arguments_are_clear_errors():
    fn = tiny_mlp(jax.random.key(0), (4, 4, 3), classes=6)
    x = jnp.full((2, 4, 4, 3), 0.5)
    y = jnp.zeros((2,), jnp.int32)
    k = jax.random.key(0)
    with pytest.raises(ValueError, match="queries must be"):
        attacks.square(fn, x, y, k, queries=0)
    with pytest.raises(ValueError, match="p_init"):
        attacks.square(fn, x, y, k, p_init=0.0)
    with pytest.raises(ValueError, match="at least 5 x 5"):
        attacks.square(fn, x, y, k, norm="l2")
    with pytest.raises(ValueError, match="loss must be one of"):
        attacks.square(fn, x, y, k, loss="dlr")
