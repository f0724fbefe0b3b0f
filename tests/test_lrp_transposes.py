"""The two shortcuts of the LRP backward (hbjax.lrp.layers): an all-ones kernel's transpose as a box
sum, and one transposed conv over stacked kernels, each equal to the plain transposed op."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hbjax.lrp import rules
from hbjax.lrp.layers import LayerRule, LinearOp, _transposes, lrp_linear


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("kind, in_shape, kernel_shape", [
    ("conv", (2, 7, 5, 3), (3, 3, 3, 4)),
    ("conv", (1, 1, 1, 2), (3, 3, 2, 3)),  # every window is mostly padding
    ("dense", (2, 6), (6, 5)),
])  # fmt: skip
def test_ones_transpose_equals_the_transpose_of_an_all_ones_kernel(kind, in_shape, kernel_shape):
    op = LinearOp(kind)
    out_shape = jax.eval_shape(lambda a: op(a, jnp.ones(kernel_shape)), jnp.zeros(in_shape)).shape
    g = jnp.asarray(np.random.default_rng(0).normal(size=out_shape))
    fast = op.transpose_ones(g, kernel_shape, in_shape)
    plain = op.transpose(g, jnp.ones(kernel_shape, g.dtype), in_shape)
    assert fast.shape == plain.shape == (in_shape[0], *in_shape[1:])
    np.testing.assert_allclose(fast, plain, rtol=1e-12, atol=1e-12)


def test_ones_transpose_refuses_an_op_without_a_kernel():
    with pytest.raises(ValueError, match="all-ones kernel needs a conv or dense layer"):
        LinearOp("avgpool", (1, 1)).transpose_ones(jnp.ones((1, 1, 1, 2)), (3, 3, 2, 2), (1, 2, 2, 2))


@pytest.mark.parametrize("channels", [3, 64])  # stacked (image input) and one conv per term
def test_group_transposes_equal_one_transposed_conv_per_term(channels):
    rng = np.random.default_rng(1)
    op = LinearOp("conv")
    in_shape = (2, 6, 6, channels)
    g = jnp.asarray(rng.normal(size=(2, 6, 6, 5)))
    kernels = [jnp.asarray(rng.normal(size=(3, 3, channels, 5))) for _ in range(3)]
    terms = [rules.Term("x"), rules.Term("low", rules.POS, rules.POS, -1.0), rules.Term("high", rules.NEG, rules.NEG, -1.0)]
    live = [(t, None, w) for t, w in zip(terms, kernels)]
    got = _transposes(op, g, live, in_shape)
    for c, w in zip(got, kernels):
        np.testing.assert_allclose(c, op.transpose(g, w, in_shape), rtol=1e-12, atol=1e-12)


def test_zbox_and_flat_layers_match_a_direct_evaluation_of_their_rules():
    """R_in of z^B and flat on a small input layer, against the formulas written out with jax.vjp."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 5, 5, 3)))
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)))
    b = jnp.asarray(rng.normal(size=(4,)))
    r = jnp.asarray(rng.normal(size=(2, 5, 5, 4)))
    low, high = jnp.full((3,), -2.0), jnp.full((3,), 2.5)
    op = LinearOp("conv")

    def conv(a, k):
        return op(a, k)

    def grad(a, k, s):
        return jax.vjp(lambda t: conv(t, k), a)[1](s)[0]

    eps = 1e-6
    stab = lambda z: z + eps * jnp.where(z >= 0, 1.0, -1.0)
    wp, wn = jnp.maximum(w, 0), jnp.minimum(w, 0)
    lo, hi = jnp.broadcast_to(low, x.shape), jnp.broadcast_to(high, x.shape)
    s = r / stab(conv(x, w) - conv(lo, wp) - conv(hi, wn))
    expected_zbox = x * grad(x, w, s) - lo * grad(lo, wp, s) - hi * grad(hi, wn, s)
    ones = jnp.ones_like(x)
    expected_flat = grad(ones, jnp.ones_like(w), r / stab(conv(ones, jnp.ones_like(w))))

    def relevance_in(rule, bounds):
        spec = LayerRule(op, rule)
        _, vjp = jax.vjp(lambda a: lrp_linear(spec, a, w, b, bounds), x)
        return vjp(r)[0]

    np.testing.assert_allclose(relevance_in(rules.zbox(), (low, high)), expected_zbox, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(relevance_in(rules.flat(), None), expected_flat, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("channels, multiplier, stride, padding, dilation", [
    (4, 1, (1, 1), ((1, 1), (1, 1)), (1, 1)),
    (4, 2, (2, 2), ((0, 1), (0, 1)), (1, 1)),  # TF "SAME" for stride 2 on an even size
    (3, 1, (2, 1), ((2, 2), (0, 0)), (2, 2)),
])  # fmt: skip
def test_depthwise_conv_as_shifted_multiply_adds_equals_the_grouped_conv(
    channels, multiplier, stride, padding, dilation
):
    """The CPU lowering of a depthwise conv (forward and transposed) against lax's grouped conv."""
    from jax import lax

    params = dict(
        window_strides=stride, padding=padding, lhs_dilation=(1, 1), rhs_dilation=dilation,
        dimension_numbers=lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2)),
        feature_group_count=channels, batch_group_count=1, precision=None, preferred_element_type=None,
        out_sharding=None,
    )  # fmt: skip
    op = LinearOp("conv", params=tuple(sorted(params.items())))
    assert op.is_depthwise
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(2, 9, 8, channels)))
    w = jnp.asarray(rng.normal(size=(3, 3, 1, channels * multiplier)))
    plain = lambda a: lax.conv_general_dilated_p.bind(a, w, **params)  # noqa: E731
    np.testing.assert_allclose(op(x, w), plain(x), rtol=1e-12, atol=1e-12)
    g = jnp.asarray(rng.normal(size=plain(x).shape))
    expected = jax.vjp(plain, x)[1](g)[0]
    np.testing.assert_allclose(op.transpose(g, w, x.shape), expected, rtol=1e-12, atol=1e-12)


def _conv_op(kernel: tuple[int, int], stride: tuple[int, int], padding, dilation=(1, 1)) -> LinearOp:
    from jax import lax

    params = dict(
        window_strides=stride, padding=padding, lhs_dilation=(1, 1), rhs_dilation=dilation,
        dimension_numbers=lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2)),
        feature_group_count=1, batch_group_count=1, precision=None, preferred_element_type=None,
        out_sharding=None,
    )  # fmt: skip
    return LinearOp("conv", params=tuple(sorted(params.items())))


def _plain_transpose(op: LinearOp, g, w, in_shape):
    from jax import lax

    conv = lambda a: lax.conv_general_dilated_p.bind(a, w, **dict(op.params))  # noqa: E731
    return jax.linear_transpose(conv, jax.ShapeDtypeStruct(in_shape, g.dtype))(g)[0]


@pytest.mark.parametrize("kernel, stride, padding, dilation, size", [
    ((7, 7), (2, 2), ((3, 3), (3, 3)), (1, 1), 23),  # a ResNet stem
    ((7, 7), (2, 2), ((3, 3), (3, 3)), (1, 1), 24),
    ((3, 3), (2, 2), ((0, 1), (0, 1)), (1, 1), 12),  # TF "SAME", stride 2 (EfficientNet's stem)
    ((3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2), 9),  # dilated
    ((1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1), 15),
])  # fmt: skip
def test_ones_transpose_of_strided_and_dilated_convs(kernel, stride, padding, dilation, size):
    """The flat rule's transpose on convs the box sum does not cover: one single-channel transposed
    conv of the channel sum, equal to the transpose of the all-ones kernel."""
    op = _conv_op(kernel, stride, padding, dilation)
    in_shape, kernel_shape = (2, size, size - 1, 3), (*kernel, 3, 5)
    out_shape = jax.eval_shape(lambda a: op(a, jnp.ones(kernel_shape)), jnp.zeros(in_shape)).shape
    g = jnp.asarray(np.random.default_rng(5).normal(size=out_shape))
    fast = op.transpose_ones(g, kernel_shape, in_shape)
    np.testing.assert_allclose(fast, _plain_transpose(op, g, jnp.ones(kernel_shape), in_shape), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride, size", [((1, 1), 6), ((2, 2), 7), ((2, 2), 8), ((2, 1), 5)])
def test_pointwise_conv_transpose_is_a_product_with_the_kernel(stride, size):
    """A 1x1 conv's transpose as g W^T placed at the positions the conv read (zeros between)."""
    op = _conv_op((1, 1), stride, ((0, 0), (0, 0)))
    assert op.is_pointwise
    rng = np.random.default_rng(6)
    in_shape = (2, size, size + 1, 4)
    w = jnp.asarray(rng.normal(size=(1, 1, 4, 3)))
    out_shape = jax.eval_shape(lambda a: op(a, w), jnp.zeros(in_shape)).shape
    g = jnp.asarray(rng.normal(size=out_shape))
    np.testing.assert_allclose(op.transpose(g, w, in_shape), _plain_transpose(op, g, w, in_shape), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", [rules.zplus(), rules.epsilon(0.1), rules.gamma(0.25), rules.alpha_beta(2.0, 1.0)])
def test_a_scaled_layer_explains_like_its_folded_kernel(rule):
    """lrp_linear with a per-channel output scale s (a merged batch norm, the forward kept as the
    network computes it) gives the output and the relevance of the layer with kernel W s."""
    op = _conv_op((3, 3), (2, 2), ((1, 1), (1, 1)))
    rng = np.random.default_rng(7)
    x = jnp.asarray(np.maximum(rng.normal(size=(2, 7, 7, 3)), 0))
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)))
    b = jnp.asarray(rng.normal(size=(4,)))
    scale = jnp.asarray([0.5, -1.5, 2.0, 1e-3]).reshape(1, 1, 1, 4)  # a negative scale swaps W+ and W-
    folded = w * scale.reshape(4)
    spec_scaled = LayerRule(op, rule, scale_axis=3)
    out_s, vjp_s = jax.vjp(lambda a: lrp_linear(spec_scaled, a, w, b, None, scale), x)
    out_f, vjp_f = jax.vjp(lambda a: lrp_linear(LayerRule(op, rule), a, folded, b, None), x)
    np.testing.assert_allclose(out_s, out_f, rtol=1e-12, atol=1e-12)
    r = jnp.asarray(rng.normal(size=out_s.shape))
    np.testing.assert_allclose(vjp_s(r)[0], vjp_f(r)[0], rtol=1e-9, atol=1e-12)
