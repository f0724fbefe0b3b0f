"""The Carlini-Wagner L2 attack (Carlini and Wagner 2017)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hbjax import xla
from hbjax.attacks import base
from hbjax.attacks.base import AttackResult

# tanh space: x = (tanh(w) + 1) / 2; the factor keeps arctanh finite at x = 0 and x = 1
_TANH_SCALE = 0.999999


def to_tanh_space(x: jax.Array) -> jax.Array:
    return jnp.arctanh((2.0 * x - 1.0) * _TANH_SCALE)


def from_tanh_space(w: jax.Array) -> jax.Array:
    return (jnp.tanh(w) + 1.0) / 2.0


def f6(logits: jax.Array, classes: jax.Array, targeted: bool, confidence) -> jax.Array:
    """Carlini and Wagner's f6 with confidence kappa: max(z_y - max_{j != y} z_j + kappa, 0)
    untargeted, max(max_{j != t} z_j - z_t + kappa, 0) targeted."""
    return jnp.maximum(confidence - base.margin(logits, classes, targeted), 0.0)


_ADAM = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)


@dataclasses.dataclass(frozen=True)
class CWStep(base.Settings):
    """One Adam step on ``|x' - x|^2 + c f6(x')`` in tanh space, keeping per example the closest x'
    that is adversarial with margin kappa.

    Early abort as in Carlini's reference code and foolbox: at every step i with
    i % check_every == 0, the batch's total loss at the current point is compared with the loss at
    the previous check; if it has not fallen by 0.01%, the run stops before this step's update and
    before its point is recorded. Steps after the stop change nothing, so a loop may run past it.

    Operands: (fn, x, w0, x_ref, classes, consts, confidence, learning_rate). Carry: (delta,
    adam_state, best_x, best_l2, found, previous_loss, stop, gradient_evaluations).
    """

    targeted: bool
    check_every: int
    abort_early: bool

    def __call__(self, operands, i, carry):
        fn, x, w0, x_ref, classes, consts, confidence, lr = operands
        delta, adam_state, best_x, best_l2, found, prev_loss, stop, evaluations = carry

        def loss_fn(d):
            xp = from_tanh_space(w0 + d)
            logits = fn(xp)
            base.check_logits(logits, classes, "carlini_wagner_l2")
            dist = jnp.sum(jnp.square(xp - x_ref).reshape(xp.shape[0], -1), axis=1)
            total = jnp.sum(dist + consts * f6(logits, classes, self.targeted, confidence))
            return total, (xp, logits)

        (loss, (xp, logits)), g = jax.value_and_grad(loss_fn, has_aux=True)(delta)
        evaluations = evaluations + jnp.where(stop, 0, 1).astype(evaluations.dtype)
        if self.abort_early:
            check = i % self.check_every == 0
            stop = stop | (check & ~(loss <= 0.9999 * prev_loss))
            prev_loss = jnp.where(check & ~stop, loss, prev_loss)
        updates, new_adam_state = _ADAM.update(g, adam_state)
        keep = lambda new, old: jnp.where(stop, old, new)  # noqa: E731
        delta = keep(delta - lr * updates, delta)
        adam_state = jax.tree.map(keep, new_adam_state, adam_state)

        adv = base.is_adversarial(logits, classes, self.targeted, confidence) & ~stop
        l2 = base.l2_norm(xp - x)
        better = adv & (l2 < best_l2)
        best_x = base.select(better, xp, best_x)
        best_l2 = jnp.where(better, l2, best_l2)
        found = found | adv
        return delta, adam_state, best_x, best_l2, found, prev_loss, stop, evaluations


def _stopped(operands, carry) -> jax.Array:
    return carry[6]


@xla.jit
def _init_carry(x, best_x, best_l2):
    delta = jnp.zeros_like(x)
    n = x.shape[0]
    return (
        delta, _ADAM.init(delta), best_x, best_l2, jnp.zeros((n,), bool),
        jnp.asarray(jnp.inf, x.dtype), jnp.asarray(False), jnp.asarray(0, jnp.int32),
    )  # fmt: skip


@xla.jit
def _prepare(x):
    w0 = to_tanh_space(x)
    return w0, from_tanh_space(w0)


def carlini_wagner_l2(
    logits_fn: Callable,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    targeted: bool = False,
    targets: jax.Array | None = None,
    binary_search_steps: int = 9,
    steps: int = 10000,
    learning_rate: float = 1e-2,
    initial_const: float = 1e-3,
    confidence: float = 0.0,
    abort_early: bool = True,
    loop: str = "auto",
    unroll: int = 10,
) -> AttackResult:
    """The Carlini-Wagner L2 attack (Carlini and Wagner 2017).

    Minimises ``|x' - x|_2^2 + c * f6(x')`` over x' = (tanh(w) + 1) / 2 with Adam (optax), where
    f6 is max(z_y - max_{j != y} z_j + kappa, 0) (targeted: max(max_{j != t} z_j - z_t + kappa, 0)).
    A binary search over c per example: c starts at ``initial_const``; after each of the
    ``binary_search_steps`` runs of ``steps`` Adam steps, c becomes c * 10 while no adversarial was
    found for the example, and the midpoint of the bracket once one was. Early abort (as Carlini's
    reference code and foolbox): every ceil(steps / 10) steps, starting with the first, a run stops
    (before that step's update) when the batch's total loss has not fallen by 0.01% since the
    previous check. Across all runs, each example keeps its
    closest (L2) point that is adversarial with margin ``confidence``; where none was found, x_adv
    is x.

    Args:
      logits_fn, x, labels, key, targeted, targets: the common attack arguments (key is unused;
        the attack is deterministic).
      binary_search_steps: number of values of c tried per example.
      steps: Adam steps per value of c.
      learning_rate: Adam's step size.
      initial_const: first value of c.
      confidence: kappa, the logit margin a result must have.
      abort_early: stop a run that no longer improves.
      loop, unroll: loop runner (see :func:`hbjax.attacks.pgd`); both give the same result.

    References:
      Carlini and Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017.
    """
    name = "carlini_wagner_l2"
    x, labels, classes = base.check_inputs(x, labels, targeted=targeted, targets=targets, name=name, logits_fn=logits_fn)
    binary_search_steps = base.check_count(binary_search_steps, "binary_search_steps", name)
    steps = base.check_count(steps, "steps", name)
    learning_rate = base.check_positive(learning_rate, "learning_rate", name)
    initial_const = base.check_positive(initial_const, "initial_const", name)
    confidence = base.check_nonnegative(confidence, "confidence", name)
    unroll = base.check_count(unroll, "unroll", name)
    loop = base.resolve_loop(loop, name)
    fn = base.as_pytree_fn(logits_fn)

    check_every = int(np.ceil(steps / 10))
    chunk = base.chunk_size(steps, unroll)
    step = CWStep(bool(targeted), check_every, bool(abort_early))
    n = x.shape[0]
    dtype = x.dtype
    w0, x_ref = _prepare(x)
    consts = np.full((n,), initial_const, np.float64)
    lower = np.zeros((n,))
    upper = np.full((n,), np.inf)
    best_x, best_l2 = x, jnp.full((n,), jnp.inf, dtype)
    calls = 0
    for _ in range(binary_search_steps):
        operands = (
            fn, x, w0, x_ref, classes, jnp.asarray(consts, dtype), jnp.asarray(confidence, dtype),
            jnp.asarray(learning_rate, dtype),
        )  # fmt: skip
        carry = _init_carry(x, best_x, best_l2)
        carry, _ = base.iterate(
            step, operands, carry, steps, loop=loop, unroll=chunk,
            done=_stopped if abort_early else None,
        )  # fmt: skip
        _, _, best_x, best_l2, found, _, _, evaluations = carry
        calls += int(evaluations)
        found = np.asarray(found)
        upper = np.where(found, np.minimum(upper, consts), upper)
        lower = np.where(found, lower, np.maximum(lower, consts))
        consts = np.where(np.isinf(upper), consts * 10.0, (lower + upper) / 2.0)
    return base.finalize(fn, x, best_x, classes, targeted, calls, minimization=True)

