"""Auto-PGD (Croce and Hein 2020): PGD with momentum and a step size that halves at checkpoints
where the loss stopped rising, so it needs no step-size tuning; with the cross-entropy or the
difference-of-logits-ratio (DLR) loss, untargeted, targeted, and APGD-T (AutoAttack's targeted DLR
over the top classes); Linf and L2; EOT over a randomised model (:mod:`hbjax.attacks.randomized`).

The steps follow the authors' code (fra31/auto-attack, as torchattacks 3.5 copies it) line by line:
start at a random point of the ball's surface, first step size 2 eps, momentum alpha = 0.75,
checkpoints after 22 % of the steps and then at windows shrinking by 3 % of the steps down to 6 %;
at a checkpoint the step size halves for every example whose loss rose in at most rho = 75 % of the
window's steps, or whose best loss did not change since a checkpoint that did not halve it; a halved
example restarts from its best point.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hbjax import xla
from hbjax.attacks import base
from hbjax.attacks.base import AttackResult
from hbjax.attacks.randomized import Randomized, as_sampler

APGD_LOSSES = ("ce", "dlr")


# ------------------------------------------------------------------------------------------ losses
def dlr_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Untargeted DLR loss (Croce and Hein 2020, eq. 6), to be ascended:
    -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3), pi the logits sorted descending (>= 3 classes)."""
    top = jax.lax.top_k(logits, 3)[0]
    z_y = base.class_logit(logits, labels)
    best_other = jnp.max(base._others(logits, labels), axis=-1)
    return -(z_y - best_other) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted_loss(logits: jax.Array, labels: jax.Array, targets: jax.Array) -> jax.Array:
    """Targeted DLR loss (Croce and Hein 2020, eq. 7), to be ascended:
    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) (>= 4 classes)."""
    top = jax.lax.top_k(logits, 4)[0]
    z_y = base.class_logit(logits, labels)
    z_t = base.class_logit(logits, targets)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * top[:, 2] - 0.5 * top[:, 3] + 1e-12)


def apgd_loss(logits: jax.Array, labels: jax.Array, targets: jax.Array, kind: str, targeted_loss: bool):
    """Per-example loss APGD ascends: ``ce`` the cross-entropy of the label (targeted: minus that of
    the target), ``dlr`` the DLR loss (targeted: the targeted DLR loss)."""
    if kind == "ce":
        logp = jax.nn.log_softmax(logits, axis=-1)
        if targeted_loss:
            return base.class_logit(logp, targets)
        return -base.class_logit(logp, labels)
    if targeted_loss:
        return dlr_targeted_loss(logits, labels, targets)
    return dlr_loss(logits, labels)


# ------------------------------------------------------------------------------------ schedule
def checkpoints(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(is_checkpoint, window) of each step i = 0 .. steps-1: the authors' schedule, first window
    max(0.22 n, 1) steps, each next one max(0.03 n, 1) shorter, none shorter than max(0.06 n, 1)."""
    first, minimum, decrease = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    is_check = np.zeros(steps, bool)
    window = np.ones(steps, np.int32)
    k, counter = first, 0
    for i in range(steps):
        counter += 1
        window[i] = k
        if counter == k:
            is_check[i] = True
            counter = 0
            k = max(k - decrease, minimum)
    return is_check, window


# --------------------------------------------------------------------------------------- state
class _State(NamedTuple):
    x_adv: jax.Array
    x_old: jax.Array
    grad: jax.Array
    x_best: jax.Array
    grad_best: jax.Array
    x_best_adv: jax.Array
    loss_best: jax.Array  # (B,)
    robust: jax.Array  # (B,) bool: no iterate fooled the model yet
    step_size: jax.Array  # (B,)
    loss_steps: jax.Array  # (steps, B)
    loss_best_last_check: jax.Array
    reduced_last_check: jax.Array  # (B,) bool


def _loss_and_grad(sampler, x_adv, labels, targets, key, *, loss, targeted_loss, samples):
    """EOT: the mean of the per-example loss over ``samples`` draws, its gradient, and the first
    draw's logits (for the prediction)."""
    keys = jax.random.split(key, samples)

    def total(z):
        logits = sampler.sample(z, keys)  # (S, B, C)
        per = jax.vmap(lambda l: apgd_loss(l, labels, targets, loss, targeted_loss))(logits)
        mean = jnp.mean(per, axis=0)
        return jnp.sum(mean), (mean, logits[0])

    (_, (loss_indiv, logits)), g = jax.value_and_grad(total, has_aux=True)(x_adv)
    return loss_indiv, g, logits


def _fooled(logits, labels, targets, targeted_success: bool):
    pred = jnp.argmax(logits, -1)
    return (pred == targets) if targeted_success else (pred != labels)


def _project(x_new, x, eps, norm):
    """The authors' projection: onto the ball around x, then into [0, 1]."""
    if norm == "linf":
        return jnp.clip(jnp.minimum(jnp.maximum(x_new, x - eps), x + eps), 0.0, 1.0)
    d = x_new - x
    n = base._bcast(base.l2_norm(d), d)
    return jnp.clip(x + d / (n + 1e-12) * jnp.minimum(eps, n + 1e-12), 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class APGDStep(base.Settings):
    """One APGD iteration (the body of the authors' loop). Operands:
    (sampler, x, labels, targets, eps, key, is_checkpoint (n,), window (n,))."""

    norm: str
    loss: str
    targeted_loss: bool
    targeted_success: bool
    samples: int
    rho: float

    def __call__(self, operands, i, st: _State) -> _State:
        sampler, x, labels, targets, eps, key, is_check, window = operands
        eps = eps.astype(x.dtype)
        a = jnp.where(i > 0, 0.75, 1.0).astype(x.dtype)
        momentum = st.x_adv - st.x_old
        step = base._bcast(st.step_size, x)
        if self.norm == "linf":
            z = _project(st.x_adv + step * jnp.sign(st.grad), x, eps, "linf")
            x_new = _project(st.x_adv + (z - st.x_adv) * a + momentum * (1 - a), x, eps, "linf")
        else:
            g = st.grad / (base._bcast(base.l2_norm(st.grad), x) + 1e-12)
            z = st.x_adv + step * g
            d = z - x
            n = base._bcast(base.l2_norm(d), d)
            z = jnp.clip(x + d / (n + 1e-12) * jnp.minimum(eps, n), 0.0, 1.0)
            x_new = _project(st.x_adv + (z - st.x_adv) * a + momentum * (1 - a), x, eps, "l2")
        x_new = x_new.astype(x.dtype)

        loss_indiv, grad, logits = _loss_and_grad(
            sampler, x_new, labels, targets, jax.random.fold_in(key, i + 1),
            loss=self.loss, targeted_loss=self.targeted_loss, samples=self.samples,
        )  # fmt: skip
        fooled = _fooled(logits, labels, targets, self.targeted_success)
        robust = st.robust & ~fooled
        x_best_adv = base.select(fooled, x_new, st.x_best_adv)

        improved = loss_indiv > st.loss_best
        x_best = base.select(improved, x_new, st.x_best)
        grad_best = base.select(improved, grad, st.grad_best)
        loss_best = jnp.where(improved, loss_indiv, st.loss_best)
        loss_steps = st.loss_steps.at[i].set(loss_indiv)

        # checkpoint (the authors' check_oscillation: rises over the window's last k steps)
        k = window[i]
        rows = jnp.arange(loss_steps.shape[0])
        rises = loss_steps > jnp.roll(loss_steps, 1, axis=0)  # row j vs j-1 (row -1: the last row)
        in_window = (rows <= i) & (rows > i - k)
        count = jnp.sum(jnp.where(in_window[:, None], rises, False), axis=0)
        oscillating = count <= k * self.rho
        no_improvement = ~st.reduced_last_check & (st.loss_best_last_check >= loss_best)
        halve = (oscillating | no_improvement) & is_check[i]
        check = is_check[i]
        reduced_last_check = jnp.where(check, oscillating | no_improvement, st.reduced_last_check)
        loss_best_last_check = jnp.where(check, loss_best, st.loss_best_last_check)
        step_size = jnp.where(halve, st.step_size / 2, st.step_size)
        x_next = base.select(halve, x_best, x_new)
        grad_next = base.select(halve, grad_best, grad)
        return _State(
            x_next, x_new, grad_next, x_best, grad_best, x_best_adv, loss_best, robust, step_size,
            loss_steps, loss_best_last_check, reduced_last_check,
        )  # fmt: skip


def _all_fooled(operands, st: _State) -> jax.Array:
    return ~jnp.any(st.robust)


@functools.partial(
    xla.jit, static_argnames=("norm", "loss", "targeted_loss", "targeted_success", "samples", "steps")
)
def _init(sampler, x, labels, targets, eps, key, *, norm, loss, targeted_loss, targeted_success, samples, steps):
    """The authors' start (a random point on the ball's surface, clipped to the box) and state."""
    k_start, k_grad = jax.random.split(key)
    eps = eps.astype(x.dtype)
    if norm == "linf":
        t = jax.random.uniform(k_start, x.shape, x.dtype, -1.0, 1.0)
        t = t / base._bcast(base.linf_norm(t), x)
    else:
        t = jax.random.normal(k_start, x.shape, x.dtype)
        t = t / (base._bcast(base.l2_norm(t), x) + 1e-12)
    x_adv = jnp.clip(x + eps * t, 0.0, 1.0)
    loss_indiv, grad, logits = _loss_and_grad(
        sampler, x_adv, labels, targets, k_grad, loss=loss, targeted_loss=targeted_loss, samples=samples
    )
    robust = ~_fooled(logits, labels, targets, targeted_success)
    n = x.shape[0]
    return _State(
        x_adv, x_adv, grad, x_adv, grad, x_adv, loss_indiv, robust,
        jnp.full((n,), 2.0, x.dtype) * eps, jnp.zeros((steps, n), loss_indiv.dtype), loss_indiv,
        jnp.ones((n,), bool),
    )  # fmt: skip


@functools.partial(xla.jit, static_argnames=("targeted_success",))
def _verdict(sampler, x_adv, labels, targets, key, *, targeted_success):
    logits = sampler(x_adv, key)
    return _fooled(logits, labels, targets, targeted_success), base.margin(
        logits, targets if targeted_success else labels, targeted_success
    )


def _single_run(sampler, x, labels, targets, key, *, eps, norm, steps, loss, targeted_loss,
                targeted_success, samples, rho, loop, unroll):  # fmt: skip
    """One APGD run: (x_best_adv where fooled else x_best, fooled during the run)."""
    eps_arr = jnp.asarray(eps, x.dtype)
    k_init, k_walk = jax.random.split(key)
    st = _init(
        sampler, x, labels, targets, eps_arr, k_init, norm=norm, loss=loss, targeted_loss=targeted_loss,
        targeted_success=targeted_success, samples=samples, steps=steps,
    )  # fmt: skip
    is_check, window = checkpoints(steps)
    step = APGDStep(norm, loss, targeted_loss, targeted_success, samples, float(rho))
    operands = (sampler, x, labels, targets, eps_arr, k_walk, jnp.asarray(is_check), jnp.asarray(window))
    st, done = base.iterate(step, operands, st, steps, loop=loop, unroll=unroll, done=_all_fooled)
    fooled = ~st.robust
    return base.select(fooled, st.x_best_adv, st.x_best), fooled, int(done)


def _bucket(n: int, total: int) -> int:
    """The padded size of a sub-batch of n examples: the next power of two, at most total (few
    distinct shapes, so few compilations)."""
    return min(total, 1 << max(0, (n - 1).bit_length()))


def run_on_robust(
    run: Callable[[jax.Array, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array, int]],
    x: jax.Array, labels: jax.Array, targets: jax.Array, robust: np.ndarray, x_adv: jax.Array,
    key: jax.Array,
) -> tuple[jax.Array, np.ndarray, int]:  # fmt: skip
    """Runs ``run(x, labels, targets, key) -> (x_adv, fooled, steps)`` on the examples still robust
    (padded to a power of two with copies of the first), merges the newly fooled into x_adv; returns
    (x_adv, robust, gradient steps spent)."""
    idx = np.flatnonzero(robust)
    if len(idx) == 0:
        return x_adv, robust, 0
    size = _bucket(len(idx), x.shape[0])
    padded = np.concatenate([idx, np.full(size - len(idx), idx[0])])
    sub = jnp.asarray(padded)
    adv, fooled, steps = run(x[sub], labels[sub], targets[sub], key)
    fooled = np.asarray(fooled)[: len(idx)]
    robust = robust.copy()
    robust[idx[fooled]] = False
    x_adv = x_adv.at[jnp.asarray(idx)].set(
        base.select(jnp.asarray(fooled), adv[: len(idx)], x_adv[jnp.asarray(idx)])
    )
    return x_adv, robust, steps


def _check_common(name, x, eps, norm, steps, restarts, eot, rho, unroll, loop, logits_fn):
    base.check_choice(norm, base.NORMS, "norm", name)
    eps = base.check_nonnegative(eps, "eps", name)
    steps = base.check_count(steps, "steps", name)
    restarts = base.check_count(restarts, "restarts", name)
    eot = base.check_count(eot, "eot", name)
    rho = float(rho)
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"{name}: rho must lie in (0, 1]; got {rho!r}")
    unroll = base.check_count(unroll, "unroll", name)
    loop = base.resolve_loop(loop, name)
    sampler, random = as_sampler(logits_fn)
    samples = eot if random else 1
    return eps, steps, restarts, samples, rho, unroll, loop, sampler


def _result(sampler, x, x_adv, labels, targets, key, targeted_success, calls) -> AttackResult:
    x_adv = jnp.clip(x_adv, 0.0, 1.0).astype(x.dtype)
    success, _ = _verdict(sampler, x_adv, labels, targets, key, targeted_success=bool(targeted_success))
    l2, linf = base.distances(x_adv, x)
    return AttackResult(x_adv, success, l2, linf, jnp.asarray(calls + 1, jnp.int32))


def apgd(
    logits_fn: Callable | Randomized,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    targeted: bool = False,
    targets: jax.Array | None = None,
    eps: float = 8 / 255,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    loss: str = "ce",
    eot: int = 1,
    rho: float = 0.75,
    loop: str = "auto",
    unroll: int = 10,
) -> AttackResult:
    """Auto-PGD (Croce and Hein 2020) in the Linf or L2 ball of radius eps.

    x_{k+1} = P(x_k + alpha (z_{k+1} - x_k) + (1 - alpha)(x_k - x_{k-1})), z_{k+1} = P(x_k + eta_k
    sign(grad)) (L2: grad / |grad|_2), alpha = 0.75 (1 at the first step), eta_0 = 2 eps, eta halved
    at the checkpoints of :func:`checkpoints` (see the module docstring). Each run stops early once
    every example is fooled. With ``restarts`` > 1, each further run starts from a new random point
    and attacks only the examples still robust.

    Args:
      logits_fn: x -> logits, or a :class:`hbjax.attacks.Randomized` classifier (then each step's
        gradient is the mean over ``eot`` draws: EOT).
      x, labels, key, targeted, targets: the common attack arguments.
      eps: radius of the ball.
      norm: ``"linf"`` or ``"l2"``.
      steps: iterations a run (gradient evaluations: steps + 1, times eot).
      restarts: runs from different random starts.
      loss: ``"ce"`` (targeted: minus the target's cross-entropy) or ``"dlr"`` (targeted: the
        targeted DLR loss of :func:`dlr_targeted_loss`).
      eot: draws a gradient for a randomised model (ignored for a deterministic one).
      rho: the checkpoint's fraction of rising steps below which the step size halves.
      loop, unroll: loop runner (:func:`hbjax.attacks.base.iterate`).

    Returns:
      :class:`AttackResult`; x_adv is the first-found adversarial iterate's latest update where the
      attack succeeded, else the point of highest loss; success is judged by one more evaluation
      (a fresh draw for a randomised model).

    References:
      Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
      parameter-free attacks", ICML 2020.
    """
    name = "apgd"
    x, labels, classes = base.check_inputs(x, labels, targeted=targeted, targets=targets, name=name)
    base.check_choice(loss, APGD_LOSSES, "loss", name)
    eps, steps, restarts, samples, rho, unroll, loop, sampler = _check_common(
        name, x, eps, norm, steps, restarts, eot, rho, unroll, loop, logits_fn
    )
    targets_arr = classes if targeted else labels

    def run(xs, ys, ts, k):
        return _single_run(
            sampler, xs, ys, ts, k, eps=eps, norm=norm, steps=steps, loss=loss,
            targeted_loss=bool(targeted), targeted_success=bool(targeted), samples=samples, rho=rho,
            loop=loop, unroll=unroll,
        )  # fmt: skip

    robust = np.ones(x.shape[0], bool)
    x_adv, calls = x, 0
    for r in range(restarts):
        k = jax.random.fold_in(key, r)
        if r == 0:
            x_adv, fooled, done = run(x, labels, targets_arr, k)
            robust = ~np.asarray(fooled)
        else:
            x_adv, robust, done = run_on_robust(run, x, labels, targets_arr, robust, x_adv, k)
        calls += (done + 1) * samples
    k_final = jax.random.fold_in(key, 2**31 - 1)
    return _result(sampler, x, x_adv, labels, targets_arr, k_final, targeted, calls)


def apgd_t(
    logits_fn: Callable | Randomized,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    targeted: bool = False,
    targets: jax.Array | None = None,
    eps: float = 8 / 255,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    num_target_classes: int = 9,
    eot: int = 1,
    rho: float = 0.75,
    loop: str = "auto",
    unroll: int = 10,
) -> AttackResult:
    """APGD-T (Croce and Hein 2020, AutoAttack's): an untargeted attack that runs APGD with the
    targeted DLR loss toward each of the ``num_target_classes`` classes ranked highest after the
    label on the clean input, in turn, on the examples not yet misclassified.

    The success criterion is misclassification, so ``targeted=True`` is refused: for a chosen target
    use :func:`apgd` with ``targeted=True``. Other arguments as :func:`apgd`; ``restarts`` runs a
    target. Needs at least 4 classes (the DLR denominator uses the 4th-largest logit).

    References:
      Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
      parameter-free attacks", ICML 2020.
    """
    name = "apgd_t"
    if targeted or targets is not None:
        raise ValueError(f"{name}: APGD-T is untargeted (it cycles over targets itself); use apgd(targeted=True) for a chosen target")
    x, labels, _ = base.check_inputs(x, labels, targeted=False, targets=None, name=name)
    eps, steps, restarts, samples, rho, unroll, loop, sampler = _check_common(
        name, x, eps, norm, steps, restarts, eot, rho, unroll, loop, logits_fn
    )
    num_target_classes = base.check_count(num_target_classes, "num_target_classes", name)
    clean = _clean_logits(sampler, x, jax.random.fold_in(key, 2**31 - 2))
    num_classes = clean.shape[-1]
    if num_classes < 4:
        raise ValueError(f"{name}: the targeted DLR loss needs at least 4 classes; the model has {num_classes}")
    num_target_classes = min(num_target_classes, num_classes - 1)
    order = jnp.argsort(clean, axis=-1)  # ascending

    def run(xs, ys, ts, k):
        return _single_run(
            sampler, xs, ys, ts, k, eps=eps, norm=norm, steps=steps, loss="dlr",
            targeted_loss=True, targeted_success=False, samples=samples, rho=rho, loop=loop,
            unroll=unroll,
        )  # fmt: skip

    robust = np.asarray(jnp.argmax(clean, -1) == labels)
    x_adv, calls = x, 1
    for t in range(num_target_classes):
        tgt = order[:, -(t + 2)]
        for r in range(restarts):
            k = jax.random.fold_in(key, t * restarts + r)
            x_adv, robust, done = run_on_robust(run, x, labels, tgt, robust, x_adv, k)
            calls += (done + 1) * samples if done else 0
    k_final = jax.random.fold_in(key, 2**31 - 1)
    return _result(sampler, x, x_adv, labels, labels, k_final, False, calls)


@xla.jit
def _clean_logits(sampler, x, key):
    return sampler(x, key)
