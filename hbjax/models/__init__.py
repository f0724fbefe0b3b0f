"""VGG and ResNet models in Flax, your own Flax models (from_flax), weight porting, batch-norm
folding and safe checkpoints."""

from hbjax.models.adapters import from_apply, from_flax, from_nnx, resnet
from hbjax.models.checkpoint import CONVERTED, SHIPPED, CheckpointError, describe, load, save
from hbjax.models.efficientnet import EfficientNetLite, efficientnet_lite
from hbjax.models.efficientnet_weights import (
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
from hbjax.models.resnet import RESNET_CONFIGS, ResNet
from hbjax.models.torch_twin import to_torch
from hbjax.models.vgg import VGG_CONFIGS, Normalization, Sequential, vgg_layers
from hbjax.models.weight_files import WeightFileError, from_weight_file, read_state_dict

__all__ = [
    "CIFAR10_CLASSES", "CONVERTED", "RESNET_CONFIGS", "SHIPPED", "VGG_CONFIGS", "CheckpointError",
    "EfficientNetLite", "LayerSpec", "MissingWeightsError", "Model", "Normalization",
    "PortingError", "ResNet", "Sequential", "WeightFileError", "adaptive_avg_pool", "cast",
    "check_images", "describe", "efficientnet_lite", "fold_batchnorm", "from_apply",
    "from_efficientnet_lite", "from_flax", "from_keras", "from_nnx", "from_torchvision",
    "from_weight_file", "imagenet_class_names", "load", "max_pool_2x2", "read_state_dict", "resnet",
    "save", "to_torch", "vgg", "vgg_cifar", "vgg_layers",
]  # fmt: skip
