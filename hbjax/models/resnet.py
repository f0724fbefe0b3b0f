"""ResNets in Flax (He et al. 2016), laid out as torchvision's (v1.5: the stride on the 3x3 conv),
and their weights ported from a torchvision state dict.

NHWC, input: the normalised image (hbjax applies the ImageNet normalisation before the network).
Module names follow torchvision's with dots as underscores: ``conv1``, ``bn1``, ``layer1_0/conv1``,
``layer2_0/downsample_0`` (the 1x1 conv), ``layer2_0/downsample_1`` (its batch norm), ``fc``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

RESNET_CONFIGS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
BN_EPS = 1e-5  # torch's


def _conv(features: int, k: int, stride: int, name: str) -> nn.Conv:
    p = k // 2
    return nn.Conv(features, (k, k), (stride, stride), padding=((p, p), (p, p)), use_bias=False, name=name)


def _bn(name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=BN_EPS, name=name)


class Block(nn.Module):
    """A basic block (two 3x3 convs) or a bottleneck (1x1, 3x3 with the stride, 1x1 to 4x):
    relu(branch(x) + shortcut(x)); the shortcut is a 1x1 conv and batch norm where the shape
    changes."""

    planes: int
    stride: int
    bottleneck: bool
    downsample: bool

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.bottleneck:
            out = nn.relu(_bn("bn1")(_conv(self.planes, 1, 1, "conv1")(x)))
            out = nn.relu(_bn("bn2")(_conv(self.planes, 3, self.stride, "conv2")(out)))
            out = _bn("bn3")(_conv(self.planes * 4, 1, 1, "conv3")(out))
        else:
            out = nn.relu(_bn("bn1")(_conv(self.planes, 3, self.stride, "conv1")(x)))
            out = _bn("bn2")(_conv(self.planes, 3, 1, "conv2")(out))
        identity = x
        if self.downsample:
            identity = _bn("downsample_1")(_conv(out.shape[-1], 1, self.stride, "downsample_0")(x))
        return nn.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet: 7x7/2 conv, 3x3/2 max-pool, four stages, global mean, dense."""

    arch: str = "resnet50"
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kind, stages = RESNET_CONFIGS[self.arch]
        bottleneck = kind == "bottleneck"
        x = nn.relu(_bn("bn1")(_conv(64, 7, 2, "conv1")(x)))
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        channels = 64
        for s, blocks in enumerate(stages, start=1):
            planes = 64 * 2 ** (s - 1)
            for b in range(blocks):
                stride = 2 if (s > 1 and b == 0) else 1
                out_channels = planes * (4 if bottleneck else 1)
                down = b == 0 and (stride != 1 or channels != out_channels)
                x = Block(planes, stride, bottleneck, down, name=f"layer{s}_{b}")(x)
                channels = out_channels
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)


@dataclasses.dataclass(frozen=True)
class ResNetNetwork:
    """``logits = net(variables, xn)`` of a :class:`ResNet` on the normalised input."""

    arch: str
    num_classes: int = 1000

    def __call__(self, variables: Any, xn: jnp.ndarray) -> jnp.ndarray:
        return ResNet(self.arch, self.num_classes).apply(variables, xn)


def check_arch(arch: str) -> None:
    if arch not in RESNET_CONFIGS:
        raise ValueError(f"unknown ResNet architecture {arch!r}; expected one of {sorted(RESNET_CONFIGS)}")


def resnet_shapes(arch: str, num_classes: int = 1000) -> dict:
    """The Flax variables' shapes (computed abstractly, no allocation)."""
    check_arch(arch)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    return jax.eval_shape(lambda: ResNet(arch, num_classes).init(jax.random.key(0), jnp.zeros(x.shape)))


def torch_key(path: tuple[str, ...]) -> str:
    """The torchvision state-dict key of a Flax variable path (collection, module..., name)."""
    collection, *modules, name = path
    parts = []
    for m in modules:
        parts.extend(m.split("_")) if (m.startswith("layer") or m.startswith("downsample")) else parts.append(m)
    torch_name = {
        ("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
        ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var",
    }[(collection, name)]  # fmt: skip
    return ".".join([*parts, torch_name])


def port_torchvision(arch: str, sd: Mapping[str, np.ndarray], error: type[Exception]) -> tuple[dict, int]:
    """Flax variables from a torchvision ResNet state dict (numpy values): conv kernels OIHW ->
    HWIO, the dense kernel transposed. Returns (variables, num_classes)."""
    check_arch(arch)
    if "fc.weight" not in sd:
        raise error(f"state dict for {arch} has no 'fc.weight'; is it a torchvision ResNet?")
    num_classes = int(sd["fc.weight"].shape[0])
    shapes = resnet_shapes(arch, num_classes)
    used: set[str] = set()

    def take(path, leaf) -> np.ndarray:
        names = tuple(getattr(p, "key", str(p)) for p in path)
        key = torch_key(names)
        if key not in sd:
            raise error(f"state dict for {arch} is missing tensor {key!r}")
        value = np.asarray(sd[key])
        if value.ndim == 4:
            value = np.transpose(value, (2, 3, 1, 0))
        elif names[-1] == "kernel":
            value = value.T
        if tuple(value.shape) != tuple(leaf.shape):
            raise error(f"tensor {key!r} has shape {tuple(np.asarray(sd[key]).shape)}, which does not fit {arch}")
        used.add(key)
        return np.ascontiguousarray(value.astype(np.float32))

    variables = jax.tree_util.tree_map_with_path(take, shapes)
    used.update(k for k in sd if k.endswith("num_batches_tracked"))
    unused = sorted(set(sd) - used)
    if unused:
        raise error(f"state dict for {arch} has unexpected tensors: {unused[:5]}")
    return jax.tree.map(np.asarray, dict(variables)), num_classes
