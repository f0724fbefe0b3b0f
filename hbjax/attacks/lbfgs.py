"""The box-constrained L-BFGS attack of Szegedy et al. (2013), with a batched projected L-BFGS."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from hbjax import xla
from hbjax.attacks import base
from hbjax.attacks.base import AttackResult


def adversarial_loss(logits: jax.Array, classes: jax.Array, targeted: bool) -> jax.Array:
    """Per-example loss the attack minimises: the cross-entropy of the target (targeted), or
    -log(1 - p_y), the cross-entropy of "any class but the label" (untargeted); both >= 0."""
    lse = jax.nn.logsumexp(logits, axis=-1)
    if targeted:
        return lse - base.class_logit(logits, classes)
    others = jnp.where(jax.nn.one_hot(classes, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return lse - jax.nn.logsumexp(others, axis=-1)


def _objective(fn, z, x, classes, consts, targeted):
    """sum over the batch of |z - x|^2 + c * loss(z); aux: (per-example values, logits)."""
    logits = fn(z)
    base.check_logits(logits, classes, "lbfgs")
    dist = jnp.sum(jnp.square(z - x).reshape(z.shape[0], -1), axis=1)
    values = dist + consts * adversarial_loss(logits, classes, targeted)
    return jnp.sum(values), (values, logits)


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.sum((a * b).reshape(a.shape[0], -1), axis=1)


@dataclasses.dataclass(frozen=True)
class LBFGSStep(base.Settings):
    """One iteration of projected L-BFGS on each example's objective (independently).

    The direction is the two-loop recursion's -H g restricted to the free variables (those not at
    a bound of [0, 1] with the gradient pushing outwards); when it is not a descent direction the
    example's memory is cleared and the scaled projected gradient is used. A backtracking line
    search along the projected path clip(z + t d, 0, 1) halves t from 1 until the Armijo condition
    f(z_t) <= f(z) + 1e-4 g.(z_t - z) holds (at most ``line_search`` trials, each a gradient
    evaluation of the whole batch; examples that already accepted a step sit out the rest). An
    example stops when no step is acceptable or its objective falls by less than a relative 2.2e-9
    (scipy's factr = 1e7 in float64; ten machine epsilons in float32). Curvature pairs (s, y) with
    s.y <= 1e-10 y.y are skipped.

    Operands: (fn, x, classes, consts). Carry: dict (see :func:`_init`).
    """

    targeted: bool
    memory: int
    line_search: int

    def __call__(self, operands, i, c):
        fn, x, classes, consts = operands
        z, f, g, active = c["z"], c["f"], c["g"], c["active"]
        d, rho = _direction(z, g, c["S"], c["Y"], c["rho"], c["gamma"], c["k"], self.memory)
        accepted, z_new, f_new, g_new, adv, trials = self._line_search(
            fn, x, classes, consts, z, f, g, d, active
        )
        # an example stops (for this c) when no step passes the line search or the objective
        # no longer decreases (relative change below ftol, scipy's L-BFGS-B rule)
        ftol = max(2.2e-9, 10 * float(jnp.finfo(z.dtype).eps))
        stalled = (f - f_new) <= ftol * jnp.maximum(jnp.maximum(jnp.abs(f), jnp.abs(f_new)), 1.0)
        accepted = accepted & active
        active = accepted & ~stalled
        S, Y, rho, gamma = _remember(
            c["S"], c["Y"], rho, c["gamma"], c["k"], self.memory, z_new - z, g_new - g, accepted
        )
        l2 = base.l2_norm(z_new - x)
        better = accepted & adv & (l2 < c["best_l2"])
        return dict(
            z=z_new, f=f_new, g=g_new, S=S, Y=Y, rho=rho, gamma=gamma, k=c["k"] + 1,
            best_x=base.select(better, z_new, c["best_x"]),
            best_l2=jnp.where(better, l2, c["best_l2"]),
            found=c["found"] | (accepted & adv),
            active=active,
            calls=c["calls"] + trials,
        )  # fmt: skip

    def _line_search(self, fn, x, classes, consts, z, f, g, d, active):
        """Backtracking along clip(z + t d, 0, 1) from t = 1 (Armijo); returns (accepted, z, f, g,
        adversarial, trials), each example's values at its accepted step (else unchanged)."""
        bc = lambda v: base._bcast(v, z)  # noqa: E731

        def trial(state):
            t, accepted, z_new, f_new, g_new, adv, trials = state
            z_t = jnp.clip(z + bc(t) * d, 0.0, 1.0)
            (_, (f_t, logits)), g_t = jax.value_and_grad(_objective, argnums=1, has_aux=True)(
                fn, z_t, x, classes, consts, self.targeted
            )
            armijo = f_t <= f + 1e-4 * _dot(g, z_t - z)
            new = ~accepted & armijo & jnp.isfinite(f_t)
            z_new = base.select(new, z_t, z_new)
            f_new = jnp.where(new, f_t, f_new)
            g_new = base.select(new, g_t, g_new)
            adv = jnp.where(new, base.is_adversarial(logits, classes, self.targeted), adv)
            accepted = accepted | new
            t = jnp.where(accepted, t, t * 0.5)
            return t, accepted, z_new, f_new, g_new, adv, trials + 1

        def more(state):
            _, accepted, *_, trials = state
            return ~jnp.all(accepted) & (trials < self.line_search)

        n = z.shape[0]
        state = (
            jnp.ones((n,), z.dtype), ~active, z, f, g, jnp.zeros((n,), bool),
            jnp.asarray(0, jnp.int32),
        )  # fmt: skip
        # the first trial (t = 1, usually accepted) outside the loop: an XLA loop body runs
        # slower on CPU than straight-line code
        state = jax.lax.while_loop(more, trial, trial(state))
        _, accepted, z_new, f_new, g_new, adv, trials = state
        return accepted, z_new, f_new, g_new, adv, trials


def _direction(z, g, S, Y, rho, gamma, k, m: int):
    """The search direction: the two-loop recursion's -H g on the free variables (those not at a
    bound of [0, 1] with the gradient pushing outwards), or the scaled projected gradient where
    that is not a descent direction (whose memory is then cleared: rho 0). Returns (d, rho)."""
    bc = lambda v: base._bcast(v, z)  # noqa: E731
    free = ~(((z <= 0.0) & (g > 0.0)) | ((z >= 1.0) & (g < 0.0)))
    q = jnp.where(free, g, 0.0)
    alphas = []
    newest = k - 1
    for j in range(m):  # newest to oldest
        slot = (newest - j) % m
        a = rho[slot] * _dot(S[slot], q)
        q = q - bc(a) * Y[slot]
        alphas.append((slot, a))
    r = bc(gamma) * q
    for slot, a in reversed(alphas):  # oldest to newest
        b = rho[slot] * _dot(Y[slot], r)
        r = r + S[slot] * bc(a - b)
    d = -jnp.where(free, r, 0.0)
    descent = _dot(g, d) < 0.0
    fallback = -bc(gamma) * jnp.where(free, g, 0.0)
    d = base.select(descent, d, fallback)
    rho = jnp.where(descent[None, :], rho, 0.0)
    return d, rho


def _remember(S, Y, rho, gamma, k, m: int, s, y, accepted):
    """Stores the curvature pair (s, y) of each accepted step in slot k mod m, skipping pairs with
    s.y <= 1e-10 y.y; an example without an accepted step forgets its memory. Returns (S, Y, rho,
    gamma)."""
    sy, yy = _dot(s, y), _dot(y, y)
    valid = accepted & (sy > 1e-10 * yy) & (sy > 0.0)
    slot = k % m
    S = S.at[slot].set(base.select(valid, s, jnp.zeros_like(s)))
    Y = Y.at[slot].set(base.select(valid, y, jnp.zeros_like(y)))
    rho = rho.at[slot].set(jnp.where(valid, 1.0 / jnp.where(valid, sy, 1.0), 0.0))
    rho = jnp.where(accepted[None, :], rho, 0.0)
    gamma = jnp.where(valid, sy / jnp.where(valid, yy, 1.0), gamma)
    return S, Y, rho, gamma


def _all_stopped(operands, carry) -> jax.Array:
    return ~jnp.any(carry["active"])


@functools.partial(xla.jit, static_argnames=("targeted", "memory"))
def _init(fn, x, classes, consts, best_x, best_l2, *, targeted, memory):
    (_, (f, logits)), g = jax.value_and_grad(_objective, argnums=1, has_aux=True)(
        fn, x, x, classes, consts, targeted
    )
    n = x.shape[0]
    gnorm = base.l2_norm(jnp.where(((x <= 0) & (g > 0)) | ((x >= 1) & (g < 0)), 0.0, g))
    zeros = jnp.zeros((memory,) + x.shape, x.dtype)
    return dict(
        z=x, f=f, g=g, S=zeros, Y=zeros, rho=jnp.zeros((memory, n), x.dtype),
        # the first step has unit L2 length (scipy's L-BFGS-B starts the same way)
        gamma=1.0 / jnp.maximum(gnorm, 1e-12), k=jnp.asarray(0, jnp.int32),
        best_x=best_x, best_l2=best_l2, found=jnp.zeros((n,), bool),
        active=jnp.ones((n,), bool), calls=jnp.asarray(1, jnp.int32),
    )  # fmt: skip


def lbfgs(
    logits_fn: Callable,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    targeted: bool = False,
    targets: jax.Array | None = None,
    search_steps: int = 10,
    initial_const: float = 1e-2,
    steps: int = 100,
    memory: int = 10,
    line_search: int = 10,
    loop: str = "auto",
    unroll: int = 1,
) -> AttackResult:
    """The L-BFGS attack of Szegedy et al. (2013): box-constrained minimisation of
    ``|x' - x|_2^2 + c * loss(x')`` over x' in [0, 1], with a search over c per example.

    The paper states the problem as minimising ``c' |r| + loss``; here the constant multiplies the
    loss instead (c = 1 / c'), as foolbox 2 did, so a larger c favours misclassification. The
    search starts at ``initial_const`` and doubles c while the example has no adversarial result,
    then bisects between the largest failing and the smallest successful c, for
    ``search_steps`` values in all. The loss is the cross-entropy of the target (the paper's
    targeted attack) or, untargeted, -log(1 - p_label).

    The box-constrained minimisation is a batched projected L-BFGS written for this attack (each
    example its own problem, memory and step length; see :class:`LBFGSStep`): ``steps``
    iterations of at most ``line_search`` objective evaluations each, with ``memory`` curvature
    pairs, starting from x. Across every c and iteration, each example keeps its closest (L2)
    adversarial point; where none was found, x_adv is x.

    Args:
      logits_fn, x, labels, key, targeted, targets: the common attack arguments (key is unused;
        the attack is deterministic). The paper's attack is targeted.
      search_steps: number of values of c tried per example.
      initial_const: first value of c.
      steps: L-BFGS iterations per value of c.
      memory: number of curvature pairs L-BFGS keeps.
      line_search: most objective evaluations per iteration.
      loop, unroll: loop runner (see :func:`hbjax.attacks.pgd`); one iteration a chunk by
        default, since an iteration holds a line-search loop and compiles slowly.

    References:
      Szegedy, Zaremba, Sutskever, Bruna, Erhan, Goodfellow, Fergus, "Intriguing properties of
      neural networks", ICLR 2014 (arXiv:1312.6199).
    """
    name = "lbfgs"
    x, labels, classes = base.check_inputs(x, labels, targeted=targeted, targets=targets, name=name, logits_fn=logits_fn)
    search_steps = base.check_count(search_steps, "search_steps", name)
    initial_const = base.check_positive(initial_const, "initial_const", name)
    steps = base.check_count(steps, "steps", name)
    memory = base.check_count(memory, "memory", name)
    line_search = base.check_count(line_search, "line_search", name)
    unroll = base.check_count(unroll, "unroll", name)
    loop = base.resolve_loop(loop, name)
    fn = base.as_pytree_fn(logits_fn)

    step = LBFGSStep(bool(targeted), memory, line_search)
    n = x.shape[0]
    dtype = x.dtype
    consts = np.full((n,), initial_const, np.float64)
    lower = np.zeros((n,))
    upper = np.full((n,), np.inf)
    best_x, best_l2 = x, jnp.full((n,), jnp.inf, dtype)
    calls = 0
    for _ in range(search_steps):
        c = jnp.asarray(consts, dtype)
        carry = _init(fn, x, classes, c, best_x, best_l2, targeted=bool(targeted), memory=memory)
        carry, _ = base.iterate(
            step, (fn, x, classes, c), carry, steps, loop=loop, unroll=unroll, done=_all_stopped
        )
        best_x, best_l2 = carry["best_x"], carry["best_l2"]
        calls += int(carry["calls"])
        found = np.asarray(carry["found"])
        upper = np.where(found, np.minimum(upper, consts), upper)
        lower = np.where(found, lower, np.maximum(lower, consts))
        consts = np.where(np.isinf(upper), consts * 2.0, (lower + upper) / 2.0)
    return base.finalize(fn, x, best_x, classes, targeted, calls, minimization=True)
