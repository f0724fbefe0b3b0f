"""torchvision vgg*_bn porting and batch-norm folding: the BN model, its folded twin and torch agree.

Random weights, non-zero biases and non-trivial running statistics; 64x64 inputs keep the cost
down (and make the adaptive pool upsample 2x2 to 7x7).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import torchvision
from tests._porting import imagenet_images, random_model, randomize, torch_logits

import hbjax

ARCHS = ("vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn")


@pytest.fixture(scope="module")
def images(imagenet_sample) -> np.ndarray:
    return imagenet_images(imagenet_sample, 64)


@pytest.mark.parametrize("arch", ARCHS)
def test_bn_port_and_fold_match_torch(arch, images):
    torch.manual_seed(0)
    model = randomize(getattr(torchvision.models, arch)(weights=None), seed=2)
    ref = torch_logits(model, images)
    ported = hbjax.models.from_torchvision(arch, model.state_dict())
    assert ported.has_batchnorm and "batch_stats" in ported.params
    folded = hbjax.models.fold_batchnorm(ported)
    assert not folded.has_batchnorm and set(folded.params) == {"params"}
    assert folded.meta["batchnorm_folded"] is True
    scale = float(np.abs(ref).max())
    assert float(np.abs(ref[0] - ref[1]).max()) > 1e-2 * scale
    for m in (ported, folded):
        ours = np.asarray(jax.jit(m.apply)(m.params, images))
        err = float(np.abs(ours - ref).max())
        assert err <= 1e-4 * scale, f"{arch}: max |diff| {err:.3g}, max |logit| {scale:.3g}"


def test_fold_without_batchnorm_is_identity():
    model = random_model(hbjax.models.vgg_cifar, width=0.125)
    assert hbjax.models.fold_batchnorm(model) is model


def test_fold_cifar_variant_matches(images):
    model = random_model(hbjax.models.vgg_cifar, width=0.125, batchnorm=True, seed=3)
    assert float(np.abs(model.params["batch_stats"]["bn1_1"]["mean"]).min()) > 0
    x = images[:, :32, :32, :]
    ref = np.asarray(jax.jit(model.apply)(model.params, x))
    folded = hbjax.models.fold_batchnorm(model)
    ours = np.asarray(jax.jit(folded.apply)(folded.params, x))
    np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max(), rtol=0)
