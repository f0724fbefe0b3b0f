"""torchvision ResNets ported to hbjax: logits equal torchvision's; LRP equals zennit's with its
ResNetCanonizer (batch norm merged, residual sums under the Norm rule); checkpoints round-trip.

Random weights with random batch-norm statistics; real images with +-0.01 noise (max-pool ties,
see docs/lrp.md). Sizes are kept small where the architecture allows (ResNets take any size):
160x160 for the parity tests, 224 once for the logits.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from zennit.attribution import Gradient
from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

import hbjax
from hbjax import lrp
from tests._porting import randomize, torch_logits
from tests.test_lrp_zennit import relative_errors, sample_images


def torch_resnet(arch: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomize(getattr(torchvision.models, arch)(weights=None), seed)


@pytest.mark.parametrize("arch, size", [
    ("resnet18", 224), ("resnet18", 160), ("resnet34", 160), ("resnet50", 224), ("resnet101", 160),
    ("resnet152", 160),
])  # fmt: skip
def test_logits_equal_torchvision(arch, size, imagenet_sample):
    net = torch_resnet(arch, seed=size)
    model = hbjax.models.from_torchvision(arch, net.state_dict())
    x = sample_images(imagenet_sample, size, indices=(11,)).astype(np.float32)
    theirs = torch_logits(net, x)
    ours = np.asarray(model.apply(model.params, jnp.asarray(x)))
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() <= 1e-4 * scale, f"{arch} at {size}: {np.abs(ours - theirs).max() / scale}"


def zennit_relevance(net, model, x, targets, composite, dtype):
    norm = model.normalization
    mean, std = np.asarray(norm.mean), np.asarray(norm.std)
    low = torch.tensor((0.0 - mean) / std, dtype=dtype).view(1, 3, 1, 1)
    high = torch.tensor((1.0 - mean) / std, dtype=dtype).view(1, 3, 1, 1)
    if composite == "epsilon_plus_flat":
        comp = EpsilonPlusFlat(canonizers=[ResNetCanonizer()])
    else:
        comp = EpsilonGammaBox(low=low, high=high, canonizers=[ResNetCanonizer()])
    xn = torch.tensor(((x - mean) / std).transpose(0, 3, 1, 2), dtype=dtype, requires_grad=True)
    with Gradient(net, comp) as attributor:
        _, rel = attributor(xn, torch.eye(model.num_classes, dtype=dtype)[list(targets)])
    return rel.detach().numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module", params=["resnet18", "resnet50"])
def setup(request, imagenet_sample):
    arch = request.param
    net = torch_resnet(arch, seed=5)
    model = hbjax.models.from_torchvision(arch, net.state_dict())
    indices = (3, 500) if arch == "resnet18" else (500,)
    x = sample_images(imagenet_sample, 160, indices=indices)
    logits = torch_logits(net, x.astype(np.float32))
    targets = [int(logits[0].argmax())] + [(int(logits[0].argmax()) + 417) % 1000] * (len(indices) - 1)
    return arch, net, model, x, targets


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_gamma_box"])
def test_agrees_with_zennit_float64(setup, composite):
    arch, net, model, x, targets = setup
    theirs = zennit_relevance(copy.deepcopy(net).double(), model, x, targets, composite, torch.float64)
    with jax.enable_x64(True):
        ours = np.asarray(lrp.relevance(model, jnp.asarray(x, jnp.float64), targets, composite=composite))
    err = relative_errors(ours, theirs)
    assert np.all(err <= 1e-4), f"{arch} {composite} float64: relative L2 errors {err}"


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_gamma_box"])
def test_agrees_with_zennit_float32(setup, composite):
    arch, net, model, x, targets = setup
    theirs = zennit_relevance(net, model, x, targets, composite, torch.float32)
    ours = lrp.relevance(model, jnp.asarray(x, jnp.float32), targets, composite=composite)
    assert ours.dtype == jnp.float32
    err = relative_errors(ours, theirs)
    assert np.all(err <= 2e-3), f"{arch} {composite} float32: relative L2 errors {err}"


def test_resnet_layers_and_rules():
    """ResNet-18's layers as LRP sees them: 20 convs (3 of them 1x1 shortcuts) with their batch
    norms folded, 8 residual sums, one global mean pool, one dense layer; by path and kind."""
    model = hbjax.models.resnet("resnet18")
    layers = lrp.explained_layers(model, composite={"base": "epsilon_gamma_box", "names": {"layer4_*/downsample_0": "lrp0"}},
                                  input_size=(64, 64))  # fmt: skip
    kinds = [kind for _, kind, _ in layers]
    assert kinds.count("conv") == 20 and kinds.count("sum") == 8
    assert kinds.count("avgpool") == 1 and kinds.count("dense") == 1
    rules = {name: rule.name for name, kind, rule in layers if kind != "sum"}
    assert rules["conv1"] == "zbox" and rules["layer1_0/conv1"] == "gamma" and rules["fc"] == "epsilon"
    assert rules["layer4_0/downsample_0"] == "lrp0" and rules["layer3_0/downsample_0"] == "gamma"
    assert {rule.name for _, kind, rule in layers if kind in ("sum", "avgpool")} == {"norm"}


def test_resnet_checkpoint_round_trip(tmp_path):
    model = hbjax.models.resnet("resnet18", key=jax.random.key(1), num_classes=7)
    path = hbjax.models.save(model, tmp_path / "r18.safetensors")
    loaded = hbjax.models.load(path)
    assert loaded.meta["arch"] == "resnet18" and loaded.num_classes == 7
    x = jax.random.uniform(jax.random.key(2), (1, 64, 64, 3))
    np.testing.assert_array_equal(loaded.apply(loaded.params, x), model.apply(model.params, x))
