"""Bring your own model: a Flax (linen or nnx) module, or any ``apply(params, xn)``, as an hbjax
:class:`~hbjax.models.Model` that LRP, the defense, the attacks and the evaluation accept.

The contract: the network takes the *normalised* input xn = (x - mean) / std, NHWC, x in [0, 1]
RGB (hbjax applies the normalisation, so that it belongs to the input layer of LRP), and returns
logits (B, N) at inference (batch norm on running statistics, dropout off). LRP explains every
conv and dense layer, batch norm after them, pooling, residual sums and ReLU-like activations;
anything else on the input-to-logits path is reported as an error (see :mod:`hbjax.lrp.graph`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hbjax.models.model import Model
from hbjax.models.resnet import ResNet, ResNetNetwork, check_arch
from hbjax.models.vgg import IMAGENET_MEAN, IMAGENET_STD, Normalization


@dataclasses.dataclass(frozen=True, eq=False)
class FlaxNetwork:
    """``module.apply(variables, xn, **kwargs)``; compared and hashed by identity."""

    module: Any
    kwargs: tuple = ()

    def __call__(self, variables: Any, xn: jnp.ndarray) -> jnp.ndarray:
        return self.module.apply(variables, xn, **dict(self.kwargs))


@dataclasses.dataclass(frozen=True, eq=False)
class NnxNetwork:
    """An nnx module split into (graphdef, state); ``merge(graphdef, state)(xn)``."""

    graphdef: Any

    def __call__(self, state: Any, xn: jnp.ndarray) -> jnp.ndarray:
        from flax import nnx

        return nnx.merge(self.graphdef, state)(xn)


@dataclasses.dataclass(frozen=True, eq=False)
class ApplyNetwork:
    """A plain ``apply(params, xn)``; compared and hashed by identity."""

    apply: Callable

    def __call__(self, params: Any, xn: jnp.ndarray) -> jnp.ndarray:
        return self.apply(params, xn)


def _model(network, params, mean, std, class_names, input_size, arch, channel_order="RGB") -> Model:
    norm = Normalization(tuple(float(m) for m in mean), tuple(float(s) for s in std), channel_order)
    x = jax.ShapeDtypeStruct((1, *input_size, 3), jnp.float32)
    out = jax.eval_shape(network, params, x)
    if len(out.shape) != 2:
        raise ValueError(f"the network must return logits of shape (B, N); it returns {out.shape}")
    num_classes = int(out.shape[-1])
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    meta = {
        "arch": arch, "num_classes": num_classes, "input_size": list(input_size), "source": "user",
        "class_names": list(class_names) if class_names else None,
    }  # fmt: skip
    return Model((), norm, params, meta, network)


def from_flax(
    module: Any,
    variables: Any,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str] | None = None,
    input_size: tuple[int, int] = (224, 224),
    apply_kwargs: dict | None = None,
) -> Model:
    """A Model from a flax.linen module and its variables (``{"params": ..., "batch_stats": ...}``).

    Args:
      module: called as ``module.apply(variables, xn, **apply_kwargs)`` on the normalised input
        xn = (x - mean) / std (NHWC), returning logits at inference.
      mean, std: the per-channel normalisation the weights expect (RGB, inputs in [0, 1]).
      class_names: optional, one per class.
      input_size: an input size the network accepts (to find the number of classes).
      apply_kwargs: e.g. ``{"train": False}``.
    """
    network = FlaxNetwork(module, tuple(sorted((apply_kwargs or {}).items())))
    return _model(network, variables, mean, std, class_names, input_size, type(module).__name__)


def from_nnx(
    module: Any,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str] | None = None,
    input_size: tuple[int, int] = (224, 224),
) -> Model:
    """A Model from a flax.nnx module (put it in eval mode first: ``module.eval()``); its state
    becomes the model's parameters. Arguments as :func:`from_flax`."""
    from flax import nnx

    graphdef, state = nnx.split(module)
    return _model(NnxNetwork(graphdef), state, mean, std, class_names, input_size, type(module).__name__)


def from_apply(
    apply: Callable[[Any, jnp.ndarray], jnp.ndarray],
    params: Any,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str] | None = None,
    input_size: tuple[int, int] = (224, 224),
) -> Model:
    """A Model from a pure function ``logits = apply(params, xn)`` of the normalised input.
    Arguments as :func:`from_flax`."""
    return _model(ApplyNetwork(apply), params, mean, std, class_names, input_size, "apply")


def resnet(
    arch: str = "resnet50",
    *,
    key: jax.Array | None = None,
    num_classes: int = 1000,
    class_names: Sequence[str] | None = None,
) -> Model:
    """A torchvision-layout ResNet (``resnet18`` ... ``resnet152``) with random Flax weights and
    the ImageNet normalisation."""
    check_arch(arch)
    key = jax.random.key(0) if key is None else key
    variables = ResNet(arch, num_classes).init(key, jnp.zeros((1, 64, 64, 3)))
    return resnet_model(arch, jax.tree.map(np.asarray, dict(variables)), num_classes, "random", class_names)


def resnet_model(arch: str, variables: Any, num_classes: int, source: str, class_names=None) -> Model:
    """The Model of a ResNet's variables."""
    meta = {
        "arch": arch, "num_classes": num_classes, "input_size": [224, 224], "source": source,
        "class_names": list(class_names) if class_names else None,
    }  # fmt: skip
    return Model((), Normalization(IMAGENET_MEAN, IMAGENET_STD), variables, meta, ResNetNetwork(arch, num_classes))
