"""The :class:`Model` record: a layer list, its input normalisation, parameters and metadata.

``logits = model.apply(model.params, x)`` is a pure, jit-able function of the parameters and an NHWC
batch in [0, 1].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hbjax.models.layers import LayerSpec
from hbjax.models.vgg import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalization,
    Sequential,
    vgg_layers,
)

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def check_images(x: Any, *, name: str = "x") -> None:
    """Raises a ValueError naming the problem when x is not a (B, H, W, 3) floating batch."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{name} must be a batch of RGB images of shape (B, H, W, 3); got shape {shape}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point in [0, 1]; got dtype {dtype}")


@dataclasses.dataclass(frozen=True)
class Model:
    """A network and its weights.

    Attributes:
      layers: the layer list (see :func:`hbjax.models.vgg.vgg_layers`).
      normalization: the input normalisation of the weights' source.
      params: Flax variables, ``{"params": ..., "batch_stats": ...}`` (batch_stats only with BN).
      meta: JSON-serialisable metadata: ``arch``, ``num_classes``, ``class_names``, ``source``,
        ``input_size``, ...
    """

    layers: tuple[LayerSpec, ...]
    normalization: Normalization
    params: Any
    meta: dict

    @property
    def module(self) -> Sequential:
        return Sequential(self.layers, self.normalization)

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def class_names(self) -> list[str]:
        names = self.meta.get("class_names")
        return list(names) if names else [str(i) for i in range(self.num_classes)]

    @property
    def has_batchnorm(self) -> bool:
        return any(layer.kind == "batchnorm" for layer in self.layers)

    def apply(self, params: Any, x: jnp.ndarray, **kwargs: Any) -> jnp.ndarray:
        """Logits of the batch x (B, H, W, 3) in [0, 1]; extra kwargs go to ``flax.linen.apply``."""
        check_images(x)
        return self.module.apply(params, x, **kwargs)

    def replace(self, **changes: Any) -> "Model":
        return dataclasses.replace(self, **changes)


def init_params(
    layers: Sequence[LayerSpec],
    normalization: Normalization,
    key: jax.Array,
    input_size: tuple[int, int],
) -> Any:
    """Random initial Flax variables (Flax's default initialisers) for an input of size input_size."""
    module = Sequential(tuple(layers), normalization)
    x = jnp.zeros((1, *input_size, 3), jnp.float32)
    variables = module.init({"params": key, "dropout": key}, x, train=False)
    return jax.tree.map(np.asarray, dict(variables))


def vgg(
    arch: str = "vgg19",
    *,
    key: jax.Array | None = None,
    num_classes: int = 1000,
    normalization: Normalization | None = None,
    class_names: Sequence[str] | None = None,
    input_size: tuple[int, int] = (224, 224),
    **layer_kwargs: Any,
) -> Model:
    """An ImageNet-layout VGG (torchvision's) with random Flax-initialised weights."""
    layers = vgg_layers(arch, num_classes=num_classes, **layer_kwargs)
    normalization = normalization or Normalization(IMAGENET_MEAN, IMAGENET_STD)
    key = jax.random.key(0) if key is None else key
    params = init_params(layers, normalization, key, input_size)
    meta = {
        "arch": arch,
        "num_classes": num_classes,
        "input_size": list(input_size),
        "source": "random",
        "class_names": list(class_names) if class_names else None,
    }
    return Model(layers, normalization, params, meta)


def vgg_cifar(
    arch: str = "vgg19",
    *,
    key: jax.Array | None = None,
    width: float = 0.25,
    batchnorm: bool = False,
    num_classes: int = 10,
    classifier: Sequence[int] = (),
    dropout: float = 0.0,
) -> Model:
    """The CIFAR variant: VGG conv layout scaled by ``width`` for 32x32 inputs; five pools take the
    image to 1x1, then dense layers ``classifier`` and the output layer. Optional batch norm after
    each conv (for training; fold it with :func:`fold_batchnorm` before use).
    """
    layers = vgg_layers(
        arch, num_classes=num_classes, width=width, batchnorm=batchnorm, classifier=classifier,
        pool_size=None, dropout=dropout,
    )  # fmt: skip
    normalization = Normalization(CIFAR10_MEAN, CIFAR10_STD)
    key = jax.random.key(0) if key is None else key
    params = init_params(layers, normalization, key, (32, 32))
    meta = {
        "arch": f"{arch}_cifar",
        "num_classes": num_classes,
        "input_size": [32, 32],
        "width": width,
        "source": "random",
        "class_names": list(CIFAR10_CLASSES) if num_classes == 10 else None,
    }
    return Model(layers, normalization, params, meta)


def fold_batchnorm(model: Model) -> Model:
    """Folds every batch norm into the conv before it (eval-mode BN is affine):

    W' = W * g / sqrt(v + eps),  b' = (b - m) * g / sqrt(v + eps) + beta.
    The folded model gives the same logits; LRP explains BN models through this twin (zennit's
    canonizer does the same).
    """
    if not model.has_batchnorm:
        return model
    params = model.params["params"]
    stats = model.params.get("batch_stats", {})
    new_params: dict = {}
    layers: list[LayerSpec] = []
    for i, layer in enumerate(model.layers):
        if layer.kind == "batchnorm":
            prev = layers[-1] if layers else None
            if prev is None or prev.kind != "conv":
                raise ValueError(f"batch norm {layer.name!r} does not follow a conv layer; cannot fold")
            bn, st = params[layer.name], stats[layer.name]
            scale = np.asarray(bn["scale"], np.float64) / np.sqrt(np.asarray(st["var"], np.float64) + 1e-5)
            conv = new_params[prev.name]
            kernel = np.asarray(conv["kernel"], np.float64) * scale
            bias = (np.asarray(conv["bias"], np.float64) - np.asarray(st["mean"], np.float64)) * scale
            bias = bias + np.asarray(bn["bias"], np.float64)
            dtype = np.asarray(conv["kernel"]).dtype
            new_params[prev.name] = {"kernel": kernel.astype(dtype), "bias": bias.astype(dtype)}
            continue
        layers.append(layer)
        if layer.has_params:
            new_params[layer.name] = {k: np.asarray(v) for k, v in params[layer.name].items()}
    meta = dict(model.meta, batchnorm_folded=True)
    return Model(tuple(layers), model.normalization, {"params": new_params}, meta)


def cast(model: Model, dtype: Any) -> Model:
    """The model with every parameter cast to dtype (e.g. float64 for reference tests)."""
    return model.replace(params=jax.tree.map(lambda a: jnp.asarray(a, dtype), model.params))
