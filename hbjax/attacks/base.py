"""The parts every attack is built from: the result record, input checks, criteria, losses,
distances, projections and the loop runner.

Every attack answers the same call (foolbox 3's convention)::

    result = attack(logits_fn, x, labels, key, *, targeted=False, targets=None, **hyper_parameters)

``logits_fn(x) -> logits`` is any pure function of a batch ``x`` of shape (B, ...) with values in
[0, 1]. Passing it as a :class:`jax.tree_util.Partial` (or a :func:`functools.partial` whose bound
arguments are arrays, e.g. ``functools.partial(model.apply, model.params)``, or :func:`model_logits`)
lets the attack trace the parameters as arguments instead of embedding them as constants, and reuse
its compiled code across calls with new parameters. Any other callable is compiled per function
object: pass the same object again to reuse the compiled code.

The loop runner (:func:`iterate`) runs the steps of an attack as jitted chunks of unrolled steps
(``loop="unroll"``, fastest on CPU, where the body of an XLA while loop runs slower than the same
steps unrolled: docs/attacks.md) or as one ``lax`` loop (``loop="lax"``, the right tool on
accelerators); ``loop="auto"`` picks ``"unroll"`` on CPU and ``"lax"`` elsewhere.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hbjax import validation, xla
from hbjax.metrics import distances  # noqa: F401  (re-exported: the attacks' L2 / Linf)

LOOPS = ("auto", "unroll", "lax")
LOSSES = ("ce", "margin")
NORMS = ("linf", "l2")


class AttackResult(NamedTuple):
    """What every attack returns, per example of the batch.

    Attributes:
      x_adv: the adversarial inputs, same shape and dtype as ``x``, in [0, 1]. Minimisation attacks
        (CW, L-BFGS, Boundary) return ``x`` itself where they fail.
      success: (B,) bool, ``x_adv`` is misclassified (untargeted) or classified as its target
        (targeted), checked by one last evaluation of ``logits_fn``.
      l2: (B,) L2 distance between ``x_adv`` and ``x``.
      linf: (B,) Linf distance between ``x_adv`` and ``x``.
      model_calls: () int, evaluations of ``logits_fn`` on the batch (a gradient counts as one).
    """

    x_adv: jax.Array
    success: jax.Array
    l2: jax.Array
    linf: jax.Array
    model_calls: jax.Array


# --------------------------------------------------------------------------------- logits functions
def _is_array_leaf(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def as_pytree_fn(logits_fn: Callable) -> jax.tree_util.Partial:
    """``logits_fn`` as a :class:`jax.tree_util.Partial`, a pytree that jit takes as an argument.

    Array arguments bound by a ``Partial`` or a ``functools.partial`` become traced leaves (no
    constants folded into the compiled program); any other callable becomes a static part of the
    tree, compared by identity.
    """
    if isinstance(logits_fn, jax.tree_util.Partial):
        return logits_fn
    if isinstance(logits_fn, functools.partial):
        bound = (logits_fn.args, logits_fn.keywords)
        if all(_is_array_leaf(leaf) for leaf in jax.tree.leaves(bound)):
            return jax.tree_util.Partial(logits_fn.func, *logits_fn.args, **logits_fn.keywords)
    if not callable(logits_fn):
        raise TypeError(f"logits_fn must be callable (x -> logits); got {type(logits_fn).__name__}")
    return jax.tree_util.Partial(logits_fn)


@functools.lru_cache(maxsize=None)
def _model_apply(module: Any) -> Callable:
    def apply(params, x):
        return module.apply(params, x)

    return apply


def model_logits(model: Any, params: Any = None) -> jax.tree_util.Partial:
    """``x -> model.apply(params, x)`` as a pytree function (parameters traced, compiled code shared
    by every model of the same architecture). ``params`` defaults to ``model.params``."""
    params = model.params if params is None else params
    return jax.tree_util.Partial(_model_apply(model.module), params)


# ---------------------------------------------------------------------------------------- checks
def _concrete(a: Any) -> bool:
    return not isinstance(a, jax.core.Tracer)


def check_inputs(
    x: Any,
    labels: Any,
    *,
    targeted: bool,
    targets: Any,
    name: str,
    logits_fn: Any = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Validates an attack's inputs; returns (x, labels, classes) as arrays.

    ``classes`` are the targets for a targeted attack and the labels otherwise. Raises ValueError
    for a batch that is not floating point, not (B, ...) with B matching the labels, has values
    outside [0, 1] or NaN (checked when the values are concrete), for targeted without targets and
    for targets without targeted.
    """
    batch = getattr(labels, "shape", (None,))[:1]
    if getattr(x, "ndim", 0) == 3 and x.shape[-1] == 3 and batch != tuple(x.shape[:1]):
        raise validation.InputError(
            f"{name}: x must be a batch (B, ...); got one unbatched image of shape {tuple(x.shape)}: "
            "pass x[None] and labels of shape (1,)"
        )
    validation.check_images(x, where=name, image=False)
    num_classes = validation.num_classes_of(logits_fn, x) if logits_fn is not None else None
    for what, c in (("labels", labels), ("targets", targets if targeted else None)):
        if c is not None:
            validation.check_classes(c, batch=x.shape[0], num_classes=num_classes, name=what, where=name)
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{name}: x must be a batch of shape (B, ...); got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name}: x must be floating point in [0, 1]; got dtype {x.dtype}")
    if _concrete(x):
        xn = np.asarray(x)
        if not np.all(np.isfinite(xn)):
            raise ValueError(f"{name}: x contains NaN or infinite values")
        if xn.size and (xn.min() < 0.0 or xn.max() > 1.0):
            raise ValueError(
                f"{name}: x must lie in [0, 1]; got values in [{xn.min():.4g}, {xn.max():.4g}]"
            )
    labels = _check_classes(labels, x.shape[0], "labels", name)
    if targeted:
        if targets is None:
            raise ValueError(f"{name}: targeted=True needs targets (one class index per example)")
        targets = _check_classes(targets, x.shape[0], "targets", name)
        classes = targets
    else:
        if targets is not None:
            raise ValueError(f"{name}: targets were given but targeted=False; pass targeted=True")
        classes = labels
    return x, labels, classes


def _check_classes(c: Any, batch: int, what: str, name: str) -> jax.Array:
    c = jnp.asarray(c)
    if c.shape != (batch,):
        raise ValueError(f"{name}: {what} must have shape ({batch},), one per example; got {c.shape}")
    if not jnp.issubdtype(c.dtype, jnp.integer):
        raise ValueError(f"{name}: {what} must be integer class indices; got dtype {c.dtype}")
    if _concrete(c) and c.size and int(jnp.min(c)) < 0:
        raise ValueError(f"{name}: {what} must be non-negative class indices")
    return c


def check_choice(value: Any, choices: tuple, what: str, name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name}: {what} must be one of {choices}; got {value!r}")


def check_nonnegative(value: Any, what: str, name: str) -> float:
    v = float(value)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name}: {what} must be a finite number >= 0; got {value!r}")
    return v


def check_positive(value: Any, what: str, name: str) -> float:
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name}: {what} must be a finite number > 0; got {value!r}")
    return v


def check_count(value: Any, what: str, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name}: {what} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_logits(logits: jax.Array, classes: jax.Array, name: str) -> None:
    """Checks the model output's shape against the classes (at trace time)."""
    if logits.ndim != 2 or logits.shape[0] != classes.shape[0]:
        raise ValueError(f"{name}: logits_fn must return (B, num_classes) logits; got {logits.shape}")


# -------------------------------------------------------------------------- criteria and losses
def _others(logits: jax.Array, classes: jax.Array) -> jax.Array:
    """logits with the entry of ``classes`` set to -inf (for the best other class)."""
    onehot = jax.nn.one_hot(classes, logits.shape[-1], dtype=jnp.bool_)
    return jnp.where(onehot, -jnp.inf, logits)


def class_logit(logits: jax.Array, classes: jax.Array) -> jax.Array:
    return jnp.take_along_axis(logits, classes[:, None], axis=-1)[:, 0]


def margin(logits: jax.Array, classes: jax.Array, targeted: bool) -> jax.Array:
    """How far each example is on the adversarial side, in logits:

    untargeted max_{j != y} z_j - z_y, targeted z_t - max_{j != t} z_j. Positive: adversarial.
    """
    best_other = jnp.max(_others(logits, classes), axis=-1)
    own = class_logit(logits, classes)
    return own - best_other if targeted else best_other - own


def is_adversarial(
    logits: jax.Array, classes: jax.Array, targeted: bool, confidence: float | jax.Array = 0.0
) -> jax.Array:
    """Misclassification (untargeted, classes = labels) or target reached (targeted), with a margin
    of at least ``confidence`` in logits when it is positive (Carlini and Wagner's kappa)."""
    pred = jnp.argmax(logits, axis=-1)
    plain = (pred == classes) if targeted else (pred != classes)
    return jnp.where(jnp.asarray(confidence) > 0, margin(logits, classes, targeted) >= confidence, plain)


def attack_loss(logits: jax.Array, classes: jax.Array, kind: str, targeted: bool) -> jax.Array:
    """Per-example loss the attack ascends: ``ce`` cross-entropy of the label (untargeted) or minus
    the cross-entropy of the target (targeted); ``margin`` the logit margin of :func:`margin`."""
    if kind == "ce":
        logp = jax.nn.log_softmax(logits, axis=-1)
        ce = -class_logit(logp, classes)
        return -ce if targeted else ce
    if kind == "margin":
        return margin(logits, classes, targeted)
    raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")


# ------------------------------------------------------------------ distances and projections
def _flat(a: jax.Array) -> jax.Array:
    return a.reshape(a.shape[0], -1)


def _bcast(v: jax.Array, like: jax.Array) -> jax.Array:
    """(B,) -> (B, 1, ..., 1) to broadcast against like."""
    return v.reshape(v.shape + (1,) * (like.ndim - 1))


def l2_norm(a: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(_flat(a)), axis=1))


def linf_norm(a: jax.Array) -> jax.Array:
    return jnp.max(jnp.abs(_flat(a)), axis=1)




def project(delta: jax.Array, eps: jax.Array, norm: str) -> jax.Array:
    """The perturbation projected onto the eps-ball of the norm (eps scalar or (B,))."""
    eps = jnp.asarray(eps, delta.dtype)
    if norm == "linf":
        e = _bcast(jnp.broadcast_to(eps, delta.shape[:1]), delta)
        return jnp.clip(delta, -e, e)
    if norm == "l2":
        n = l2_norm(delta)
        factor = jnp.minimum(1.0, eps / jnp.maximum(n, jnp.finfo(delta.dtype).tiny))
        return delta * _bcast(factor, delta)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def normalize(g: jax.Array, norm: str) -> jax.Array:
    """The steepest-ascent direction of unit norm for a gradient g: sign(g) for Linf, g/|g|_2 for L2."""
    if norm == "linf":
        return jnp.sign(g)
    n = l2_norm(g)
    return g / _bcast(jnp.maximum(n, 1e-12), g)


def random_in_ball(key: jax.Array, x: jax.Array, eps: jax.Array, norm: str) -> jax.Array:
    """A uniform sample from the eps-ball of the norm around 0, one per example (same shape as x).

    Linf: U[-eps, eps] per coordinate. L2: a Gaussian direction with radius eps * U^(1/d), the
    uniform distribution on the d-dimensional ball.
    """
    eps = jnp.asarray(eps, x.dtype)
    if norm == "linf":
        return jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
    k_dir, k_rad = jax.random.split(key)
    direction = jax.random.normal(k_dir, x.shape, x.dtype)
    direction = direction / _bcast(jnp.maximum(l2_norm(direction), 1e-12), x)
    d = x[0].size
    radius = jax.random.uniform(k_rad, x.shape[:1], x.dtype) ** (1.0 / d) * eps
    return direction * _bcast(radius, x)


def clip_to_ball(x_adv: jax.Array, x: jax.Array, eps: jax.Array, norm: str) -> jax.Array:
    """x_adv projected onto the eps-ball around x, then clipped to [0, 1] (the box)."""
    return jnp.clip(x + project(x_adv - x, eps, norm), 0.0, 1.0)


# ------------------------------------------------------------------------------------ finalising
@functools.partial(xla.jit, static_argnames=("targeted",))
def _evaluate(fn, x, x_adv, classes, *, targeted):
    logits = fn(x_adv)
    pred = jnp.argmax(logits, -1)
    success = (pred == classes) if targeted else (pred != classes)
    l2, linf = distances(x_adv, x)
    return success, l2, linf, margin(logits, classes, targeted)


def evaluate(
    fn: jax.tree_util.Partial, x: jax.Array, x_adv: jax.Array, classes: jax.Array, targeted: bool
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(success, l2, linf, adversarial margin) of x_adv: one evaluation of fn, jitted."""
    return _evaluate(fn, x, x_adv, classes, targeted=bool(targeted))


def finalize(
    fn: jax.tree_util.Partial,
    x: jax.Array,
    x_adv: jax.Array,
    classes: jax.Array,
    targeted: bool,
    model_calls: Any,
    *,
    minimization: bool = False,
) -> AttackResult:
    """The :class:`AttackResult` of x_adv: success by one more evaluation, distances, call count.

    For a minimisation attack, x_adv becomes x where that evaluation finds no success (a point
    found adversarial inside the loop can, by float rounding, fall back on the boundary)."""
    x_adv = jnp.clip(x_adv, 0.0, 1.0).astype(x.dtype)
    success, l2, linf, _ = evaluate(fn, x, x_adv, classes, targeted)
    if minimization:
        x_adv = select(success, x_adv, x)
        l2 = jnp.where(success, l2, 0.0)
        linf = jnp.where(success, linf, 0.0)
    calls = jnp.asarray(model_calls, jnp.int32) + 1
    return AttackResult(x_adv, success, l2, linf, calls)


def select(cond: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """Per-example where: cond (B,) chooses between a and b of shape (B, ...)."""
    return jnp.where(_bcast(cond, a), a, b)


# ---------------------------------------------------------------------------------- loop runner
def resolve_loop(loop: str, name: str) -> str:
    check_choice(loop, LOOPS, "loop", name)
    if loop == "auto":
        return "unroll" if jax.default_backend() == "cpu" else "lax"
    return loop


def chunk_size(num_steps: int, unroll: int) -> int:
    """Steps per unrolled chunk: at most ``unroll``, preferring a divisor of num_steps in
    [unroll/2, unroll] so that every chunk has the same length (one compilation)."""
    if num_steps <= unroll:
        return max(1, num_steps)
    for n in range(unroll, max(1, unroll // 2) - 1, -1):
        if num_steps % n == 0:
            return n
    return unroll


@functools.partial(xla.jit, static_argnames=("step", "done", "num_steps"))
def _run_unrolled(step, done, operands, carry, start, *, num_steps):
    for j in range(num_steps):
        carry = step(operands, start + j, carry)
    stop = done(operands, carry) if done is not None else jnp.asarray(False)
    return carry, stop


@functools.partial(xla.jit, static_argnames=("step", "done"))
def _run_lax(step, done, operands, carry, start, stop):
    def body(state):
        i, c = state
        return i + 1, step(operands, i, c)

    def cond(state):
        i, c = state
        going = i < stop
        if done is not None:
            # checked after every chunk by the unrolled runner and after every step here: the
            # same result, since done may only turn true at a chunk's last step
            going = going & jnp.logical_not(done(operands, c))
        return going

    i, carry = jax.lax.while_loop(cond, body, (jnp.asarray(start, jnp.int32), carry))
    return carry, i - start


def iterate(
    step: Callable,
    operands: Any,
    carry: Any,
    num_steps: int,
    *,
    loop: str = "unroll",
    unroll: int = 10,
    done: Callable | None = None,
) -> tuple[Any, Any]:
    """Runs ``carry = step(operands, i, carry)`` for i = 0 .. num_steps - 1; returns (carry, steps).

    ``step`` and ``done`` must be hashable by value (frozen dataclasses or module-level functions)
    so that compiled chunks are reused across calls. ``done(operands, carry) -> bool``, if given,
    ends the loop early: ``"lax"`` checks it after every step, ``"unroll"`` after every chunk, so
    both give the same result only if done turns true at a chunk's last step or the steps after it
    change nothing. ``loop="unroll"``: Python runs jitted chunks of ``unroll`` unrolled steps (all
    of one length when done is None, see :func:`chunk_size`); ``"lax"``: one ``lax.while_loop``.
    """
    if num_steps <= 0:
        return carry, 0
    if loop == "lax":
        carry, steps = _run_lax(step, done, operands, carry, jnp.int32(0), jnp.int32(num_steps))
        return carry, steps
    if loop != "unroll":
        raise ValueError(f"unknown loop {loop!r}; expected 'unroll' or 'lax'")
    n = chunk_size(num_steps, unroll) if done is None else unroll
    i = 0
    while i < num_steps:
        k = min(n, num_steps - i)
        carry, stop = _run_unrolled(step, done, operands, carry, jnp.int32(i), num_steps=k)
        i += k
        if done is not None and bool(stop):
            break
    return carry, i


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base for the frozen, hashable static settings of an attack's step function."""
