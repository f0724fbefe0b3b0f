"""hbjax.jit: jax.jit with hbjax's XLA options, top level or nested, and the options themselves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import hbjax
from hbjax import xla


def conv_relu(x, w):
    return jax.nn.relu(lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))


def test_options_follow_the_backend_and_the_environment(monkeypatch):
    monkeypatch.delenv("HBJAX_XLA_DEFAULTS", raising=False)
    assert xla.compiler_options("gpu") == {}
    assert xla.compiler_options("tpu") == {}
    cpu = xla.compiler_options("cpu")
    assert cpu in ({}, xla.CPU_OPTIONS)  # {} only where this XLA does not know the option
    monkeypatch.setenv("HBJAX_XLA_DEFAULTS", "1")
    assert xla.compiler_options("cpu") == {}


def test_an_option_xla_does_not_know_falls_back_to_the_defaults():
    assert not xla._cpu_accepts((("xla_cpu_no_such_option_for_hbjax", True),))


def test_jit_gives_jax_jit_results_at_top_level_and_nested():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
    expected = jax.jit(conv_relu)(x, w)
    fast = hbjax.jit(conv_relu)
    np.testing.assert_allclose(fast(x, w), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda a: fast(a, w) * 2)(x), 2 * expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda: fast(x, w))(), expected, rtol=1e-5, atol=1e-6)  # no traced argument
    np.testing.assert_allclose(jax.vmap(lambda a: fast(a[None], w)[0])(x), expected, rtol=1e-5, atol=1e-6)
    g = jax.grad(lambda a: fast(a, w).sum())(x)
    np.testing.assert_allclose(g, jax.grad(lambda a: conv_relu(a, w).sum())(x), rtol=1e-5, atol=1e-5)


def test_an_error_of_the_function_itself_is_raised_at_top_level_and_nested():
    def bad(x):
        raise ValueError("bad input for hbjax")

    x = jnp.ones(2, jnp.float32)
    with pytest.raises(ValueError, match="bad input for hbjax"):
        hbjax.jit(bad)(x)
    with pytest.raises(ValueError, match="bad input for hbjax"):
        jax.jit(lambda: hbjax.jit(bad)(x))()  # no traced argument: the plain jit raises it again


def test_float64_calls_compile_with_the_defaults():
    """XLA's own float64 convolution is far slower than the default one: float64 calls take a plain
    jax.jit, float32 calls the options."""
    if jax.default_backend() != "cpu" or not xla.compiler_options():
        pytest.skip("the option applies to the CPU backend of an XLA that knows it")
    fast = hbjax.jit(conv_relu)
    with jax.enable_x64(True):
        x = jnp.zeros((1, 8, 8, 4), jnp.float64)
        w = jnp.zeros((3, 3, 4, 4), jnp.float64)
        fast(x, w)
        assert fast._nested is not None and fast._jitted is None
    fast(x.astype(jnp.float32), w.astype(jnp.float32))
    assert fast._jitted is not None


def test_jit_as_a_decorator_with_static_arguments():
    @xla.jit(static_argnames=("power",))
    def raise_to(x, power):
        return x**power

    assert float(raise_to(jnp.float32(3.0), power=2)) == 9.0
    assert raise_to.__name__ == "raise_to"
    assert "raise_to" in raise_to.lower(jnp.float32(1.0), power=3).as_text()


def test_jit_decorates_methods():
    class Scale:
        factor = 3.0

        @xla.jit(static_argnums=0)
        def apply(self, x):
            return x * self.factor

    assert float(Scale().apply(jnp.float32(2.0))) == 6.0


def test_convolutions_leave_ynnpack_on_the_cpu():
    if jax.default_backend() != "cpu" or not xla.compiler_options():
        pytest.skip("the option applies to the CPU backend of an XLA that knows it")
    x = jnp.zeros((1, 8, 8, 16), jnp.float32)
    w = jnp.zeros((3, 3, 16, 16), jnp.float32)
    text = hbjax.jit(conv_relu).lower(x, w).compile().as_text()
    entry = text[text.index("ENTRY") :]
    assert " convolution(" in entry  # XLA's own convolution, not inside a YNNPACK fusion


def test_materialize_is_the_identity_with_its_gradient():
    x = jnp.asarray([[jnp.nan, 1.5, -2.0], [jnp.inf, 0.0, 3.0]])
    for a in (x, x[::-1], jnp.zeros((0, 3))):
        np.testing.assert_array_equal(xla.materialize(a), a)
        np.testing.assert_array_equal(jax.jit(xla.materialize)(a), a)
    y = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(jax.grad(lambda a: jnp.sum(xla.materialize(a) * a))(y), 2 * y)


def test_materialize_leaves_a_fusion_boundary_in_the_compiled_program():
    """The reason it exists: XLA keeps the boundary (a conditional) after its optimisations."""
    hlo = jax.jit(lambda a: xla.materialize(a * 2) + 1).lower(jnp.ones((4, 4))).compile().as_text()
    assert "conditional" in hlo
