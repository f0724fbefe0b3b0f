"""EfficientNet-Lite (Tan and Le 2019; the "lite" variant of the TensorFlow TPU repository) in Flax.

The network of the ``efficientnet-lite-pytorch`` package, written with plain ``jax.lax`` ops so that a
jaxpr interpreter (LRP) can follow it:

    x_n = (255 x - 127) / 128                          (x: NHWC RGB in [0, 1])
    stem:   conv 3x3 stride 2 -> BN -> ReLU6
    blocks: MBConv = [1x1 expand -> BN -> ReLU6] -> depthwise kxk stride s -> BN -> ReLU6
                     -> 1x1 project -> BN (+ the block input when s = 1 and channels match)
    head:   conv 1x1 -> BN -> ReLU6 -> global average pool -> dense

Convolutions pad as TensorFlow's "SAME": output size ceil(n / s), total padding
max((ceil(n/s) - 1) s + k - n, 0), the smaller half before, the larger after (at 224x224 exactly
the static padding of the torch code, which fixes it for 224 inputs; here it follows the input size).
Batch norm is inference-only (running statistics, eps 1e-3) and kept as its own module so that LRP can
fold it into the convolution before it.

Module paths read ``stem``, ``stem_bn``, ``blocks_3/expand``, ``blocks_3/depthwise``,
``blocks_3/project_bn``, ``head``, ``head_bn``, ``classifier``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hbjax import xla
from hbjax.models.layers import shifted_depthwise_sums, shifted_depthwise_transpose

# TF's EfficientNet-Lite preprocessing, (255 x - 127) / 128, as mean/std over x in [0, 1].
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
BN_EPSILON = 1e-3


@dataclasses.dataclass(frozen=True)
class Stage:
    """A run of ``repeats`` MBConv blocks; the first has ``stride`` and ``in_features`` inputs."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_features: int
    out_features: int


# efficientnet_lite_builder.py's block strings r1_k3_s11_e1_i32_o16, ..., r1_k3_s11_e6_i192_o320.
LITE0_STAGES: tuple[Stage, ...] = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)

ARCHS: dict[str, tuple[Stage, ...]] = {"efficientnet_lite0": LITE0_STAGES}


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One MBConv block: kernel, stride, expansion ratio, input and output channels."""

    kernel: int
    stride: int
    expand: int
    in_features: int
    out_features: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_features == self.out_features


def block_specs(stages: Sequence[Stage]) -> tuple[BlockSpec, ...]:
    """The stages unrolled: the first block of a stage strides and changes width, the rest keep both."""
    blocks = []
    for s in stages:
        blocks.append(BlockSpec(s.kernel, s.stride, s.expand, s.in_features, s.out_features))
        blocks += [BlockSpec(s.kernel, 1, s.expand, s.out_features, s.out_features)] * (s.repeats - 1)
    return tuple(blocks)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding of one spatial axis: (before, after), the larger half after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_shifted(x: jnp.ndarray, kernel: jnp.ndarray, stride: int, padding) -> jnp.ndarray:
    """A depthwise convolution as k*k shifted multiply-adds (same result as ``conv_general_dilated``
    with ``feature_group_count`` = channels): y = sum_ij pad(x)[s*h + i, s*w + j, c] * k[i, j, 0, c].

    XLA's CPU depthwise convolution is several times slower than this on the CPU. The VJP, on a
    cotangent written to memory first (:func:`hbjax.xla.materialize`: otherwise XLA recomputes the
    cotangent's producer once per kernel tap), is :func:`hbjax.models.layers.shifted_depthwise_transpose`
    for the input and the ordinary VJP of these sums for the kernel.
    """
    return _depthwise_sums(x, kernel, stride, padding)


def _depthwise_fwd(x, kernel, stride, padding):
    return _depthwise_sums(x, kernel, stride, padding), (x, kernel)


def _depthwise_bwd(stride, padding, residuals, g):
    x, kernel = residuals
    g = xla.materialize(g)
    dx = shifted_depthwise_transpose(g, kernel, (stride, stride), padding, (1, 1), x.shape)
    _, vjp_kernel = jax.vjp(lambda k: _depthwise_sums(x, k, stride, padding), kernel)
    return (dx, *vjp_kernel(g))


depthwise_shifted.defvjp(_depthwise_fwd, _depthwise_bwd)


def _depthwise_sums(x: jnp.ndarray, kernel: jnp.ndarray, stride: int, padding) -> jnp.ndarray:
    return shifted_depthwise_sums(x, kernel, (stride, stride), padding, (1, 1))


class Conv(nn.Module):
    """A 2-D convolution with TF "SAME" padding (explicit, asymmetric where needed), no bias.

    ``groups`` = input channels makes it depthwise; the kernel is HWIO with I = in / groups.
    ``depthwise_impl="shifted"`` computes a depthwise conv as shifted multiply-adds (see
    :func:`depthwise_shifted`); the default is one ``conv_general_dilated``.
    """

    features: int
    kernel: int
    stride: int = 1
    groups: int = 1
    depthwise_impl: str = "conv"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        in_features = x.shape[-1]
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (self.kernel, self.kernel, in_features // self.groups, self.features),
            jnp.float32,
        )
        kernel = kernel.astype(x.dtype)
        padding = (
            same_padding(x.shape[1], self.kernel, self.stride),
            same_padding(x.shape[2], self.kernel, self.stride),
        )
        if self.depthwise_impl == "shifted" and self.groups > 1 and self.groups == in_features:
            return depthwise_shifted(x, kernel, self.stride, padding)
        return jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(self.stride, self.stride),
            padding=padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups,
        )


@dataclasses.dataclass(frozen=True, eq=False)
class DepthwiseByBackend:
    """A network on the normalised input, ``logits = net(variables, xn)``, in two forms that compute
    the same sums: ``shifted`` (each depthwise conv as k*k shifted multiply-adds) runs the forward
    pass on the CPU, where XLA's grouped convolution is 10-15x slower; ``explained`` (one grouped
    ``conv_general_dilated`` each) runs it elsewhere and is the form LRP traces
    (:func:`hbjax.lrp.graph.trace` reads a network's ``explained``), since it reads a grouped conv as
    one linear layer (and computes it with shifted multiply-adds on the CPU itself). Compared and
    hashed by identity, like ``hbjax.models.from_flax``'s networks."""

    explained: Callable[[Any, jnp.ndarray], jnp.ndarray]
    shifted: Callable[[Any, jnp.ndarray], jnp.ndarray]

    def __call__(self, variables: Any, xn: jnp.ndarray) -> jnp.ndarray:
        net = self.shifted if jax.default_backend() == "cpu" else self.explained
        return net(variables, xn)


def batch_norm(name: str) -> nn.BatchNorm:
    """Inference batch norm: y = (x - mean) / sqrt(var + 1e-3) * scale + bias, running statistics."""
    return nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, momentum=0.99, name=name)


class MBConv(nn.Module):
    """Mobile inverted bottleneck (Sandler et al. 2018) without squeeze-excitation, ReLU6."""

    spec: BlockSpec
    depthwise_impl: str = "conv"

    @nn.compact
    def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
        s = self.spec
        hidden = s.in_features * s.expand
        x = inputs
        if s.expand != 1:
            x = Conv(hidden, 1, name="expand")(x)
            x = nn.relu6(batch_norm("expand_bn")(x))
        x = Conv(
            hidden, s.kernel, s.stride, groups=hidden, depthwise_impl=self.depthwise_impl,
            name="depthwise",
        )(x)  # fmt: skip
        x = nn.relu6(batch_norm("depthwise_bn")(x))
        x = Conv(s.out_features, 1, name="project")(x)
        x = batch_norm("project_bn")(x)
        return x + inputs if s.residual else x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite on NHWC RGB input in [0, 1]; returns logits (B, num_classes).

    Attributes:
      stages: the block stages (:data:`LITE0_STAGES` for Lite0).
      num_classes: output classes (1000 for ImageNet).
      stem_features, head_features: 32 and 1280 (Lite keeps them fixed for every width).
      mean, std: the input normalisation x_n = (x - mean) / std, the network's first operation.
      normalize: False makes the network take x_n itself (the contract of
        ``hbjax.models.from_flax``, where hbjax applies mean/std before the network).
      depthwise_impl: "conv" (one grouped ``conv_general_dilated``) or "shifted" (k*k multiply-adds,
        faster on XLA's CPU backend; same result).
    """

    stages: tuple[Stage, ...] = LITE0_STAGES
    num_classes: int = 1000
    stem_features: int = 32
    head_features: int = 1280
    mean: tuple[float, float, float] = LITE_MEAN
    std: tuple[float, float, float] = LITE_STD
    depthwise_impl: str = "conv"
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.depthwise_impl not in ("conv", "shifted"):
            raise ValueError(f"depthwise_impl must be 'conv' or 'shifted', got {self.depthwise_impl!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.normalize:
            x = (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)
        x = Conv(self.stem_features, 3, 2, name="stem")(x)
        x = nn.relu6(batch_norm("stem_bn")(x))
        for i, spec in enumerate(block_specs(self.stages)):
            x = MBConv(spec, self.depthwise_impl, name=f"blocks_{i}")(x)
        x = Conv(self.head_features, 1, name="head")(x)
        x = nn.relu6(batch_norm("head_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="classifier")(x)


def efficientnet_lite(arch: str = "efficientnet_lite0", **kwargs) -> EfficientNetLite:
    """The module of ``arch`` (only ``"efficientnet_lite0"`` for now); kwargs set its attributes."""
    if arch not in ARCHS:
        raise ValueError(f"unknown EfficientNet-Lite architecture {arch!r}; known: {sorted(ARCHS)}")
    return EfficientNetLite(stages=ARCHS[arch], **kwargs)
