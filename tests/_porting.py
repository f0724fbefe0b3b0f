"""Helpers shared by the porting tests: ImageNet sample images and torchvision references."""

from __future__ import annotations

import numpy as np
import torch

from hbjax.data import ImageFolder, Preprocess

IMAGENET_MEAN = np.asarray((0.485, 0.456, 0.406), np.float32)
IMAGENET_STD = np.asarray((0.229, 0.224, 0.225), np.float32)


def imagenet_images(root, size: int, n: int = 2) -> np.ndarray:
    """n images of different classes from the ImageNet sample, as hbjax preprocesses them."""
    p = Preprocess("imagenet", size=size, resize=round(size * 256 / 224))
    folder = ImageFolder(str(root), "val", p, limit_per_class=1)
    indices = np.linspace(0, len(folder) - 1, n).astype(int)
    images, _, _ = next(folder.batches(n, indices=indices))
    assert images.shape == (n, size, size, 3)
    return images


def torch_logits(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """torchvision's own preprocessing (normalise, NCHW) and forward."""
    x = torch.from_numpy(((images - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2).copy())
    with torch.inference_mode():
        return model(x).numpy()


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """torchvision's initialisation plus non-zero biases and, for BN, non-trivial statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.running_mean.copy_(0.5 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
    return model.eval()


def random_model(model_fn, *args, seed: int = 0, **kwargs):
    """``model_fn(*args, **kwargs)`` (e.g. ``hbjax.models.vgg_cifar``) with random numpy weights:
    He-normal kernels, non-zero biases and batch-norm statistics.

    Flax's own initialisation is skipped (``jax.eval_shape`` gives the shapes), which saves the
    tests several seconds of compilation a model on a small CPU.
    """
    import jax

    from hbjax.models import model as model_lib
    from hbjax.models.checkpoint import expected_shapes

    def shapes_only(layers, normalization, key, input_size):
        flat = expected_shapes(tuple(layers), normalization, input_size)
        rng = np.random.default_rng(seed)
        variables: dict = {}
        for name, shape in flat.items():
            collection, layer, param = name.split("/")
            if param == "kernel":
                value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
            elif param in ("scale", "var"):
                value = rng.uniform(0.5, 1.5, shape)
            else:  # bias, mean
                value = rng.normal(0.0, 0.1, shape)
            variables.setdefault(collection, {}).setdefault(layer, {})[param] = value.astype(
                np.float32
            )
        return variables

    original = model_lib.init_params
    model_lib.init_params = shapes_only
    try:
        model = model_fn(*args, key=jax.random.key(seed), **kwargs)
    finally:
        model_lib.init_params = original
    return model
