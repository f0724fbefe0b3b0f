"""Porting bar for torchvision VGGs: ported logits equal torch's on real ImageNet images.

Random weights with non-zero biases; max |logit difference| <= 1e-4 max |logit|, at 224x224 and
at 160x160 (where the adaptive 7x7 average pool does real work), for every depth.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import torch
import torchvision
from tests._porting import imagenet_images, randomize, torch_logits

import hbjax
from hbjax.models import PortingError

ARCHS = ("vgg11", "vgg13", "vgg16", "vgg19")
@functools.lru_cache(maxsize=1)
def torch_and_ported(arch: str) -> tuple[torch.nn.Module, hbjax.models.Model]:
    torch.manual_seed(0)
    model = randomize(getattr(torchvision.models, arch)(weights=None), seed=1)
    return model, hbjax.models.from_torchvision(arch, model.state_dict())


def assert_logits_close(ours: np.ndarray, ref: np.ndarray, rel: float = 1e-4) -> None:
    scale = float(np.abs(ref).max())
    err = float(np.abs(ours - ref).max())
    assert err <= rel * scale, f"max |diff| {err:.3g} > {rel} * max |logit| {scale:.3g}"
    # the check must be able to fail: the images give clearly different logits
    assert float(np.abs(ref[0] - ref[1]).max()) > 100 * rel * scale


@pytest.mark.parametrize("arch,size", [(a, s) for a in ARCHS for s in (224, 160)])
def test_torchvision_logits_match(arch, size, imagenet_sample):
    model, ported = torch_and_ported(arch)
    images = imagenet_images(imagenet_sample, size)
    ours = np.asarray(jax.jit(ported.apply)(ported.params, images))
    assert ours.shape == (2, 1000) and ours.dtype == np.float32
    assert_logits_close(ours, torch_logits(model, images))


def test_torchvision_metadata_and_numpy_values():
    model, ported = torch_and_ported("vgg19")
    assert ported.meta["arch"] == "vgg19" and ported.meta["source"] == "torchvision"
    assert ported.num_classes == 1000
    from_numpy = hbjax.models.from_torchvision(
        "vgg19", {k: v.numpy() for k, v in model.state_dict().items()}
    )
    flat_a = jax.tree.leaves(ported.params)
    flat_b = jax.tree.leaves(from_numpy.params)
    assert all(np.array_equal(a, b) for a, b in zip(flat_a, flat_b))


@pytest.fixture(scope="module")
def vgg11_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return dict(torchvision.models.vgg11(weights=None, num_classes=10).state_dict())


def test_missing_tensor_is_named(vgg11_state_dict):
    sd = dict(vgg11_state_dict)
    del sd["features.3.bias"]
    with pytest.raises(PortingError, match=r"missing tensor 'features\.3\.bias'"):
        hbjax.models.from_torchvision("vgg11", sd)


def test_wrong_shape_is_named(vgg11_state_dict):
    sd = dict(vgg11_state_dict)
    sd["features.3.weight"] = torch.zeros(128, 64, 5, 5)
    with pytest.raises(PortingError, match=r"'features\.3\.weight' has shape \(128, 64, 5, 5\)"):
        hbjax.models.from_torchvision("vgg11", sd)


def test_wrong_architecture_is_reported(vgg11_state_dict):
    with pytest.raises(PortingError, match="vgg13"):
        hbjax.models.from_torchvision("vgg13", vgg11_state_dict)
    with pytest.raises(PortingError, match="unknown architecture 'resnet9'"):
        hbjax.models.from_torchvision("resnet9", vgg11_state_dict)
    with pytest.raises(PortingError, match="resnet50 has no 'fc.weight'"):
        hbjax.models.from_torchvision("resnet50", vgg11_state_dict)


def test_unexpected_tensor_is_reported(vgg11_state_dict):
    sd = dict(vgg11_state_dict)
    sd["extra.weight"] = torch.zeros(3)
    with pytest.raises(PortingError, match="unexpected tensors.*extra.weight"):
        hbjax.models.from_torchvision("vgg11", sd)
