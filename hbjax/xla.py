"""How hbjax compiles: :func:`jit` is ``jax.jit`` with the XLA compiler options of
:func:`compiler_options`.

On the CPU, recent XLA (jaxlib 0.10) hands convolutions, matrix products and the elementwise
work around them to YNNPACK fusions by default. For the 3x3 convolutions of VGG, XLA's own (Eigen)
convolutions were faster on the x86 CPUs measured (the numbers: docs/lrp.md, "The CPU compiler
options"). On the CPU backend, where the running XLA knows the option, hbjax therefore compiles
with ``xla_cpu_experimental_ynn_fusion_type = LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``: YNNPACK for
matrix products only. Other backends get no options. Set the environment variable
``HBJAX_XLA_DEFAULTS=1`` to compile with XLA's defaults.

Only convolutions move: matrix products stay with YNNPACK, whose product with a transposed
(out, in) kernel (the relevance and gradient of a dense layer) is much faster than XLA's own.
The functions hbjax jits use :func:`jit`, except :mod:`hbjax.metrics` (sorts and reductions, no
convolutions), whose own functions keep ``jax.jit``, as XLA's default fusions are faster for them. A
function you jit yourself around hbjax's pure functions is compiled with your options: use
:func:`jit` (or pass ``compiler_options()`` to ``jax.jit``) to get the same ones.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

CPU_OPTIONS: dict[str, Any] = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def compiler_options(backend: str | None = None) -> dict[str, Any]:
    """The XLA options hbjax compiles with on ``backend`` (default: JAX's default backend): on the
    CPU, convolutions out of YNNPACK (see the module docstring); elsewhere, or with
    ``HBJAX_XLA_DEFAULTS=1``, none."""
    if os.environ.get("HBJAX_XLA_DEFAULTS", "").strip() not in ("", "0"):
        return {}
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu" or not _cpu_accepts(tuple(CPU_OPTIONS.items())):
        return {}
    return dict(CPU_OPTIONS)


@functools.cache
def _cpu_accepts(options: tuple[tuple[str, Any], ...]) -> bool:
    """Whether this jaxlib's CPU compiler knows the options (older ones reject unknown names)."""
    try:
        jax.jit(jnp.negative).lower(jnp.zeros((), jnp.float32)).compile(compiler_options=dict(options))
    except (RuntimeError, ValueError):  # an unknown option or value: compile with XLA's defaults
        return False
    return True


def _needs_plain_jit(leaves) -> bool:
    """Whether a call must take the plain jit: an argument is traced (JAX takes compiler options
    only on a top-level jit) or floating-point but not float32 (the options are measured for
    float32; XLA's own float64 convolution is far slower than its default one)."""
    for leaf in leaves:
        if isinstance(leaf, jax.core.Tracer):
            return True
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and dtype != jnp.float32 and jnp.issubdtype(dtype, jnp.inexact):
            return True
    return False


def _inside_trace() -> bool:
    """Whether the caller runs inside a JAX trace (jit, make_jaxpr, eval_shape, ...): an array made
    there is a tracer."""
    return isinstance(jnp.zeros((), jnp.int8), jax.core.Tracer)


class _Jitted:
    """``jax.jit(fun, **kwargs)`` with :func:`compiler_options`, built at the first call, when the
    backend is known (so that importing hbjax does not start JAX's backends). JAX takes compiler
    options only on a top-level jit; called inside another jit (or grad, vmap, ...) it is a plain
    ``jax.jit(fun, **kwargs)``, compiled with the options of the outer function. Calls with any
    floating-point argument other than float32 (float64, bfloat16, ...) also take the plain jit."""

    def __init__(self, fun: Callable, kwargs: dict[str, Any]):
        self._fun = fun
        self._kwargs = kwargs
        self._jitted: Callable | None = None
        self._nested: Callable | None = None
        functools.update_wrapper(self, fun)

    def _get(self) -> Callable:
        if self._jitted is None:
            options = compiler_options()
            kwargs = dict(self._kwargs)
            if options:
                kwargs["compiler_options"] = {**options, **kwargs.get("compiler_options", {})}
            self._jitted = jax.jit(self._fun, **kwargs)
        return self._jitted

    def _plain(self) -> Callable:
        if self._nested is None:
            self._nested = jax.jit(self._fun, **self._kwargs)
        return self._nested

    def __call__(self, *args, **kwargs):
        if _needs_plain_jit(jax.tree_util.tree_leaves((args, kwargs))):
            return self._plain()(*args, **kwargs)
        try:
            return self._get()(*args, **kwargs)
        except ValueError:
            # JAX refuses compiler options below the top level; with no traced argument, only the
            # trace state tells (a ValueError of the function itself is raised again by the plain jit)
            if not _inside_trace():
                raise
            return self._plain()(*args, **kwargs)

    def __get__(self, obj, objtype=None):  # as a method decorator, like jax.jit
        return self if obj is None else functools.partial(self, obj)

    def __getattr__(self, name: str):  # lower, trace, eval_shape, ...
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._get(), name)


def jit(fun: Callable | None = None, **jit_kwargs: Any):
    """``jax.jit`` with :func:`compiler_options`; usable as ``jit(f, static_argnames=...)`` or as
    a decorator, ``@jit`` or ``@jit(static_argnames=...)``."""
    if fun is None:
        return lambda f: _Jitted(f, jit_kwargs)
    return _Jitted(fun, jit_kwargs)


def materialize(x: jnp.ndarray) -> jnp.ndarray:
    """x, written to memory before its readers run (a fusion boundary for XLA's CPU backend).

    XLA fuses an elementwise producer into each of its consumers; a stencil consumer that reads x at
    k*k offsets (the transpose of a depthwise conv written as shifted multiply-adds) then recomputes
    x's producer k*k times: in EfficientNet-Lite's input gradient the 3x3 depthwise blocks ran
    3-5x slower from that alone. XLA's CPU pipeline drops ``lax.optimization_barrier`` before
    fusion, and a conditional is a boundary it keeps: ``cond(isnan(x[0]), a, b)`` with two branches
    that both return x exactly (``b`` is x, ``a`` is ``where(isnan(x), nan, x)``), which XLA cannot
    fold because it cannot prove them equal. Differentiable (both branches are identities).
    """
    x = jnp.asarray(x)
    if x.size == 0:
        return x
    first = jnp.reshape(x, (-1,))[0]
    return jax.lax.cond(
        jnp.isnan(first), lambda a: jnp.where(jnp.isnan(a), jnp.nan, a).astype(a.dtype), lambda a: a, x
    )
