"""Projected gradient descent (Madry et al. 2018) and the fast gradient sign method (Goodfellow et
al. 2015), for the Linf and L2 norms."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from hbjax import xla
from hbjax.attacks import base
from hbjax.attacks.base import AttackResult


def _loss_grad(fn, x_adv, classes, loss: str, targeted: bool) -> jax.Array:
    """Gradient of the summed per-example attack loss (each example's gradient is its own)."""

    def total(z):
        logits = fn(z)
        base.check_logits(logits, classes, "attack")
        return jnp.sum(base.attack_loss(logits, classes, loss, targeted))

    return jax.grad(total)(x_adv)


@dataclasses.dataclass(frozen=True)
class PGDStep(base.Settings):
    """One PGD step: ascend the loss along the steepest direction of the norm, project onto the
    eps-ball around x, clip to [0, 1]. Operands: (fn, x, classes, eps, step_size)."""

    norm: str
    loss: str
    targeted: bool

    def __call__(self, operands, i, x_adv):
        fn, x, classes, eps, step_size = operands
        g = _loss_grad(fn, x_adv, classes, self.loss, self.targeted)
        x_adv = x_adv + step_size * base.normalize(g, self.norm).astype(x_adv.dtype)
        return base.clip_to_ball(x_adv, x, eps, self.norm)


def pgd(
    logits_fn: Callable,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    targeted: bool = False,
    targets: jax.Array | None = None,
    eps: float = 8 / 255,
    norm: str = "linf",
    steps: int = 20,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    loss: str = "ce",
    loop: str = "auto",
    unroll: int = 10,
) -> AttackResult:
    """Projected gradient descent (Madry et al. 2018) in the Linf or L2 ball of radius eps.

    Each step moves ``step_size`` along sign(grad) (Linf) or grad/|grad|_2 (L2) of the loss,
    projects onto the eps-ball around x and clips to [0, 1]. The loss is the cross-entropy
    (``"ce"``; targeted: minus the cross-entropy of the target) or the logit margin
    (``"margin"``, Carlini and Wagner's f6 without clamp). With ``restarts`` > 1 the attack runs
    again from new random starts and keeps, per example, the first successful run or else the one
    with the largest final margin.

    Args:
      logits_fn: x -> logits, pure (see :mod:`hbjax.attacks.base` for fast ways to pass a model).
      x: (B, ...) inputs in [0, 1].
      labels: (B,) true classes.
      key: PRNG key of the random start.
      targeted: aim for ``targets`` instead of away from ``labels``.
      targets: (B,) target classes, needed when targeted.
      eps: radius of the ball (>= 0).
      norm: ``"linf"`` or ``"l2"``.
      steps: number of gradient steps.
      step_size: step length; default 2.5 * eps / steps (Madry et al.).
      random_start: start from a uniform sample of the ball (Linf: per coordinate; L2: uniform in
        the ball) instead of x.
      restarts: number of runs from different random starts.
      loss: ``"ce"`` or ``"margin"``.
      loop: ``"unroll"`` (jitted chunks of ``unroll`` unrolled steps, best on CPU), ``"lax"``
        (one ``lax`` loop, best on accelerators) or ``"auto"``.
      unroll: steps per chunk for ``loop="unroll"``.

    Returns:
      :class:`AttackResult`; x_adv is the last iterate of the kept run.

    References:
      Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to
      Adversarial Attacks", ICLR 2018.
    """
    name = "pgd"
    x, labels, classes = base.check_inputs(x, labels, targeted=targeted, targets=targets, name=name, logits_fn=logits_fn)
    base.check_choice(norm, base.NORMS, "norm", name)
    base.check_choice(loss, base.LOSSES, "loss", name)
    eps = base.check_nonnegative(eps, "eps", name)
    steps = base.check_count(steps, "steps", name, minimum=0)
    restarts = base.check_count(restarts, "restarts", name)
    unroll = base.check_count(unroll, "unroll", name)
    step_size = 2.5 * eps / max(steps, 1) if step_size is None else step_size
    step_size = base.check_nonnegative(step_size, "step_size", name)
    loop = base.resolve_loop(loop, name)
    fn = base.as_pytree_fn(logits_fn)

    step = PGDStep(norm, loss, bool(targeted))
    dtype = x.dtype
    operands = (fn, x, classes, jnp.asarray(eps, dtype), jnp.asarray(step_size, dtype))
    best = best_success = best_margin = None
    for r in range(restarts):
        k = jax.random.fold_in(key, r)
        x0 = _start(x, k, jnp.asarray(eps, dtype), norm) if random_start else x
        x_adv, _ = base.iterate(step, operands, x0, steps, loop=loop, unroll=unroll)
        if restarts == 1:
            best = x_adv
            break
        success, _, _, m = base.evaluate(fn, x, x_adv, classes, targeted)
        if best is None:
            best, best_success, best_margin = x_adv, success, m
            continue
        better = (success | (m > best_margin)) & ~best_success
        best = base.select(better, x_adv, best)
        best_success = best_success | success
        best_margin = jnp.where(better, m, best_margin)
    calls = restarts * steps + (restarts if restarts > 1 else 0)
    return base.finalize(fn, x, best, classes, targeted, calls)


@xla.jit
def _start_linf(x, key, eps):
    return jnp.clip(x + base.random_in_ball(key, x, eps, "linf"), 0.0, 1.0)


@xla.jit
def _start_l2(x, key, eps):
    return jnp.clip(x + base.random_in_ball(key, x, eps, "l2"), 0.0, 1.0)


def _start(x, key, eps, norm):
    return _start_linf(x, key, eps) if norm == "linf" else _start_l2(x, key, eps)


@functools.partial(xla.jit, static_argnames=("norm", "loss", "targeted"))
def _fgsm_step(fn, x, classes, eps, *, norm, loss, targeted):
    g = _loss_grad(fn, x, classes, loss, targeted)
    return base.clip_to_ball(x + eps * base.normalize(g, norm).astype(x.dtype), x, eps, norm)


def fgsm(
    logits_fn: Callable,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    targeted: bool = False,
    targets: jax.Array | None = None,
    eps: float = 8 / 255,
    norm: str = "linf",
    loss: str = "ce",
) -> AttackResult:
    """The fast gradient sign method (Goodfellow et al. 2015): one step of length eps along
    sign(grad) of the loss (``norm="l2"``: along grad/|grad|_2, the fast gradient method), clipped
    to [0, 1]. ``key`` is unused (the attack is deterministic) and kept for the common signature.

    References:
      Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.
    """
    name = "fgsm"
    x, labels, classes = base.check_inputs(x, labels, targeted=targeted, targets=targets, name=name, logits_fn=logits_fn)
    base.check_choice(norm, base.NORMS, "norm", name)
    base.check_choice(loss, base.LOSSES, "loss", name)
    eps = base.check_nonnegative(eps, "eps", name)
    fn = base.as_pytree_fn(logits_fn)
    x_adv = _fgsm_step(
        fn, x, classes, jnp.asarray(eps, x.dtype), norm=norm, loss=loss, targeted=bool(targeted)
    )
    return base.finalize(fn, x, x_adv, classes, targeted, 1)
