"""Parity with torchattacks and foolbox on one trained network (a small CNN trained for about a
minute on the shared CIFAR-10 folder, ported to torch): same weights, inputs and settings; success
rates within 5 percentage points and median L2 distances within 15%. Targeted attacks reach their
targets; L-BFGS finds smaller perturbations than PGD."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hbjax import attacks
from hbjax.data import correctly_classified
from tests._attack_models import torch_twin

N = 100
RATE_TOLERANCE = 0.05
MEDIAN_TOLERANCE = 0.15


@pytest.fixture(scope="module")
def model(trained_model):
    return trained_model


@pytest.fixture(scope="module")
def data(model, cifar10_dir):
    x, y = correctly_classified(model, str(cifar10_dir), N)
    targets = (y + 1 + np.arange(N) % 9) % 10  # every other class, spread over the batch
    return x, y, targets.astype(np.int32)


@pytest.fixture(scope="module")
def twin(model, data):
    torch.manual_seed(0)
    net = torch_twin(model)
    x = data[0]
    with torch.no_grad():
        theirs = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    ours = np.asarray(model.apply(model.params, x))
    scale = np.abs(ours).max()
    assert np.abs(theirs - ours).max() <= 1e-4 * scale, "the torch twin does not reproduce the logits"
    return net


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def torch_stats(net, x: np.ndarray, x_adv: torch.Tensor, classes: np.ndarray, targeted: bool):
    """(success, L2) of a torch attack's output, judged by the torch twin."""
    with torch.no_grad():
        pred = net(x_adv).argmax(1).numpy()
    success = pred == classes if targeted else pred != classes
    l2 = (x_adv - nchw(x)).flatten(1).norm(dim=1).numpy()
    return success, l2


def assert_parity(ours_success, ours_l2, theirs_success, theirs_l2, what, *, among_successes):
    ours_success, theirs_success = np.asarray(ours_success), np.asarray(theirs_success)
    rate_ours, rate_theirs = ours_success.mean(), theirs_success.mean()
    assert abs(rate_ours - rate_theirs) <= RATE_TOLERANCE + 1e-9, (
        f"{what}: success rate {rate_ours:.3f} here, {rate_theirs:.3f} in the reference"
    )
    a = np.asarray(ours_l2)[ours_success] if among_successes else np.asarray(ours_l2)
    b = np.asarray(theirs_l2)[theirs_success] if among_successes else np.asarray(theirs_l2)
    assert len(a) and len(b), f"{what}: no successful example to compare"
    med_a, med_b = np.median(a), np.median(b)
    assert abs(med_a - med_b) <= MEDIAN_TOLERANCE * med_b, (
        f"{what}: median L2 {med_a:.4f} here, {med_b:.4f} in the reference"
    )
    return rate_ours, med_a


@pytest.mark.parametrize(
    "norm, eps, step_size",
    [("linf", 8 / 255, 2 / 255), ("l2", 0.5, 0.5 / 8)],
)
def test_pgd_matches_torchattacks(model, data, twin, norm, eps, step_size):
    import torchattacks

    x, y, _ = data
    r = attacks.pgd(
        attacks.model_logits(model), x, y, jax.random.key(0), eps=eps, norm=norm, steps=20,
        step_size=step_size, random_start=True,
    )  # fmt: skip
    torch.manual_seed(0)
    cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    atk = cls(twin, eps=eps, alpha=step_size, steps=20, random_start=True)
    x_adv = atk(nchw(x), torch.from_numpy(y).long())
    success, l2 = torch_stats(twin, x, x_adv, y, False)
    rate, _ = assert_parity(r.success, r.l2, success, l2, f"PGD-{norm}", among_successes=False)
    assert float(jnp.max(r.linf if norm == "linf" else r.l2)) <= eps * (1 + 1e-5) + 1e-6
    # a trained network is not fooled by everything: the comparison means something
    assert 0.0 < success.mean() and (norm == "linf" or success.mean() < 1.0)


def test_carlini_wagner_matches_foolbox(model, data, twin):
    import foolbox as fb

    x, y = data[0][:64], data[1][:64]
    settings = dict(binary_search_steps=5, steps=50, initial_const=1e-2, confidence=0.0)
    r = attacks.carlini_wagner_l2(
        attacks.model_logits(model), x, y, jax.random.key(0), learning_rate=1e-2, abort_early=True,
        **settings,
    )  # fmt: skip
    fmodel = fb.PyTorchModel(twin, bounds=(0, 1))
    attack = fb.attacks.L2CarliniWagnerAttack(stepsize=1e-2, abort_early=True, **settings)
    x_adv = attack.run(fmodel, nchw(x), fb.criteria.Misclassification(torch.from_numpy(y).long()))
    success, l2 = torch_stats(twin, x, x_adv, y, False)
    assert_parity(r.success, r.l2, success, l2, "CW-L2", among_successes=True)


def test_targeted_pgd_matches_torchattacks_and_reaches_targets(model, data, twin):
    import torchattacks

    x, y, t = data
    r = attacks.pgd(
        attacks.model_logits(model), x, y, jax.random.key(1), targeted=True, targets=t,
        eps=8 / 255, steps=20, step_size=2 / 255,
    )  # fmt: skip
    pred = np.asarray(jnp.argmax(model.apply(model.params, r.x_adv), -1))
    np.testing.assert_array_equal(pred[np.asarray(r.success)], t[np.asarray(r.success)])
    torch.manual_seed(1)
    atk = torchattacks.PGD(twin, eps=8 / 255, alpha=2 / 255, steps=20, random_start=True)
    targets = torch.from_numpy(t).long()
    atk.set_mode_targeted_by_function(lambda images, labels: targets)
    x_adv = atk(nchw(x), torch.from_numpy(y).long())
    success, l2 = torch_stats(twin, x, x_adv, t, True)
    rate, _ = assert_parity(r.success, r.l2, success, l2, "targeted PGD-linf", among_successes=False)
    assert rate >= 0.8


def test_targeted_cw_and_lbfgs_reach_targets_lbfgs_closer_than_pgd(model, data):
    x, y, t = (a[:50] for a in data)
    fn = attacks.model_logits(model)
    cw = attacks.carlini_wagner_l2(
        fn, x, y, jax.random.key(0), targeted=True, targets=t, binary_search_steps=5, steps=50,
        initial_const=1e-2,
    )  # fmt: skip
    lb = attacks.lbfgs(fn, x, y, jax.random.key(0), targeted=True, targets=t, search_steps=8, steps=30)
    pgd = attacks.pgd(
        fn, x, y, jax.random.key(2), targeted=True, targets=t, eps=8 / 255, steps=20, step_size=2 / 255
    )
    for r, what in ((cw, "CW-L2"), (lb, "L-BFGS")):
        pred = np.asarray(jnp.argmax(model.apply(model.params, r.x_adv), -1))
        ok = np.asarray(r.success)
        assert ok.mean() >= 0.9, f"targeted {what} reached only {ok.mean():.2f} of its targets"
        np.testing.assert_array_equal(pred[ok], t[ok])
    med = lambda r: np.median(np.asarray(r.l2)[np.asarray(r.success)])  # noqa: E731
    assert med(lb) < med(pgd), f"L-BFGS median L2 {med(lb):.3f} >= PGD's {med(pgd):.3f}"
    assert med(cw) < med(pgd)


def test_boundary_walks_towards_x_on_a_trained_network(model, data):
    x, y, _ = data
    x, y = x[:32], y[:32]
    fn = attacks.model_logits(model)
    key = jax.random.key(0)
    start, found, _ = attacks.blended_noise_start(
        attacks.as_pytree_fn(fn), jnp.asarray(x), jnp.asarray(y), jax.random.split(key)[0],
        targeted=False,
    )  # fmt: skip
    # the step sizes adapt once 100 spherical checks (1,000 steps) are in: run past that
    r = attacks.boundary(fn, x, y, key, steps=2000)
    assert np.all(np.asarray(r.success)) and np.all(np.asarray(found))
    start_l2 = np.linalg.norm(np.asarray(start - x).reshape(len(x), -1), axis=1)
    # the walk shortens the distance of the starting points
    assert np.median(np.asarray(r.l2)) < 0.8 * np.median(start_l2)
