"""Layer specifications: the single description of a network that the Flax module, the weight
porters and the LRP interpreter all walk.

A network is a tuple of :class:`LayerSpec`. Keeping the architecture as data (zennit's "a rule is
data" idea applied to layers) lets LRP assign a rule per layer name or kind without a second model
definition.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

from hbjax import xla

KINDS = ("conv", "batchnorm", "relu", "maxpool", "adaptive_avgpool", "flatten", "dense", "dropout")


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One layer: ``kind`` is one of :data:`KINDS`; ``name`` keys its parameters."""

    kind: str
    name: str
    features: int = 0
    output_size: tuple[int, int] = (0, 0)
    rate: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown layer kind {self.kind!r}; expected one of {KINDS}")

    @property
    def has_params(self) -> bool:
        return self.kind in ("conv", "dense", "batchnorm")

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "name": self.name}
        if self.features:
            d["features"] = self.features
        if self.output_size != (0, 0):
            d["output_size"] = list(self.output_size)
        if self.rate:
            d["rate"] = self.rate
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LayerSpec":
        return cls(
            kind=d["kind"],
            name=d["name"],
            features=int(d.get("features", 0)),
            output_size=tuple(d.get("output_size", (0, 0))),  # type: ignore[arg-type]
            rate=float(d.get("rate", 0.0)),
        )


def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Averaging matrix P (out, in) of torch's adaptive average pooling along one axis.

    Bin i covers [floor(i n / o), ceil((i + 1) n / o)), exactly as ``torch.nn.AdaptiveAvgPool2d``.
    """
    p = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        p[i, start:end] = 1.0 / (end - start)
    return p


def adaptive_avg_pool(x: jnp.ndarray, output_size: Sequence[int]) -> jnp.ndarray:
    """torch's ``AdaptiveAvgPool2d`` on NHWC input, as two small matrix products (linear in x)."""
    _, h, w, _ = x.shape
    oh, ow = output_size
    if (h, w) == (oh, ow):
        return x
    ph = jnp.asarray(adaptive_pool_matrix(h, oh), dtype=x.dtype)
    pw = jnp.asarray(adaptive_pool_matrix(w, ow), dtype=x.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", ph, x, pw)


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 max-pool with stride 2 (floor mode, as torch), NHWC. Its gradient (XLA's select and
    scatter) routes each window's cotangent to the first maximal input in row-major order, as
    torch's does."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def shifted_depthwise_sums(a: jnp.ndarray, w: jnp.ndarray, strides, padding, dilation) -> jnp.ndarray:
    """A depthwise conv (NHWC input, (kh, kw, 1, C m) kernel, output channel o reads input channel
    o // m) as kh * kw shifted, strided multiply-adds: the same sums as
    ``lax.conv_general_dilated`` with ``feature_group_count=C``, several times faster on the CPU
    than XLA's grouped convolution, forward and transposed."""
    kh, kw, _, cout = w.shape
    b, _, _, cin = a.shape
    a = jnp.pad(a, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    if cout != cin:
        a = jnp.repeat(a, cout // cin, axis=-1)
    (sh, sw), (dh, dw) = strides, dilation
    height, width = a.shape[1:3]
    ho = (height - (kh - 1) * dh - 1) // sh + 1
    wo = (width - (kw - 1) * dw - 1) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            start = (0, i * dh, j * dw, 0)
            limit = (b, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, cout)
            term = lax.slice(a, start, limit, (1, sh, sw, 1)) * w[i, j, 0]
            out = term if out is None else out + term
    return out


def shifted_depthwise_transpose(g: jnp.ndarray, w: jnp.ndarray, strides, padding, dilation, in_shape) -> jnp.ndarray:
    """The transpose of :func:`shifted_depthwise_sums` with respect to its input (the input
    gradient for the cotangent g), as shifted multiply-adds on g padded once.

    Forward tap (i, j) reads the padded input at p = i * d + h * s. Grouping the taps by the phase
    r = (i * d) mod s, the padded input's rows of phase r receive sum over those taps of
    g[P - (i * d) // s] * w[i] at P = p // s: each phase is a stride-1 sum over its taps, and the
    phases interleave into the padded input (then cropped, and summed over a channel multiplier).
    A stride-s layer costs kh * kw products per *output* position, not per input position (the
    transpose of the strided slices, a sum of dilated pads, did s^2 times that work).
    """
    kh, kw, _, cout = w.shape
    b, height, width, cin = in_shape
    (sh, sw), (dh, dw) = strides, dilation
    (ph_lo, ph_hi), (pw_lo, pw_hi) = padding
    hp, wp = height + ph_lo + ph_hi, width + pw_lo + pw_hi
    lh, lw = -(-hp // sh), -(-wp // sw)  # rows and columns of one phase
    shift_h = [(i * dh) // sh for i in range(kh)]
    shift_w = [(j * dw) // sw for j in range(kw)]
    # g padded so that g_ext[P - shift + max_shift] is g[P - shift], zero outside g
    top, left = max(shift_h), max(shift_w)
    ho, wo = g.shape[1:3]
    # written once, read at every tap (see hbjax.xla.materialize)
    gp = xla.materialize(jnp.pad(g, ((0, 0), (top, max(0, lh - ho)), (left, max(0, lw - wo)), (0, 0))))
    zero = jnp.zeros((b, lh, lw, cout), g.dtype)
    rows = []
    for rh in range(sh):
        cols = []
        for rw in range(sw):
            acc = None
            for i in range(kh):
                if (i * dh) % sh != rh:
                    continue
                for j in range(kw):
                    if (j * dw) % sw != rw:
                        continue
                    oh, ow = top - shift_h[i], left - shift_w[j]
                    term = lax.slice(gp, (0, oh, ow, 0), (b, oh + lh, ow + lw, cout)) * w[i, j, 0]
                    acc = term if acc is None else acc + term
            cols.append(zero if acc is None else acc)
        rows.append(jnp.stack(cols, axis=3) if sw > 1 else cols[0][:, :, :, None])
    phases = jnp.stack(rows, axis=2) if sh > 1 else rows[0][:, :, None]  # (b, lh, sh, lw, sw, cout)
    full = phases.reshape(b, lh * sh, lw * sw, cout)
    a = lax.slice(full, (0, ph_lo, pw_lo, 0), (b, ph_lo + height, pw_lo + width, cout))
    if cout != cin:
        a = a.reshape(b, height, width, cin, cout // cin).sum(axis=-1)
    return a

