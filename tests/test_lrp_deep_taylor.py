"""The ``deep_taylor`` composite (iNNvestigate's ``DeepTaylor``) against an equivalent zennit
composite on a torchvision VGG11 (random weights, non-zero biases) ported to hbjax, in float64.

The zennit composite is built here: ``ZPlus`` with the bias zeroed on every conv and on the two
hidden dense layers (each followed by a ReLU), ``WSquare`` with the bias zeroed on the logits layer,
ReLU passing relevance through, and no rule on max or average pooling (their plain gradients; at
64x64 the adaptive pool maps 2x2 to 7x7, so its gradient is not the identity). The output ReLU is
the gradient given to zennit: the one-hot vector where the target's logit is positive, else zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from zennit.attribution import Gradient
from zennit.composites import NameLayerMapComposite
from zennit.rules import Pass, WSquare, ZPlus
from zennit.types import Activation, Convolution

import hbjax
import hbjax.data
from hbjax import lrp

SIZE = 64


@pytest.fixture(scope="module")
def setup(imagenet_sample):
    """(torch VGG11 in float64, its hbjax port, two images in float64)."""
    torch.manual_seed(11)
    net = torchvision.models.vgg11(weights=None).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.05, 0.05)
    model = hbjax.models.from_torchvision("vgg11", net.state_dict())
    pre = hbjax.data.Preprocess("imagenet", size=SIZE, resize=round(SIZE * 256 / 224))
    x, _, _ = next(hbjax.data.ImageFolder(str(imagenet_sample), "val", pre).batches(2, indices=[3, 500]))
    # a little noise breaks exact max-pool ties, which each framework resolves by its own round-off
    noise = np.random.default_rng(0).uniform(-0.01, 0.01, x.shape)
    return net.double(), model, np.clip(x.astype(np.float64) + noise, 0.0, 1.0)


def zennit_deep_taylor(net, model, x: np.ndarray, targets) -> tuple[np.ndarray, np.ndarray]:
    """zennit's relevance (B, H, W, 3) under the equivalent composite, and the logits."""
    mean, std = np.asarray(model.normalization.mean), np.asarray(model.normalization.std)
    xn = torch.tensor(((x - mean) / std).transpose(0, 3, 1, 2), dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        logits = net(xn)
    onehot = torch.eye(model.num_classes, dtype=torch.float64)[list(targets)]
    grad_output = onehot * (logits > 0)  # the output ReLU
    composite = NameLayerMapComposite(
        name_map=[(["classifier.6"], WSquare(zero_params="bias"))],
        layer_map=[
            (Activation, Pass()),
            (Convolution, ZPlus(zero_params="bias")),
            (torch.nn.Linear, ZPlus(zero_params="bias")),
        ],
    )
    with Gradient(net, composite) as attributor:
        _, rel = attributor(xn, grad_output)
    return rel.detach().numpy().transpose(0, 2, 3, 1), logits.numpy()


def relative_errors(ours, theirs) -> np.ndarray:
    diff = (np.asarray(ours) - np.asarray(theirs)).reshape(len(theirs), -1)
    return np.linalg.norm(diff, axis=1) / np.linalg.norm(np.asarray(theirs).reshape(len(theirs), -1), axis=1)


def test_deep_taylor_agrees_with_zennit_float64(setup):
    net, model, x = setup
    with torch.no_grad():
        mean, std = np.asarray(model.normalization.mean), np.asarray(model.normalization.std)
        logits = net(torch.tensor(((x - mean) / std).transpose(0, 3, 1, 2))).numpy()
    targets = [int(np.argmax(logits[0])), int(np.argsort(logits[1])[-3])]
    assert np.all(logits[[0, 1], targets] > 0), "the test needs targets with positive logits"
    theirs, _ = zennit_deep_taylor(net, model, x, targets)
    with jax.enable_x64(True):
        ours = lrp.relevance(model, jnp.asarray(x, jnp.float64), targets, composite="deep_taylor")
        assert ours.dtype == jnp.float64
        ours = np.asarray(ours)
    err = relative_errors(ours, theirs)
    assert np.all(err <= 1e-4), f"deep_taylor float64: relative L2 errors {err}"
    # it is not dtd: z^B and the bias on the input layer, the Norm rule on pooling differ
    with jax.enable_x64(True):
        dtd = np.asarray(lrp.relevance(model, jnp.asarray(x, jnp.float64), targets, composite="dtd"))
    assert np.all(relative_errors(dtd, theirs) > 1e-2)


def test_deep_taylor_output_relu_zeroes_negative_logit_targets(setup):
    """A target whose logit is negative gets no relevance (the ReLU on the output)."""
    net, model, x = setup
    with jax.enable_x64(True):
        logits = np.asarray(model.apply(model.params, jnp.asarray(x)))
        targets = [int(np.argmin(logits[0])), int(np.argmin(logits[1]))]
        assert np.all(logits[[0, 1], targets] < 0)
        ours = np.asarray(lrp.relevance(model, jnp.asarray(x), targets, composite="deep_taylor"))
        plain = np.asarray(lrp.relevance(model, jnp.asarray(x), targets, composite="dtd"))
    assert np.all(ours == 0)
    assert np.all(np.abs(plain).sum(axis=(1, 2, 3)) > 0)


def test_deep_taylor_plan():
    """The rules deep_taylor assigns on a VGG with batch norm and dropout: z+ without bias on every
    layer followed by a ReLU (the first included), w^2 without bias on the logits layer, no rule on
    pooling."""
    model = hbjax.models.vgg(
        "vgg11", num_classes=10, width=0.25, batchnorm=True, classifier=(64, 32), input_size=(32, 32)
    )
    layers = lrp.explained_layers(model, composite="deep_taylor")
    kernels = [rule for _, kind, rule in layers if kind in ("conv", "dense")]
    assert len(kernels) == 11
    assert all(rule.name == "zplus" for rule in kernels[:-1])
    assert kernels[-1].name == "wsquare"
    for rule in kernels:
        assert all(t.bias.op == "zero" for g in rule.groups for t in g.terms)
    assert [rule.name for _, kind, rule in layers if kind == "avgpool"] == ["gradient"]


def test_max_pool_winner_routes_like_torch_on_ties():
    """Zeros everywhere but a few windows: torch's gradient picks the first maximum of each window."""
    rng = np.random.default_rng(3)
    x = np.maximum(rng.normal(size=(2, 6, 7, 3)), 0) * (rng.uniform(size=(2, 6, 7, 3)) < 0.3)
    x[0, 0:2, 0:2, 0] = 0.5  # a tie at a positive value
    g = rng.normal(size=(2, 3, 3, 3))
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    torch.nn.functional.max_pool2d(xt, 2).backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    with jax.enable_x64(True):
        out, vjp = jax.vjp(lrp.max_pool_winner, jnp.asarray(x))
        (ours,) = vjp(jnp.asarray(g))
        np.testing.assert_array_equal(np.asarray(out), np.asarray(hbjax.models.layers.max_pool_2x2(jnp.asarray(x))))
    np.testing.assert_array_equal(np.asarray(ours), xt.grad.numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize("kernel, stride, padding, size", [
    (3, 2, 1, 9),  # ResNet's stem pool: overlapping windows, -inf padding
    (3, 2, 1, 8),
    (2, 2, 0, 7),  # floor mode: the last row and column belong to no window
    (3, 1, 1, 5),
])  # fmt: skip
def test_max_pool_first_winner_routes_like_torch_on_ties(kernel, stride, padding, size):
    """Any max-pool the LRP graph meets: each window's cotangent goes to its first maximum in
    row-major order, as torch's max_pool2d gradient (overlapping windows add up)."""
    rng = np.random.default_rng(8)
    x = np.maximum(rng.normal(size=(2, size, size + 1, 3)), 0) * (rng.uniform(size=(2, size, size + 1, 3)) < 0.4)
    x[0, 1:4, 1:4, 1] = 0.25  # ties at a positive value across overlapping windows
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    out_t = torch.nn.functional.max_pool2d(xt, kernel, stride, padding)
    g = rng.normal(size=out_t.shape)
    out_t.backward(torch.tensor(g))
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    window = ((1, kernel, kernel, 1), (1, stride, stride, 1), pad)
    with jax.enable_x64(True):
        out, vjp = jax.vjp(lambda a: lrp.layers.max_pool_first_winner(window, a), jnp.asarray(x))
        (ours,) = vjp(jnp.asarray(g.transpose(0, 2, 3, 1)))
    np.testing.assert_array_equal(np.asarray(out), out_t.detach().numpy().transpose(0, 2, 3, 1))
    expected = xt.grad.numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(ours) != 0, expected != 0)  # the same winners
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-13, atol=0)  # sums in another order
