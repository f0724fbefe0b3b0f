"""VGG models in Flax, weight porting, batch-norm folding and safe checkpoints."""

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
from hbjax.models.torch_twin import to_torch
from hbjax.models.vgg import VGG_CONFIGS, Normalization, Sequential, vgg_layers
from hbjax.models.weight_files import WeightFileError, from_weight_file, read_state_dict

__all__ = [
    "CIFAR10_CLASSES", "SHIPPED", "VGG_CONFIGS", "CheckpointError", "LayerSpec", "Model",
    "Normalization", "PortingError", "Sequential", "adaptive_avg_pool", "cast", "check_images",
    "describe", "fold_batchnorm", "from_keras", "from_torchvision", "load", "max_pool_2x2", "save",
    "WeightFileError", "from_weight_file", "read_state_dict", "to_torch", "vgg", "vgg_cifar", "vgg_layers",
]  # fmt: skip
