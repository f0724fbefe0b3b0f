"""VGG models in Flax, weight porting, batch-norm folding and safe checkpoints."""

from hbjax.models.checkpoint import CONVERTED, SHIPPED, CheckpointError, describe, load, save
from hbjax.models.efficientnet import EfficientNetLite, efficientnet_lite
from hbjax.models.efficientnet_weights import (
    FlaxModel,
    MissingWeightsError,
    from_efficientnet_lite,
    imagenet_class_names,
)
from hbjax.models.layers import LayerSpec, adaptive_avg_pool, max_pool_2x2
from hbjax.models.model import (
    CIFAR10_CLASSES,
    Model,
    cast,
    check_images,
    fold_batchnorm,
    vgg,
    vgg_cifar,
)
from hbjax.models.porting import PortingError, from_keras, from_torchvision
from hbjax.models.torch_twin import to_torch
from hbjax.models.vgg import VGG_CONFIGS, Normalization, Sequential, vgg_layers

__all__ = [
    "CIFAR10_CLASSES", "CONVERTED", "SHIPPED", "VGG_CONFIGS", "CheckpointError", "EfficientNetLite",
    "FlaxModel", "LayerSpec", "MissingWeightsError", "Model", "Normalization", "PortingError",
    "Sequential", "adaptive_avg_pool", "cast", "check_images", "describe", "efficientnet_lite",
    "fold_batchnorm", "from_efficientnet_lite", "from_keras", "from_torchvision",
    "imagenet_class_names", "load", "max_pool_2x2", "save", "to_torch", "vgg", "vgg_cifar",
    "vgg_layers",
]  # fmt: skip
