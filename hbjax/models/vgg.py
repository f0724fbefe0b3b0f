"""VGG networks in Flax (Simonyan and Zisserman 2015), laid out as torchvision's.

Input: NHWC float in [0, 1], RGB. The normalisation of the weights' source is the first operation of
the network (see :class:`Normalization`), so every model takes the same input.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from hbjax.models.layers import LayerSpec, adaptive_avg_pool, max_pool_2x2

# torchvision's configurations "A", "B", "D", "E": conv widths, "M" is a 2x2 max-pool.
VGG_CONFIGS: dict[str, tuple] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ),
}  # fmt: skip

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# Keras "caffe" preprocessing: BGR, 0-255, minus the BGR means; written as mean/std over [0, 1].
KERAS_CAFFE_MEAN_BGR = (103.939 / 255.0, 116.779 / 255.0, 123.68 / 255.0)
KERAS_CAFFE_STD = (1.0 / 255.0,) * 3


@dataclasses.dataclass(frozen=True)
class Normalization:
    """x_n = (x[..., order] - mean) / std for x in [0, 1] RGB; order "BGR" reverses the channels.

    mean and std are given in the channel order the network sees.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std > 0; got {self.mean}, {self.std}")

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        mean = jnp.asarray(self.mean, dtype=x.dtype)
        std = jnp.asarray(self.std, dtype=x.dtype)
        return (x - mean) / std

    def to_pixels(self, r: jnp.ndarray) -> jnp.ndarray:
        """Maps a per-normalised-channel array (e.g. relevance) back to the RGB pixel layout."""
        return r[..., ::-1] if self.channel_order == "BGR" else r

    def bounds(self, dtype=jnp.float32) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Per-channel images of 0 and 1 under the normalisation: z^B's bounds (low, high)."""
        mean = jnp.asarray(self.mean, dtype=dtype)
        std = jnp.asarray(self.std, dtype=dtype)
        return (0.0 - mean) / std, (1.0 - mean) / std

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "channel_order": self.channel_order}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(tuple(d["mean"]), tuple(d["std"]), d.get("channel_order", "RGB"))  # type: ignore[arg-type]


def vgg_layers(
    arch: str,
    *,
    num_classes: int = 1000,
    width: float = 1.0,
    batchnorm: bool = False,
    classifier: Sequence[int] = (4096, 4096),
    pool_size: tuple[int, int] | None = (7, 7),
    dropout: float = 0.5,
) -> tuple[LayerSpec, ...]:
    """Layer list of a VGG: conv blocks of ``VGG_CONFIGS[arch]`` scaled by ``width``, an adaptive
    average pool to ``pool_size`` (None: none), flatten, then dense layers ``classifier`` (each with
    ReLU and dropout) and the output layer.

    Names: ``conv{block}_{i}`` (and ``bn{block}_{i}``), ``fc1``, ``fc2``, ... with the output layer
    last, so LRP composites can refer to layers by name.
    """
    if arch not in VGG_CONFIGS:
        raise ValueError(f"unknown VGG architecture {arch!r}; expected one of {sorted(VGG_CONFIGS)}")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    layers: list[LayerSpec] = []
    block, index = 1, 1
    for item in VGG_CONFIGS[arch]:
        if item == "M":
            layers.append(LayerSpec("maxpool", f"pool{block}"))
            block, index = block + 1, 1
            continue
        features = max(1, int(round(item * width)))
        layers.append(LayerSpec("conv", f"conv{block}_{index}", features=features))
        if batchnorm:
            layers.append(LayerSpec("batchnorm", f"bn{block}_{index}"))
        layers.append(LayerSpec("relu", f"relu{block}_{index}"))
        index += 1
    if pool_size is not None:
        layers.append(LayerSpec("adaptive_avgpool", "avgpool", output_size=tuple(pool_size)))
    layers.append(LayerSpec("flatten", "flatten"))
    for i, features in enumerate(classifier, start=1):
        layers.append(LayerSpec("dense", f"fc{i}", features=int(features)))
        layers.append(LayerSpec("relu", f"relu_fc{i}"))
        if dropout:
            layers.append(LayerSpec("dropout", f"dropout_fc{i}", rate=dropout))
    layers.append(LayerSpec("dense", f"fc{len(classifier) + 1}", features=num_classes))
    return tuple(layers)


class Sequential(nn.Module):
    """A Flax network built from a tuple of :class:`LayerSpec`, with the input normalisation first.

    ``train=True`` uses batch statistics in batch norm (mutable ``batch_stats``) and active dropout
    (needs a ``dropout`` rng).
    """

    layers: tuple[LayerSpec, ...]
    normalization: Normalization

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = self.normalization(x)
        for layer in self.layers:
            x = apply_layer(layer, x, train)
        return x


def apply_layer(layer: LayerSpec, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """One layer's forward inside a compact Flax module (parameters are created by name)."""
    kind = layer.kind
    if kind == "conv":
        return nn.Conv(layer.features, (3, 3), padding=((1, 1), (1, 1)), name=layer.name)(x)
    if kind == "batchnorm":
        return nn.BatchNorm(
            use_running_average=not train, momentum=0.9, epsilon=1e-5, name=layer.name
        )(x)
    if kind == "relu":
        return nn.relu(x)
    if kind == "maxpool":
        return max_pool_2x2(x)
    if kind == "adaptive_avgpool":
        return adaptive_avg_pool(x, layer.output_size)
    if kind == "flatten":
        return x.reshape(x.shape[0], -1)
    if kind == "dense":
        return nn.Dense(layer.features, name=layer.name)(x)
    if kind == "dropout":
        return nn.Dropout(layer.rate, deterministic=not train, name=layer.name)(x)
    raise ValueError(f"unknown layer kind {kind!r}")


def flatten_dim(layers: Sequence[LayerSpec], input_hw: tuple[int, int]) -> tuple[int, int, int]:
    """(H, W, C) of the activation that reaches the flatten layer, for an input of size input_hw."""
    h, w = input_hw
    c = 3
    for layer in layers:
        if layer.kind == "conv":
            c = layer.features
        elif layer.kind == "maxpool":
            h, w = h // 2, w // 2
        elif layer.kind == "adaptive_avgpool":
            h, w = layer.output_size
        elif layer.kind == "flatten":
            return h, w, c
    raise ValueError("the layer list has no flatten layer")


