"""The one input check of the library's public entry points (hbjax.lrp, hbjax.defense,
hbjax.attacks, hbjax.metrics).

Checks run on concrete arrays, outside ``jit``: a traced argument passes through unchecked, so
jitted code carries no checks and no host round trips. Every failure is an
:class:`hbjax.errors.InputError` (a ``ValueError``) whose message names the argument and the problem.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hbjax.errors import InputError

__all__ = ["InputError", "check_classes", "check_images", "check_logits", "is_concrete", "num_classes_of"]


def is_concrete(x: Any) -> bool:
    """True for values the host can read (numpy or committed jax arrays), False under tracing."""
    return not isinstance(x, jax.core.Tracer)


def check_images(
    x: Any, *, name: str = "x", where: str = "", image: bool = True, allow_empty: bool = False
) -> None:
    """Checks a batch of inputs in [0, 1].

    Args:
      x: the batch; with ``image=True`` of shape (B, H, W, 3), else (B, ...).
      name: the argument's name in messages.
      where: the function's name, prefixed to messages.
      image: require (B, H, W, 3) RGB images.
      allow_empty: accept B = 0.

    Raises:
      InputError: not an array, an unbatched image, wrong rank or channels, not floating point,
        an empty batch, NaN or infinite values, values outside [0, 1].
    """
    at = f"{where}: " if where else ""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        raise InputError(f"{at}{name} must be an array; got {type(x).__name__}")
    if image:
        if len(shape) == 3 and shape[-1] == 3:
            raise InputError(
                f"{at}{name} must be a batch of shape (B, H, W, 3); got one unbatched image of "
                f"shape {tuple(shape)}: pass {name}[None]"
            )
        if len(shape) != 4 or shape[-1] != 3:
            raise InputError(
                f"{at}{name} must be a batch of RGB images of shape (B, H, W, 3); got shape {tuple(shape)}"
            )
    elif len(shape) < 2:
        raise InputError(f"{at}{name} must be a batch of shape (B, ...); got shape {tuple(shape)}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise InputError(f"{at}{name} must be floating point in [0, 1]; got dtype {dtype}")
    if shape[0] == 0 and not allow_empty:
        raise InputError(f"{at}{name} is an empty batch (shape {tuple(shape)}); pass at least one image")
    if not is_concrete(x) or not np.prod(shape):
        return
    lo, hi, finite = _range(x)
    if not bool(finite):
        bad = np.argwhere(~np.isfinite(np.asarray(x)))[0]
        raise InputError(f"{at}{name} must be finite; found {np.asarray(x)[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    if float(lo) < 0.0 or float(hi) > 1.0:
        raise InputError(f"{at}{name} must lie in [0, 1]; got values in [{float(lo):.4g}, {float(hi):.4g}]")


def _range(x: Any) -> tuple[Any, Any, Any]:
    """(min, max, all finite) in one pass: numpy for host arrays, one jitted reduction for jax's."""
    if isinstance(x, jax.Array):
        return _range_jit(x)
    x = np.asarray(x)
    return x.min(), x.max(), np.isfinite(x).all()


@jax.jit
def _range_jit(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    return jnp.min(x), jnp.max(x), jnp.isfinite(x).all()


def check_classes(
    c: Any, *, batch: int, num_classes: int | None = None, name: str = "labels", where: str = ""
) -> None:
    """Checks class indices: integer, shape (batch,), each in [0, num_classes) (when known).

    Raises:
      InputError: naming the argument, the expected shape or range and the offending value.
    """
    at = f"{where}: " if where else ""
    shape = getattr(c, "shape", None)
    dtype = getattr(c, "dtype", None)
    if shape is None:
        c = np.asarray(c)
        shape, dtype = c.shape, c.dtype
    if tuple(shape) != (batch,):
        raise InputError(f"{at}{name} must have shape ({batch},), one class index per example; got {tuple(shape)}")
    if dtype == bool or not jnp.issubdtype(dtype, jnp.integer):
        raise InputError(f"{at}{name} must be integer class indices; got dtype {dtype}")
    if not is_concrete(c) or not batch:
        return
    values = np.asarray(c)
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        limit = f"[0, {num_classes})" if num_classes is not None else "[0, num_classes)"
        bad = lo if lo < 0 else hi
        raise InputError(f"{at}{name} must lie in {limit} (the model's classes); got {bad}")


def num_classes_of(fn: Any, x: Any) -> int | None:
    """The number of classes a logits function (or an :class:`hbjax.models.Model`) gives for x,
    from its abstract evaluation (no computation); None when it cannot be told."""
    n = getattr(fn, "num_classes", None)
    if isinstance(n, int):
        return n
    try:
        out = jax.eval_shape(fn, jax.ShapeDtypeStruct(tuple(x.shape), x.dtype))
    except Exception:  # the attack's own checks report a function that does not fit
        return None
    shape = getattr(out, "shape", None)
    return int(shape[-1]) if shape is not None and len(shape) == 2 else None


def check_logits(logits: Any, *, name: str = "logits", where: str = "") -> None:
    """Checks (B, N) floating logits whose softmax is computable: finite values, and a spread
    max - min that does not overflow the dtype (softmax subtracts the row maximum)."""
    at = f"{where}: " if where else ""
    shape = getattr(logits, "shape", None)
    if shape is None or len(shape) != 2:
        raise InputError(f"{at}{name} must have shape (batch, classes); got shape {shape}")
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise InputError(f"{at}{name} must be floating point; got dtype {logits.dtype}")
    if not is_concrete(logits) or not np.prod(shape):
        return
    lo, hi, finite = _range(logits)
    if not bool(finite):
        a = np.asarray(logits)
        bad = np.argwhere(~np.isfinite(a))[0]
        raise InputError(f"{at}{name} must be finite; found {a[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    limit = float(jnp.finfo(logits.dtype).max) / max(2, shape[1])
    if max(abs(float(lo)), abs(float(hi))) > limit:
        raise InputError(
            f"{at}{name} are too large for a softmax in {logits.dtype}: |logit| up to "
            f"{max(abs(float(lo)), abs(float(hi))):.3g} (at most {limit:.3g}); rescale them"
        )
