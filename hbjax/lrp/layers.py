"""Layers whose vector-Jacobian product is an LRP rule: relevance travels as the cotangent.

:func:`lrp_linear` computes a linear layer's ordinary output in the forward pass; its backward maps
the upper relevance R to the lower relevance with a :class:`hbjax.lrp.rules.Rule`, on one shared
mechanism (see :mod:`hbjax.lrp.rules`). :func:`relu_pass` is a ReLU whose backward passes relevance
through unchanged (zennit's ``Pass``); :func:`activation_pass` does so for any clipping activation
and :func:`lrp_sum` is a residual sum with zennit's ``Norm`` rule. :func:`max_pool_winner` routes
relevance to the winning input of each window, the first in row-major order on a tie, as torch's
and TensorFlow's max-pool gradients do (``jnp.max``'s gradient would split it among tied inputs);
XLA's ``reduce_window`` max-pool gradient picks the same winner. Flatten and reshapes keep their
ordinary gradients.

Work is shared where the algebra allows: a term (x, W, b) reuses the forward output; a term whose
input is x- of a non-negative input (after a ReLU) is exactly zero and skipped; terms with constant
inputs (ones, the box bounds) are computed on one image and broadcast over the batch. Two shortcuts
change only the order of a sum: the transpose of an all-ones kernel (flat's) is a box sum of the
channel sum of the relevance, and on a layer with few input channels (an image input) the terms of
a group share one transposed convolution over their stacked kernels (z^B's three terms cost one
convolution with 3 x 3 output channels, not three with 3).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
from jax import lax

from hbjax.lrp.rules import Rule
from hbjax.models.layers import adaptive_avg_pool
from hbjax.models.layers import shifted_depthwise_sums as depthwise_shifted
from hbjax.models.layers import shifted_depthwise_transpose as depthwise_transpose

CONV_DIMS = ("NHWC", "HWIO", "NHWC")
CONV_PADDING = ((1, 1), (1, 1))
STACK_MAX_CHANNELS = 16  # input layers: stack the kernels of a group's terms into one transposed conv


def stabilize(z: jnp.ndarray, epsilon: float) -> jnp.ndarray:
    """zennit's stabiliser: z + epsilon * sign0(z), with sign0(0) = +1."""
    return z + epsilon * jnp.where(z >= 0, 1, -1).astype(z.dtype)


def divide(r: jnp.ndarray, den: jnp.ndarray, epsilon: float) -> jnp.ndarray:
    """r / stab(den); with epsilon = 0 (LRP-0) a zero denominator passes no relevance."""
    if epsilon == 0:
        zero = den == 0
        return jnp.where(zero, 0, r / jnp.where(zero, 1, den).astype(den.dtype))
    return r / stabilize(den, epsilon)


STANDARD_CONV = (
    ("window_strides", (1, 1)), ("padding", CONV_PADDING), ("lhs_dilation", (1, 1)),
    ("rhs_dilation", (1, 1)),
    ("dimension_numbers", lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))),
    ("feature_group_count", 1), ("batch_group_count", 1), ("precision", None),
    ("preferred_element_type", None), ("out_sharding", None),
)  # fmt: skip
DENSE = (
    ("dimension_numbers", (((1,), (0,)), ((), ()))), ("precision", None), ("preferred_element_type", None),
    ("out_sharding", None),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class LinearOp:
    """The linear part a -> op(a, W) of a layer.

    ``conv``: ``lax.conv_general_dilated`` with the primitive's ``params`` (any stride, padding,
    dilation, feature groups; default: 3x3 "same" NHWC/HWIO, stride 1); ``dense``:
    ``lax.dot_general`` with ``params`` (default: (B, in) x (in, out)); ``avgpool``: torch's
    adaptive average pool to ``output_size``; ``chain``: a parameter-free linear map (pooling,
    a mean) given by ``chain``, a tuple of primitive applications whose constants come as ``w``.
    """

    kind: str
    output_size: tuple[int, int] = (0, 0)
    params: tuple = ()
    chain: tuple = ()

    def _params(self) -> dict:
        if self.params:
            return dict(self.params)
        return dict(STANDARD_CONV if self.kind == "conv" else DENSE)

    @property
    def _nhwc_hwio(self) -> bool:
        """A conv with NHWC input, HWIO kernel and NHWC output, one batch group."""
        if self.kind != "conv":
            return False
        p = self._params()
        dims = p["dimension_numbers"]
        return (
            p["batch_group_count"] == 1 and tuple(dims.lhs_spec) == (0, 3, 1, 2)
            and tuple(dims.rhs_spec) == (3, 2, 0, 1) and tuple(dims.out_spec) == (0, 3, 1, 2)
        )  # fmt: skip

    @property
    def is_nhwc_ungrouped(self) -> bool:
        """A conv in NHWC/HWIO with one feature group (any stride, padding, dilation)."""
        return self._nhwc_hwio and self._params()["feature_group_count"] == 1

    @property
    def is_standard_conv(self) -> bool:
        """Stride 1, no dilation, one feature group, NHWC input and HWIO kernel."""
        if not self.is_nhwc_ungrouped:
            return False
        p = self._params()
        return all(tuple(p[k]) == (1, 1) for k in ("window_strides", "lhs_dilation", "rhs_dilation"))

    @property
    def is_standard_dense(self) -> bool:
        return self.kind == "dense" and tuple(self._params()["dimension_numbers"]) == DENSE[0][1]

    @property
    def is_depthwise(self) -> bool:
        """A depthwise conv (one feature group per input channel) in NHWC/HWIO with non-negative
        padding and no input dilation: it can run as shifted multiply-adds."""
        if not self.params or not self._nhwc_hwio:
            return False
        p = self._params()
        return (
            p["feature_group_count"] > 1 and tuple(p["lhs_dilation"]) == (1, 1)
            and all(lo >= 0 and hi >= 0 for lo, hi in p["padding"])
        )  # fmt: skip

    def runs_shifted(self, w) -> bool:
        """Whether this op runs as :func:`depthwise_shifted`: a depthwise conv on the CPU."""
        return self.is_depthwise and w.shape[2] == 1 and jax.default_backend() == "cpu"

    def __call__(self, a: jnp.ndarray, w) -> jnp.ndarray:
        if self.kind == "conv":
            p = self._params()
            if self.runs_shifted(w):
                return depthwise_shifted(a, w, p["window_strides"], p["padding"], p["rhs_dilation"])
            return lax.conv_general_dilated_p.bind(a, w, **p)
        if self.kind == "dense":
            return lax.dot_general_p.bind(a, w, **self._params())
        if self.kind == "avgpool":
            return adaptive_avg_pool(a, self.output_size)
        if self.kind == "chain":
            return _run_chain(self.chain, a, w)
        raise ValueError(f"unknown linear op {self.kind!r}")

    @property
    def is_pointwise(self) -> bool:
        """A 1x1 conv (any stride) in NHWC/HWIO with one feature group and no padding or input
        dilation: per position a matrix product with the kernel."""
        if self.kind != "conv" or not self.params:
            return False
        p = self._params()
        return (
            self.is_nhwc_ungrouped and tuple(p["lhs_dilation"]) == (1, 1)
            and all(tuple(lh) == (0, 0) for lh in p["padding"])
        )  # fmt: skip

    def transpose(self, g: jnp.ndarray, w, in_shape: tuple[int, ...]) -> jnp.ndarray:
        """op^T(g; W): the gradient of <op(a, W), g> with respect to a, for a of shape in_shape."""
        if self.is_standard_dense:  # g W^T without materialising W^T
            return lax.dot_general(g, w, (((1,), (1,)), ((), ())))
        if self.is_pointwise and w.shape[:2] == (1, 1):
            return _pointwise_transpose(g, w[0, 0], self._params()["window_strides"], in_shape)
        if self.kind == "avgpool" and tuple(in_shape[1:3]) == tuple(self.output_size):
            return g
        if self.runs_shifted(w):
            p = self._params()
            in_full = (g.shape[0], *in_shape[1:])
            return depthwise_transpose(g, w, p["window_strides"], p["padding"], p["rhs_dilation"], in_full)
        (a_bar,) = jax.linear_transpose(
            lambda a: self(a, w), jax.ShapeDtypeStruct((g.shape[0], *in_shape[1:]), g.dtype)
        )(g)
        return a_bar

    def transpose_ones(self, g: jnp.ndarray, kernel_shape: tuple[int, ...], in_shape: tuple[int, ...]):
        """op^T(g; 1) for an all-ones kernel of ``kernel_shape``: every input channel receives the sum
        of g over the output channels and, for a conv, over the kernel window (a box sum with the
        conv's zero padding). Equal to :meth:`transpose` with ``jnp.ones(kernel_shape)``."""
        if self.kind not in ("conv", "dense"):
            raise ValueError(f"an all-ones kernel needs a conv or dense layer, not {self.kind!r}")
        out = (g.shape[0], *in_shape[1:])
        if self.is_standard_dense:
            return jnp.broadcast_to(jnp.sum(g, axis=-1)[:, None], out)
        kh, kw = kernel_shape[:2]
        pads = self._params()["padding"] if self.kind == "conv" else ()
        fast = self.is_standard_conv and all(0 <= p <= k - 1 for (lo, hi), k in zip(pads, (kh, kw)) for p in (lo, hi))
        if not fast and self.kind == "conv" and self.is_nhwc_ungrouped:
            # one input and one output channel: the transpose of the channel sum of g, broadcast
            s = jnp.sum(g, axis=-1, keepdims=True)
            c = self.transpose(s, jnp.ones((kh, kw, 1, 1), g.dtype), (*in_shape[:-1], 1))
            return jnp.broadcast_to(c, out)
        if not fast:
            return self.transpose(g, jnp.ones(kernel_shape, g.dtype), in_shape)
        s = jnp.sum(g, axis=-1)
        (ph_lo, ph_hi), (pw_lo, pw_hi) = pads
        # out[h] = sum_dy g[h + lo - dy], dy = 0..k-1: a window of k ending at h + lo
        pad = ((0, 0), (kh - 1 - ph_lo, kh - 1 - ph_hi), (kw - 1 - pw_lo, kw - 1 - pw_hi))
        box = lax.reduce_window(s, jnp.zeros((), s.dtype), lax.add, (1, kh, kw), (1, 1, 1), pad)
        return jnp.broadcast_to(box[..., None], out)


def _pointwise_transpose(g: jnp.ndarray, w: jnp.ndarray, strides, in_shape) -> jnp.ndarray:
    """The transpose of a 1x1 conv of stride s with kernel w (C_in, C_out): g W^T at the positions
    the conv read (every s-th row and column; zeros elsewhere). A matrix product with the kernel as
    stored: no transposed copy of it, and no product with the zeros of a dilated input."""
    a = lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())))
    if all(s == 1 for s in strides) and a.shape[1:3] == tuple(in_shape[1:3]):
        return a
    cfg = [(0, 0, 0)]
    for n_in, n_out, s in zip(in_shape[1:3], a.shape[1:3], strides):
        cfg.append((0, n_in - ((n_out - 1) * s + 1), s - 1))
    cfg.append((0, 0, 0))
    return lax.pad(a, jnp.zeros((), a.dtype), cfg)


def _run_chain(chain: tuple, a: jnp.ndarray, consts: tuple) -> jnp.ndarray:
    """Applies a chain of primitives to a; each step is (primitive, params items, position of the
    running value among the operands, indices into consts of the other operands)."""
    for prim, params, pos, const_ids in chain:
        operands = [consts[i] for i in const_ids]
        operands.insert(pos, a)
        a = prim.bind(*operands, **dict(params))
    return a


@dataclasses.dataclass(frozen=True)
class LayerRule:
    """Static description of one explained linear layer: its op, its rule, and whether its input is
    known to be non-negative (it follows a ReLU), which lets x- terms drop out exactly."""

    op: LinearOp
    rule: Rule
    nonneg_input: bool = False
    scale_axis: int | None = None  # the kernel axis a per-output-channel scale multiplies


def _term_input(kind: str, x: jnp.ndarray, bounds, nonneg: bool) -> jnp.ndarray | None:
    """The modified input of a term; None stands for an input that is exactly zero."""
    if kind == "x":
        return x
    if kind == "pos":
        return x if nonneg else jnp.maximum(x, 0)
    if kind == "neg":
        return None if nonneg else jnp.minimum(x, 0)
    one = (1,) + x.shape[1:]  # constant inputs: one image, broadcast over the batch
    if kind == "ones":
        return jnp.ones(one, x.dtype)
    low, high = bounds
    return jnp.broadcast_to(low if kind == "low" else high, one).astype(x.dtype)


def _add(a: jnp.ndarray | None, b: jnp.ndarray) -> jnp.ndarray:
    return b if a is None else a + b


def _is_positive_split(group) -> bool:
    """Whether a group is (x+, W+, b+ or 0) + (x-, W-, 0): z+, and alpha-beta's positive part."""
    if len(group.terms) != 2:
        return False
    a, c = group.terms
    return (
        (a.input, c.input) == ("pos", "neg") and a.sign == 1 and c.sign == 1
        and (a.weight.op, c.weight.op) == ("pos", "neg") and a.bias.op in ("pos", "zero")
        and c.bias.op == "zero"
    )  # fmt: skip


def _rule_backward(spec: LayerRule, x, w, b, z, bounds, r):
    """R_in = sum_G sum_k sign_k * input_k * op^T(g_G; W_k) with g_G = coef * mask * r / stab(den_G).

    A group (x+, W+) + (x-, W-) on an input of either sign (z+ after a layer without ReLU) has
    the denominator (op(x, W) + op(|x|, |W|)) / 2, and op(x, W) is the forward output less its
    bias: one modified forward product instead of two. Its rounding error stays at float32's
    (measured on EfficientNet-Lite0: dtd heatmaps 6.6e-7 from float64, as the direct sums). The
    mirror group (x+, W-) + (x-, W+) keeps the direct sums: its (op(x, W) - op(|x|, |W|)) / 2
    cancels and lost a factor 7 of accuracy there.
    """
    op, rule = spec.op, spec.rule
    r_in = None
    for group in rule.groups:
        den = None
        live = []
        shared = not spec.nonneg_input and op.kind in ("conv", "dense") and _is_positive_split(group)
        if shared:
            plain = z if b is None else z - b
            den = 0.5 * (plain + op(jnp.abs(x), jnp.abs(w)))
            first = group.terms[0]
            if b is not None and first.bias.op != "zero":
                den = den + first.bias(b)
            live = [(t, _term_input(t.input, x, bounds, False), t.weight(w)) for t in group.terms]
        for term in group.terms if not shared else ():
            a = _term_input(term.input, x, bounds, spec.nonneg_input)
            wk, bk = term.weight(w), term.bias(b)
            if a is None:  # zero input: only a bias could remain (zennit's rules zero it)
                if bk is None or term.bias.op == "zero":
                    continue
                o = jnp.broadcast_to(bk, z.shape)
            elif term.is_forward:
                o = z
            else:
                o = op(a, wk)
                if bk is not None and term.bias.op != "zero":
                    o = o + bk
            den = _add(den, o if term.sign == 1 else term.sign * o)
            if a is not None:
                live.append((term, a, wk))
        if not live:
            continue
        g = divide(r, den, rule.epsilon)
        if group.mask == "pos":
            g = jnp.where(z > 0, g, 0)
        elif group.mask == "neg":
            g = jnp.where(z < 0, g, 0)
        if group.coef != 1:
            g = group.coef * g
        for (term, a, wk), c in zip(live, _transposes(op, g, live, x.shape)):
            contrib = c if term.input == "ones" else a * c
            if term.sign != 1:
                contrib = term.sign * contrib
            r_in = _add(r_in, contrib)
    return jnp.zeros_like(x) if r_in is None else r_in.astype(x.dtype)


def _transposes(op: LinearOp, g: jnp.ndarray, live, in_shape) -> list[jnp.ndarray]:
    """op^T(g; W_k) for each live term (term, input, W_k) of a group."""
    out: list = [None] * len(live)
    general = []
    for i, (term, _, wk) in enumerate(live):
        if term.weight.op == "ones" and op.kind in ("conv", "dense"):
            out[i] = op.transpose_ones(g, wk.shape, in_shape)
        else:
            general.append(i)
    channels = in_shape[-1]
    if op.is_standard_conv and len(general) > 1 and channels <= STACK_MAX_CHANNELS:
        stacked = jnp.concatenate([live[i][2] for i in general], axis=2)  # (kh, kw, k * C_in, C_out)
        c = op.transpose(g, stacked, (*in_shape[:-1], stacked.shape[2]))
        for j, i in enumerate(general):
            out[i] = c[..., j * channels : (j + 1) * channels]
    else:
        for i in general:
            out[i] = op.transpose(g, live[i][2], in_shape)
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def lrp_linear(spec: LayerRule, x: jnp.ndarray, w, b, bounds, scale=None) -> jnp.ndarray:
    """op(x, W) s + b; its VJP maps relevance R_out to R_in with ``spec.rule`` applied to the layer
    with kernel W s (s scales the kernel's ``spec.scale_axis``: a batch norm merged into the layer).

    Args:
      spec: the layer's op, rule and input sign knowledge (static).
      x: the layer input; w, b: kernel and bias (None for pooling), in x's dtype.
      bounds: (low, high) per-channel arrays for z^B, or None.
      scale: None, or a per-output-channel scale shaped to broadcast against the output. The
        forward pass multiplies the output by it, as the network did (no scaled copy of W is made
        for it); the rule's modified kernels are computed from W s.
    """
    return linear_output(spec.op, x, w, b, scale)


def linear_output(op: LinearOp, x, w, b, scale=None):
    z = op(x, w)
    if scale is not None:
        z = z * scale
    return z if b is None else z + b


def scale_kernel(w: jnp.ndarray, scale, axis: int) -> jnp.ndarray:
    """W s: the kernel with its output axis ``axis`` multiplied by the per-channel (or scalar) s."""
    vec = jnp.reshape(scale, (-1,))
    if vec.size == 1:
        return w * vec.reshape(())
    shape = [1] * w.ndim
    shape[axis] = vec.shape[0]
    return w * vec.reshape(shape)


def _fwd(spec, x, w, b, bounds, scale):
    z = linear_output(spec.op, x, w, b, scale)
    return z, (x, w, b, z, bounds, scale)


def _bwd(spec, res, r):
    x, w, b, z, bounds, scale = res
    zero_w = jax.tree.map(jnp.zeros_like, w) if isinstance(w, tuple) else None
    if scale is not None:
        w = scale_kernel(w, scale, spec.scale_axis)
    return (_rule_backward(spec, x, w, b, z, bounds, r), zero_w, None, None, None)


lrp_linear.defvjp(_fwd, _bwd)


@jax.custom_vjp
def relu_pass(x: jnp.ndarray) -> jnp.ndarray:
    """ReLU whose VJP passes relevance through unchanged (zennit's ``Pass`` rule)."""
    return jnp.maximum(x, 0)


relu_pass.defvjp(lambda x: (jnp.maximum(x, 0), None), lambda _, r: (r,))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def activation_pass(step: tuple, x: jnp.ndarray, consts: tuple) -> jnp.ndarray:
    """An elementwise activation (ReLU, ReLU6, a clip) given as one chain step (see
    :class:`LinearOp`), whose VJP passes relevance through unchanged (zennit's ``Pass``)."""
    return _run_chain((step,), x, consts)


def _activation_fwd(step, x, consts):
    return _run_chain((step,), x, consts), consts


def _activation_bwd(step, consts, r):
    return r, jax.tree.map(jnp.zeros_like, consts)


activation_pass.defvjp(_activation_fwd, _activation_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def lrp_sum(epsilon: float, a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """a + b (a residual sum) whose VJP splits relevance R in proportion to each summand, zennit's
    ``Norm`` rule on its ``Sum``: R_a = a R / stab(a + b), R_b = b R / stab(a + b)."""
    return a + b


def _sum_fwd(epsilon, a, b):
    z = a + b
    return z, (a, b, z)


def _sum_bwd(epsilon, res, r):
    a, b, z = res
    g = divide(r, z, epsilon)
    r_a, r_b = a * g, b * g
    return _unbroadcast(r_a, a.shape), _unbroadcast(r_b, b.shape)


def _unbroadcast(r: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
    """Sums r over the axes along which a summand of ``shape`` was broadcast."""
    if r.shape == tuple(shape):
        return r
    lead = r.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and r.shape[lead + i] != 1)
    return jnp.sum(r, axis=axes).reshape(shape)


lrp_sum.defvjp(_sum_fwd, _sum_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def max_pool_first_winner(window: tuple, x: jnp.ndarray) -> jnp.ndarray:
    """Max-pooling (``lax.reduce_window_max`` with ``window`` = (window_dimensions, window_strides,
    padding), any rank) whose VJP sends each window's cotangent to one winner: the first maximal
    input in row-major order over the window, torch's ``max_pool2d`` choice (XLA's and JAX's own
    gradient need a variadic window reduction over index arrays, several times slower on the CPU).
    Ties matter where relevance reaches zero activations (a plain-gradient average pool above a
    pass-through ReLU, as in ``deep_taylor``): all inputs of a window are then 0."""
    dims, strides, padding = window
    return lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, padding)


def _max_pool_first_winner_fwd(window, x):
    out = max_pool_first_winner(window, x)
    return out, (x, out)


def _max_pool_first_winner_bwd(window, res, g):
    dims, strides, padding = window
    x, out = res
    xp = lax.pad(x, jnp.array(-jnp.inf, x.dtype), [(lo, hi, 0) for lo, hi in padding])
    zero = jnp.zeros((), g.dtype)
    taken = None
    dxp = None
    for off in itertools.product(*(range(k) for k in dims)):  # row-major order
        limit = [o + (n - 1) * s + 1 for o, n, s in zip(off, out.shape, strides)]
        hit = lax.slice(xp, off, limit, strides) == out
        first = hit if taken is None else hit & ~taken
        taken = hit if taken is None else taken | hit
        # the window tap at offset `off` of output position i reads padded input off + i * stride
        cfg = [(o, p - lim, s - 1) for o, p, lim, s in zip(off, xp.shape, limit, strides)]
        part = lax.pad(jnp.where(first, g, zero), zero, cfg)
        dxp = part if dxp is None else dxp + part
    starts = [lo for lo, _ in padding]
    dx = lax.slice(dxp, starts, [b + n for b, n in zip(starts, x.shape)])
    return (dx,)


max_pool_first_winner.defvjp(_max_pool_first_winner_fwd, _max_pool_first_winner_bwd)

MAX_POOL_2X2 = ((1, 2, 2, 1), (1, 2, 2, 1), ((0, 0), (0, 0), (0, 0), (0, 0)))


def max_pool_winner(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 max-pool, stride 2 (floor mode), NHWC, with the winner-takes-all VJP of
    :func:`max_pool_first_winner`."""
    return max_pool_first_winner(MAX_POOL_2X2, x)
