"""hbjax LRP against zennit on torchvision VGGs (random weights, non-zero biases) ported to hbjax.

Real images from the ImageNet sample with a little uniform noise (+-0.01): in flat regions
neighbouring activations are equal and which one wins a max-pool is decided by round-off,
differently in each framework; the noise removes exact ties.

VGG19 runs at 224x224 (the adaptive pool is the identity, explained by zennit's Norm rule all the
same); VGG16 at 128x128, where the adaptive pool maps 4x4 to 7x7 with overlapping bins.
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
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import (
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    SpecialFirstLayerMapComposite,
    layer_map_base,
)
from zennit.rules import Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus
from zennit.types import Convolution

import hbjax
import hbjax.data
from hbjax import lrp

COMPOSITES = ("dtd", "epsilon_plus_flat", "epsilon_gamma_box")
MODELS = {"vgg19": 224, "vgg16": 128}


def torch_vgg(arch: str, seed: int, **kwargs) -> torch.nn.Module:
    """A torchvision VGG with its random initialisation and random biases in [-0.05, 0.05]
    (torchvision initialises them to zero); batch-norm statistics random too."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None, **kwargs).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.05, 0.05)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


def zennit_composite(name: str, low: torch.Tensor, high: torch.Tensor, canonizers=None):
    """zennit's composite for an hbjax composite name (dtd: z^B first, z+ on every other conv and
    dense layer, built from zennit's parts)."""
    if name == "epsilon_plus_flat":
        return EpsilonPlusFlat(canonizers=canonizers)
    if name == "epsilon_gamma_box":
        return EpsilonGammaBox(low=low, high=high, canonizers=canonizers)
    if name == "dtd":
        return SpecialFirstLayerMapComposite(
            layer_map=layer_map_base() + [(Convolution, ZPlus()), (torch.nn.Linear, ZPlus())],
            first_map=[(Convolution, ZBox(low, high))],
            canonizers=canonizers,
        )
    if name == "epsilon_plus":
        return EpsilonPlus(canonizers=canonizers)
    if name == "epsilon_alpha2_beta1_flat":
        return EpsilonAlpha2Beta1Flat(canonizers=canonizers)
    if name == "wsquare_gamma":
        return SpecialFirstLayerMapComposite(
            layer_map=layer_map_base()
            + [(Convolution, Gamma(gamma=0.5)), (torch.nn.Linear, Epsilon(epsilon=0.01))],
            first_map=[(Convolution, WSquare())],
        )
    if name == "flat_lrp0":
        return SpecialFirstLayerMapComposite(
            layer_map=layer_map_base()
            + [(Convolution, Epsilon(epsilon=1e-3)), (torch.nn.Linear, Epsilon(epsilon=0.0))],
            first_map=[(Convolution, Flat())],
        )
    raise KeyError(name)


HBJAX_CUSTOM = {
    "wsquare_gamma": {
        "first": "wsquare",
        "kinds": {"conv": {"rule": "gamma", "gamma": 0.5}, "dense": {"rule": "epsilon", "epsilon": 0.01}},
    },
    "flat_lrp0": {"first": "flat", "kinds": {"conv": {"rule": "epsilon", "epsilon": 1e-3}, "dense": "lrp0"}},
}


def zennit_relevance(net, model, x: np.ndarray, targets, composite: str, dtype, canonizers=None):
    """zennit's relevance (B, H, W, 3) of the normalised input, for the one-hot targets."""
    norm = model.normalization
    mean, std = np.asarray(norm.mean), np.asarray(norm.std)
    low = torch.tensor((0.0 - mean) / std, dtype=dtype).view(1, 3, 1, 1)
    high = torch.tensor((1.0 - mean) / std, dtype=dtype).view(1, 3, 1, 1)
    xn = torch.tensor(((x - mean) / std).transpose(0, 3, 1, 2), dtype=dtype, requires_grad=True)
    onehot = torch.eye(model.num_classes, dtype=dtype)[list(targets)]
    with Gradient(net, zennit_composite(composite, low, high, canonizers)) as attributor:
        _, rel = attributor(xn, onehot)
    return rel.detach().numpy().transpose(0, 2, 3, 1)


def sample_images(root, size: int, indices=(3, 500), seed: int = 0) -> np.ndarray:
    """Images of the ImageNet sample (resized, centre-cropped) plus uniform noise in +-0.01,
    clipped to [0, 1], in float64."""
    pre = hbjax.data.Preprocess("imagenet", size=size, resize=round(size * 256 / 224))
    folder = hbjax.data.ImageFolder(str(root), "val", pre)
    x, _, _ = next(folder.batches(len(indices), indices=list(indices)))
    noise = np.random.default_rng(seed).uniform(-0.01, 0.01, x.shape)
    return np.clip(x.astype(np.float64) + noise, 0.0, 1.0)


def relative_errors(ours, theirs) -> np.ndarray:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    diff = (ours - theirs).reshape(len(ours), -1)
    return np.linalg.norm(diff, axis=1) / np.linalg.norm(theirs.reshape(len(ours), -1), axis=1)


@pytest.fixture(scope="module", params=sorted(MODELS))
def setup(request, imagenet_sample):
    """(arch, torch net float32, hbjax model, images, targets): the argmax for the first image,
    another class for the second."""
    arch = request.param
    net = torch_vgg(arch, seed=len(arch) + int(arch[3:]))
    model = hbjax.models.from_torchvision(arch, net.state_dict())
    model = model.replace(params=jax.device_put(model.params))
    x = sample_images(imagenet_sample, MODELS[arch])
    mean, std = np.asarray(model.normalization.mean), np.asarray(model.normalization.std)
    with torch.no_grad():
        logits = net(torch.tensor(((x - mean) / std).transpose(0, 3, 1, 2), dtype=torch.float32))
    first = int(logits[0].argmax())
    targets = [first, (first + 417) % 1000]
    return arch, net, model, x, targets


@pytest.mark.parametrize("composite", COMPOSITES)
def test_agrees_with_zennit_float64(setup, composite):
    arch, net, model, x, targets = setup
    net64 = copy.deepcopy(net).double()
    theirs = zennit_relevance(net64, model, x, targets, composite, torch.float64)
    with jax.enable_x64(True):
        ours = lrp.relevance(model, jnp.asarray(x, jnp.float64), targets, composite=composite)
        assert ours.dtype == jnp.float64
        ours = np.asarray(ours)
    err = relative_errors(ours, theirs)
    assert np.all(err <= 1e-4), f"{arch} {composite} float64: relative L2 errors {err}"


@pytest.mark.parametrize("composite", COMPOSITES)
def test_agrees_with_zennit_float32(setup, composite):
    arch, net, model, x, targets = setup
    theirs = zennit_relevance(net, model, x, targets, composite, torch.float32)
    ours = lrp.relevance(model, jnp.asarray(x, jnp.float32), targets, composite=composite)
    assert ours.dtype == jnp.float32
    err = relative_errors(ours, theirs)
    assert np.all(err <= 2e-3), f"{arch} {composite} float32: relative L2 errors {err}"


@pytest.fixture(scope="module")
def small(imagenet_sample):
    """A VGG11 at 64x64 (float64) for the rules the three main composites do not use."""
    net = torch_vgg("vgg11", seed=7).double()
    model = hbjax.models.from_torchvision("vgg11", net.state_dict())
    return net, model, sample_images(imagenet_sample, 64, indices=(42,), seed=1)


@pytest.mark.parametrize("composite", ["epsilon_plus", "epsilon_alpha2_beta1_flat", "wsquare_gamma", "flat_lrp0"])
def test_other_rules_agree_with_zennit(small, composite):
    """z+ on signed input (the input layer), alpha2-beta1, w^2, gamma 0.5, epsilon 0.01, LRP-0."""
    net, model, x = small
    targets = [5]
    theirs = zennit_relevance(net, model, x, targets, composite, torch.float64)
    with jax.enable_x64(True):
        ours = np.asarray(lrp.relevance(model, jnp.asarray(x), targets, composite=HBJAX_CUSTOM.get(composite, composite)))
    err = relative_errors(ours, theirs)
    assert np.all(err <= 1e-4), f"{composite}: relative L2 errors {err}"


def test_batchnorm_agrees_with_zennit_canonizer(imagenet_sample):
    """vgg11_bn: hbjax folds batch norm into the conv before it, zennit's canonizer likewise."""
    net = torch_vgg("vgg11_bn", seed=3).double()
    model = hbjax.models.from_torchvision("vgg11_bn", net.state_dict())
    assert model.has_batchnorm
    x = sample_images(imagenet_sample, 64, indices=(7,), seed=2)
    theirs = zennit_relevance(net, model, x, [11], "epsilon_gamma_box", torch.float64, [SequentialMergeBatchNorm()])
    with jax.enable_x64(True):
        ours = np.asarray(lrp.relevance(model, jnp.asarray(x), [11], composite="epsilon_gamma_box"))
    err = relative_errors(ours, theirs)
    assert np.all(err <= 1e-4), f"vgg11_bn epsilon_gamma_box: relative L2 errors {err}"
