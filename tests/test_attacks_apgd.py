"""APGD and APGD-T: robust accuracy within 2 points of torchattacks 3.5 (the authors' code) on the
shipped vgg19_cifar model and its torch twin, at eps 2/255 and 4/255 (100 held-fixed correctly
classified test images, 20 steps; APGD-T over the top 3 classes to keep CI short); the authors'
checkpoint schedule; outputs in the box and the ball; targeted runs reach their targets; EOT
averages the gradient over draws of a randomised model; clear errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchattacks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hbjax
from hbjax import attacks
from hbjax.attacks.apgd import checkpoints, dlr_loss, dlr_targeted_loss
from hbjax.data import correctly_classified
from tests._attack_models import tiny_mlp

N = 100
STEPS = 20
TOLERANCE = 0.02
FEW = settings(deadline=None, max_examples=3, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@pytest.fixture(scope="module")
def shipped():
    return hbjax.models.load("vgg19_cifar")


@pytest.fixture(scope="module")
def data(shipped, cifar10_dir):
    return correctly_classified(shipped, str(cifar10_dir), N)


@pytest.fixture(scope="module")
def twin(shipped, data):
    net = hbjax.models.to_torch(shipped).eval()
    x = data[0]
    with torch.no_grad():
        theirs = net(nchw(x)).numpy()
    ours = np.asarray(shipped.apply(shipped.params, x))
    assert np.abs(theirs - ours).max() <= 1e-4 * np.abs(ours).max(), "the torch twin differs"
    return net


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def torch_robust(net, x_adv: torch.Tensor, y: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return (net(x_adv).argmax(1) == torch.from_numpy(y).long()).numpy()


@pytest.mark.parametrize("eps", [2 / 255, 4 / 255])
@pytest.mark.parametrize("variant", ["apgd_ce", "apgd_t"])
def test_robust_accuracy_matches_torchattacks(shipped, data, twin, variant, eps):
    x, y = data
    fn = attacks.model_logits(shipped)
    if variant == "apgd_ce":
        r = attacks.apgd(fn, x, y, jax.random.key(0), eps=eps, steps=STEPS, loss="ce")
        atk = torchattacks.APGD(twin, eps=eps, steps=STEPS, loss="ce", seed=0)
    else:
        r = attacks.apgd_t(fn, x, y, jax.random.key(0), eps=eps, steps=STEPS, num_target_classes=3)
        atk = torchattacks.APGDT(twin, eps=eps, steps=STEPS, n_classes=4, seed=0)  # 3 targets
    ours = 1.0 - float(np.mean(r.success))
    theirs = float(np.mean(torch_robust(twin, atk(nchw(x), torch.from_numpy(y).long()), y)))
    assert abs(ours - theirs) <= TOLERANCE + 1e-9, f"{variant} at {eps * 255:.0f}/255: robust {ours:.3f} here, {theirs:.3f} in torchattacks"
    assert 0.0 < theirs < 1.0, "the comparison needs examples on both sides"
    assert float(jnp.max(r.linf)) <= eps * (1 + 1e-5) + 1e-6
    # the reported success is the model's verdict on x_adv
    pred = np.asarray(jnp.argmax(shipped.apply(shipped.params, r.x_adv), -1))
    np.testing.assert_array_equal(np.asarray(r.success), pred != y)


def test_checkpoints_follow_the_paper():
    """p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce and Hein, sec. 3.2),
    as integer step counts of the authors' code."""
    for n in (10, 20, 100, 250):
        is_check, window = checkpoints(n)
        first, smallest, dec = max(int(0.22 * n), 1), max(int(0.06 * n), 1), max(int(0.03 * n), 1)
        expected, at, length = [], 0, first
        while at + length <= n:
            at += length
            expected.append(at - 1)
            length = max(length - dec, smallest)
        assert list(np.flatnonzero(is_check)) == expected
        assert window[expected[0]] == first


def test_dlr_losses_match_the_formulas():
    z = jnp.asarray([[3.0, 1.0, 2.0, 0.5, -1.0], [0.0, 4.0, 1.0, 3.0, 2.0]])
    y = jnp.asarray([0, 2])
    t = jnp.asarray([2, 1])
    np.testing.assert_allclose(dlr_loss(z, y), [-(3 - 2) / (3 - 1), -(1 - 4) / (4 - 2)], rtol=1e-6)
    np.testing.assert_allclose(
        dlr_targeted_loss(z, y, t), [-(3 - 2) / (3 - 0.75), -(1 - 4) / (4 - 1.5)], rtol=1e-6
    )


@FEW
@given(seed=st.integers(0, 2**16), norm=st.sampled_from(["linf", "l2"]), targeted=st.booleans(),
       loss=st.sampled_from(["ce", "dlr"]))  # fmt: skip
def test_outputs_stay_in_the_box_and_the_ball(seed, norm, targeted, loss):
    fn = tiny_mlp(jax.random.key(seed), (4, 4, 3), classes=6)
    x = jax.random.uniform(jax.random.key(seed + 1), (5, 4, 4, 3))
    y = jnp.argmax(fn(x), -1).astype(jnp.int32)
    t = ((y + 1) % 6).astype(jnp.int32)
    eps = 0.05 if norm == "linf" else 0.4
    r = attacks.apgd(fn, x, y, jax.random.key(seed), eps=eps, norm=norm, steps=7, loss=loss,
                     targeted=targeted, targets=t if targeted else None, restarts=2)  # fmt: skip
    xa = np.asarray(r.x_adv)
    assert xa.min() >= 0.0 and xa.max() <= 1.0
    dist = r.linf if norm == "linf" else r.l2
    assert float(jnp.max(dist)) <= eps * (1 + 1e-5) + 1e-7
    pred = np.asarray(jnp.argmax(fn(r.x_adv), -1))
    expected = pred == np.asarray(t) if targeted else pred != np.asarray(y)
    np.testing.assert_array_equal(np.asarray(r.success), expected)
    r_t = attacks.apgd_t(fn, x, y, jax.random.key(seed), eps=eps, norm=norm, steps=7)
    assert float(jnp.max(r_t.linf if norm == "linf" else r_t.l2)) <= eps * (1 + 1e-5) + 1e-7
    np.testing.assert_array_equal(np.asarray(r_t.success), np.asarray(jnp.argmax(fn(r_t.x_adv), -1)) != np.asarray(y))


def test_targeted_apgd_reaches_targets_and_loops_agree():
    fn = tiny_mlp(jax.random.key(3), (4, 4, 3), classes=6)
    x = jax.random.uniform(jax.random.key(4), (8, 4, 4, 3))
    y = jnp.argmax(fn(x), -1).astype(jnp.int32)
    t = ((y + 2) % 6).astype(jnp.int32)
    runs = [
        attacks.apgd(fn, x, y, jax.random.key(0), targeted=True, targets=t, eps=0.3, steps=30, loss=loss, loop=loop)
        for loss in ("ce", "dlr") for loop in ("unroll", "lax")
    ]  # fmt: skip
    for r in runs:
        assert float(np.mean(r.success)) >= 0.75
        pred = np.asarray(jnp.argmax(fn(r.x_adv), -1))
        np.testing.assert_array_equal(pred[np.asarray(r.success)], np.asarray(t)[np.asarray(r.success)])
    # the loops stop at different points once all are fooled (iterate's done), same verdicts
    np.testing.assert_array_equal(np.asarray(runs[0].success), np.asarray(runs[1].success))


def test_eot_averages_the_gradient_of_a_randomised_model():
    """The EOT gradient is the mean of the per-draw gradients (keys split as the step splits them);
    a deterministic model ignores eot."""
    from hbjax.attacks.apgd import _loss_and_grad

    base_fn = tiny_mlp(jax.random.key(5), (4, 4, 3), classes=6)
    x = jax.random.uniform(jax.random.key(6), (8, 4, 4, 3))
    y = jnp.argmax(base_fn(x), -1).astype(jnp.int32)

    def noisy(x, key):
        return base_fn(x + 0.1 * jax.random.normal(key, x.shape))

    rnd = attacks.randomized(noisy)
    assert not np.allclose(rnd(x, jax.random.key(0)), rnd(x, jax.random.key(1)))
    key = jax.random.key(9)
    kw = dict(loss="ce", targeted_loss=False)
    loss, g, _ = _loss_and_grad(rnd, x, y, y, key, samples=16, **kw)
    singles = [
        _loss_and_grad(attacks.randomized(lambda z, _k, k=k: noisy(z, k)), x, y, y, key, samples=1, **kw)
        for k in jax.random.split(key, 16)
    ]  # fmt: skip
    np.testing.assert_allclose(np.asarray(g), np.mean([np.asarray(s[1]) for s in singles], 0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(loss), np.mean([np.asarray(s[0]) for s in singles], 0), rtol=1e-5)
    one = attacks.apgd(rnd, x, y, jax.random.key(0), eps=0.03, steps=5, eot=1)
    many = attacks.apgd(rnd, x, y, jax.random.key(0), eps=0.03, steps=5, eot=4)
    assert int(many.model_calls) >= 4 * (int(one.model_calls) - 1)
    det = attacks.apgd(base_fn, x, y, jax.random.key(0), eps=0.03, steps=5, eot=8)
    assert int(det.model_calls) <= 7


def test_defended_logits_equal_the_defense(shipped, data):
    """One draw of defended_logits is Heat and Blur's defended classifier with the same key."""
    x = jnp.asarray(data[0][:4])
    defense = {"sigma": (0.8, 1.2)}
    f = attacks.defended_logits(shipped, defense=defense)
    key = jax.random.key(7)
    ours = f(x, key)
    ref = hbjax.defense.defended(shipped, sigma=(0.8, 1.2))(shipped.params, x, key)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-4, atol=1e-4)
    assert not np.allclose(np.asarray(ours), np.asarray(f(x, jax.random.key(8))))


def test_bad_arguments_are_clear_errors():
    fn = tiny_mlp(jax.random.key(0), (4, 4, 3), classes=6)
    x = jnp.full((2, 4, 4, 3), 0.5)
    y = jnp.zeros((2,), jnp.int32)
    k = jax.random.key(0)
    with pytest.raises(ValueError, match="loss must be one of"):
        attacks.apgd(fn, x, y, k, loss="margin")
    with pytest.raises(ValueError, match="rho must lie"):
        attacks.apgd(fn, x, y, k, rho=1.5)
    with pytest.raises(ValueError, match="eot must be"):
        attacks.apgd(fn, x, y, k, eot=0)
    with pytest.raises(ValueError, match="untargeted"):
        attacks.apgd_t(fn, x, y, k, targeted=True, targets=y)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attacks.apgd(fn, x * 3, y, k)
    small = tiny_mlp(jax.random.key(0), (4, 4, 3), classes=3)
    with pytest.raises(ValueError, match="at least 4 classes"):
        attacks.apgd_t(small, x, y, k)
