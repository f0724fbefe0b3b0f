"""The Boundary attack (Brendel, Rauber and Bethge 2018): decision-based, it needs only the
model's top-1 decision."""

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


def _decide(fn, z, classes, targeted):
    logits = fn(z)
    base.check_logits(logits, classes, "boundary")
    pred = jnp.argmax(logits, axis=-1)
    return (pred == classes) if targeted else (pred != classes)


@functools.partial(xla.jit, static_argnames=("targeted",))
def _noise_trial(fn, x, classes, key, noise, found, *, targeted):
    """Uniform noise in [0, 1]; examples without an adversarial noise yet take it if it is one."""
    candidate = jax.random.uniform(key, x.shape, x.dtype)
    adv = _decide(fn, candidate, classes, targeted) & ~found
    return base.select(adv, candidate, noise), found | adv


@functools.partial(xla.jit, static_argnames=("targeted",))
def _blend_trial(fn, x, classes, noise, epsilon, best, *, targeted):
    """The smallest blend (1 - e) x + e noise found adversarial so far, per example."""
    blend = (1 - epsilon) * x + epsilon * noise
    adv = _decide(fn, blend, classes, targeted)
    return jnp.minimum(jnp.where(adv, epsilon, 1.0), best)


def blended_noise_start(
    fn: jax.tree_util.Partial,
    x: jax.Array,
    classes: jax.Array,
    key: jax.Array,
    *,
    targeted: bool,
    trials: int = 1000,
    blend_steps: int = 50,
) -> tuple[jax.Array, jax.Array, int]:
    """foolbox's linear-search blended uniform noise: per example, the first of up to ``trials``
    uniform-noise images that is adversarial, then the smallest blend factor e on a grid of
    ``blend_steps`` + 1 values in [0, 1] for which (1 - e) x + e noise is adversarial.

    Returns (starting points, found (B,), model calls).
    """
    n = x.shape[0]
    noise, found = x, jnp.zeros((n,), bool)
    calls = 0
    for t in range(trials):
        noise, found = _noise_trial(
            fn, x, classes, jax.random.fold_in(key, t), noise, found, targeted=targeted
        )
        calls += 1
        if bool(jnp.all(found)):
            break
    best = jnp.ones((n,), x.dtype)
    for epsilon in np.linspace(0.0, 1.0, blend_steps + 1, dtype=np.float64):
        best = _blend_trial(
            fn, x, classes, noise, jnp.asarray(epsilon, x.dtype), best, targeted=targeted
        )
        calls += 1
        if bool(jnp.all(best < 1)):
            break
    eps = base._bcast(best, x)
    return (1 - eps) * x + eps * noise, found, calls


def _queue_mean_full(data: jax.Array) -> tuple[jax.Array, jax.Array]:
    full = ~jnp.any(jnp.isnan(data), axis=0)
    mean = jnp.nanmean(jnp.where(full[None], data, 0.0), axis=0)
    return mean, full


@dataclasses.dataclass(frozen=True)
class BoundaryStep(base.Settings):
    """``every`` steps of the Boundary attack (foolbox 3's batched variant), the spherical
    candidate and the step-size statistics checked at the last of them.

    Each step draws a Gaussian perturbation orthogonal to the direction to x, scaled to
    ``spherical_step`` times the distance and projected back onto the sphere around x (the
    spherical candidate), then moves ``source_step`` times the distance towards x (the candidate);
    the candidate replaces the current point when it is adversarial and closer. Every ``every``
    steps the spherical candidate is also evaluated; over the last 100 such checks, a success rate
    above 0.5 multiplies both step sizes by ``adaptation``, below 0.2 divides them; over the last
    30 candidates, a rate above 0.25 multiplies the source step, below 0.1 divides it. An example
    has converged when its source step falls below ``convergence``.

    Operands: (fn, x, classes, key, adaptation, convergence). Carry: dict.
    """

    targeted: bool
    every: int

    def __call__(self, operands, i, c):
        fn, x, classes, key, adaptation, convergence = operands
        best, sph, src = c["best"], c["spherical_steps"], c["source_steps"]
        converged = src < convergence  # fixed for the whole macro step: stats update at its end
        for j in range(self.every):
            k = jax.random.fold_in(key, i * self.every + j)
            candidate, spherical = _proposals(k, x, best, sph, src)
            check = j == self.every - 1
            if check:
                pair = jnp.concatenate([candidate, spherical])
                both = _decide(fn, pair, jnp.concatenate([classes, classes]), self.targeted)
                adv, sph_adv = both[: x.shape[0]], both[x.shape[0] :]
            else:
                adv = _decide(fn, candidate, classes, self.targeted)
            closer = base.l2_norm(candidate - x) < base.l2_norm(best - x)
            update = adv & closer & ~converged
            best = base.select(update, candidate, best)
            if check:
                c = _update_stats(c, sph_adv, adv, adaptation, converged)
                sph, src = c["spherical_steps"], c["source_steps"]
        calls = c["calls"] + self.every + 1
        return dict(c, best=best, spherical_steps=sph, source_steps=src, calls=calls)


def _update_stats(c, sph_adv, adv, adaptation, converged):
    """foolbox's success-rate queues (NaN marks an empty slot) and step-size adaptation; the step
    sizes of converged examples stay as they are, so convergence is final."""
    sq, sq_next = c["sph_queue"], c["sph_next"]
    tq, tq_next = c["step_queue"], c["step_next"]
    sq = sq.at[sq_next].set(sph_adv.astype(sq.dtype))
    tq = tq.at[tq_next].set(adv.astype(tq.dtype))
    sq_next = (sq_next + 1) % sq.shape[0]
    tq_next = (tq_next + 1) % tq.shape[0]
    sph, src = c["spherical_steps"], c["source_steps"]

    probs, full = _queue_mean_full(sq)
    up = full & (probs > 0.5)
    down = full & (probs < 0.2)
    sph = jnp.where(up, sph * adaptation, jnp.where(down, sph / adaptation, sph))
    src = jnp.where(up, src * adaptation, jnp.where(down, src / adaptation, src))
    sq = jnp.where((up | down)[None], jnp.nan, sq)

    probs, full = _queue_mean_full(tq)
    up = full & (probs > 0.25)
    down = full & (probs < 0.1)
    src = jnp.where(up, src * adaptation, jnp.where(down, src / adaptation, src))
    tq = jnp.where((up | down)[None], jnp.nan, tq)
    sph = jnp.where(converged, c["spherical_steps"], sph)
    src = jnp.where(converged, c["source_steps"], src)
    return dict(
        c, sph_queue=sq, sph_next=sq_next, step_queue=tq, step_next=tq_next,
        spherical_steps=sph, source_steps=src,
    )  # fmt: skip


def _proposals(key, x, best, spherical_steps, source_steps):
    """foolbox 3's draw_proposals, with an independent Gaussian draw per example."""
    shape = x.shape
    n = shape[0]
    originals = x.reshape(n, -1)
    perturbed = best.reshape(n, -1)
    unnormalized = originals - perturbed
    source_norms = jnp.sqrt(jnp.sum(unnormalized**2, axis=1))
    directions = unnormalized / jnp.maximum(source_norms, 1e-12)[:, None]
    eta = jax.random.normal(key, originals.shape, x.dtype)
    eta = eta - jnp.sum(eta * directions, axis=1, keepdims=True) * directions
    norms = jnp.sqrt(jnp.sum(eta**2, axis=1))
    eta = eta * (spherical_steps * source_norms / jnp.maximum(norms, 1e-12))[:, None]
    distances = jnp.sqrt(spherical_steps**2 + 1)[:, None]
    spherical = jnp.clip(originals + (eta - unnormalized) / distances, 0.0, 1.0)
    new_directions = originals - spherical
    new_norms = jnp.sqrt(jnp.sum(new_directions**2, axis=1))
    lengths = source_steps * source_norms + new_norms - source_norms
    lengths = jnp.maximum(lengths, 0.0) / jnp.maximum(new_norms, 1e-12)
    candidate = jnp.clip(spherical + lengths[:, None] * new_directions, 0.0, 1.0)
    return candidate.reshape(shape), spherical.reshape(shape)


def _all_converged(operands, c) -> jax.Array:
    return jnp.all(c["source_steps"] < operands[-1])


@xla.jit
def _check_start(fn, x, classes, start, targeted_flag):
    logits = fn(start)
    pred = jnp.argmax(logits, -1)
    return jnp.where(targeted_flag, pred == classes, pred != classes)


def _starting_point(fn, x, classes, key, starting_points, *, targeted: bool, trials: int, name: str):
    """(start, found, model calls): the given ``starting_points`` (which must all be adversarial),
    else foolbox's blended uniform noise (untargeted only); x where no start was found."""
    if starting_points is None:
        if targeted:
            raise ValueError(
                f"{name}: a targeted Boundary attack needs starting_points of the target classes"
            )
        start, found, calls = blended_noise_start(fn, x, classes, key, targeted=False, trials=trials)
    else:
        start = jnp.asarray(starting_points, x.dtype)
        if start.shape != x.shape:
            raise ValueError(
                f"{name}: starting_points must have the shape of x {x.shape}; got {start.shape}"
            )
        found = _check_start(fn, x, classes, start, jnp.asarray(targeted))
        calls = 1
        if not bool(jnp.all(found)):
            raise ValueError(
                f"{name}: {int(jnp.sum(~found))} of {x.shape[0]} starting_points are not adversarial"
            )
    return base.select(found, start, x), found, calls


def _initial_carry(start: jax.Array, found: jax.Array, spherical_step: float, source_step: float) -> dict:
    """The walk's state: the current point, both step sizes and the success-rate queues of
    :class:`BoundaryStep`; examples without a start are converged from the outset (never move)."""
    n, dtype = start.shape[0], start.dtype
    src0 = jnp.where(found, jnp.asarray(source_step, dtype), jnp.asarray(0.0, dtype))
    return dict(
        best=start,
        spherical_steps=jnp.full((n,), spherical_step, dtype),
        source_steps=src0,
        sph_queue=jnp.full((100, n), jnp.nan, dtype), sph_next=jnp.asarray(0, jnp.int32),
        step_queue=jnp.full((30, n), jnp.nan, dtype), step_next=jnp.asarray(0, jnp.int32),
        calls=jnp.asarray(0, jnp.int32),
    )  # fmt: skip


def boundary(
    logits_fn: Callable,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    targeted: bool = False,
    targets: jax.Array | None = None,
    steps: int = 25000,
    spherical_step: float = 1e-2,
    source_step: float = 1e-2,
    source_step_convergence: float = 1e-7,
    step_adaptation: float = 1.5,
    update_stats_every: int = 10,
    starting_points: jax.Array | None = None,
    init_trials: int = 1000,
    loop: str = "auto",
    unroll: int = 1,
) -> AttackResult:
    """The Boundary attack (Brendel et al. 2018), a decision-based minimisation of the L2 distance,
    as foolbox 3 implements it (defaults from there).

    It starts from an adversarial point (``starting_points``, or foolbox's linear search along
    blends of x with uniform noise), then walks along the decision boundary towards x with
    orthogonal (spherical) and source steps whose sizes adapt to their success rates (see
    :class:`BoundaryStep`). The attack uses only argmax decisions of ``logits_fn``. Where no
    adversarial start is found, x_adv is x and success is False.

    Args:
      logits_fn, x, labels, key, targeted, targets: the common attack arguments. Targeted needs
        ``starting_points`` classified as the targets.
      steps: most steps (rounded up to a multiple of ``update_stats_every``); the attack stops
        earlier when every example has converged.
      spherical_step, source_step: initial step sizes, relative to the current distance.
      source_step_convergence: an example has converged when its source step falls below this.
      step_adaptation: factor by which step sizes grow or shrink.
      update_stats_every: steps between checks of the spherical candidate (one extra model call).
      starting_points: adversarial starting points (B, ...), optional.
      init_trials: most uniform-noise draws when searching a start.
      loop, unroll: loop runner (see :func:`hbjax.attacks.pgd`); a chunk holds ``unroll`` times
        ``update_stats_every`` unrolled steps.

    References:
      Brendel, Rauber, Bethge, "Decision-Based Adversarial Attacks: Reliable Attacks Against
      Black-Box Machine Learning Models", ICLR 2018.
    """
    name = "boundary"
    x, labels, classes = base.check_inputs(x, labels, targeted=targeted, targets=targets, name=name, logits_fn=logits_fn)
    steps = base.check_count(steps, "steps", name, minimum=0)
    spherical_step = base.check_positive(spherical_step, "spherical_step", name)
    source_step = base.check_positive(source_step, "source_step", name)
    source_step_convergence = base.check_positive(
        source_step_convergence, "source_step_convergence", name
    )
    step_adaptation = base.check_positive(step_adaptation, "step_adaptation", name)
    every = base.check_count(update_stats_every, "update_stats_every", name)
    init_trials = base.check_count(init_trials, "init_trials", name)
    unroll = base.check_count(unroll, "unroll", name)
    loop = base.resolve_loop(loop, name)
    fn = base.as_pytree_fn(logits_fn)
    k_init, k_walk = jax.random.split(key)

    start, found, calls = _starting_point(
        fn, x, classes, k_init, starting_points, targeted=bool(targeted), trials=init_trials, name=name
    )
    carry = _initial_carry(start, found, spherical_step, source_step)
    dtype = x.dtype
    operands = (
        fn, x, classes, k_walk, jnp.asarray(step_adaptation, dtype),
        jnp.asarray(source_step_convergence, dtype),
    )  # fmt: skip
    step = BoundaryStep(bool(targeted), every)
    macro_steps = -(-steps // every)
    carry, _ = base.iterate(
        step, operands, carry, macro_steps, loop=loop, unroll=unroll, done=_all_converged
    )
    calls += int(carry["calls"])
    best = base.select(found, carry["best"], x)
    return base.finalize(fn, x, best, classes, targeted, calls, minimization=True)
