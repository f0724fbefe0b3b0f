"""VGG and ResNet models in Flax, your own Flax models (from_flax), weight porting, batch-norm
folding and safe checkpoints."""

from hbjax.models.adapters import from_apply, from_flax, from_nnx, resnet
from hbjax.models.checkpoint import SHIPPED, CheckpointError, describe, load, save
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
from hbjax.models.resnet import RESNET_CONFIGS, ResNet
from hbjax.models.torch_twin import to_torch
from hbjax.models.vgg import VGG_CONFIGS, Normalization, Sequential, vgg_layers

__all__ = [
    "CIFAR10_CLASSES", "RESNET_CONFIGS", "SHIPPED", "VGG_CONFIGS", "CheckpointError", "LayerSpec", "Model",
    "Normalization", "PortingError", "ResNet", "Sequential", "adaptive_avg_pool", "cast", "check_images",
    "describe", "fold_batchnorm", "from_apply", "from_flax", "from_keras", "from_nnx", "from_torchvision",
    "load", "max_pool_2x2", "resnet", "save", "to_torch", "vgg", "vgg_cifar", "vgg_layers",
]  # fmt: skip
