"""LRP for a user-written Flax network: strided convs, a depthwise conv (stride 1 and 2, TF
"SAME" padding), batch norm, ReLU6, a residual sum and global average pooling, against the same
network in torch with zennit; composites by module path and by kind; clear errors for what LRP
cannot explain; from_flax, from_nnx and from_apply models in hbjax's other parts."""

from __future__ import annotations

import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat
from zennit.layer import Sum

import hbjax
from hbjax import lrp
from tests.test_lrp_zennit import relative_errors, sample_images

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def bn(name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=True, epsilon=1e-5, name=name)


class UserNet(nn.Module):
    """A small MobileNet/ResNet-style network as a user would write it."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(bn("stem_bn")(nn.Conv(8, (3, 3), (2, 2), padding=((1, 1), (1, 1)), name="stem")(x)))
        y = nn.Conv(8, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=8, name="dw")(x)
        y = jax.nn.relu6(bn("dw_bn")(y))
        y = bn("proj_bn")(nn.Conv(8, (1, 1), name="proj")(y))
        x = nn.relu(x + y)
        x = nn.Conv(16, (3, 3), (2, 2), padding="SAME", feature_group_count=8, name="down")(x)
        x = nn.relu(bn("down_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(10, name="head")(x)


class TorchUserNet(torch.nn.Module):
    """UserNet in torch, written so that zennit's canonizers see it: conv -> batch norm pairs,
    the residual sum as zennit's Sum module."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, 2, 1)
        self.stem_bn = torch.nn.BatchNorm2d(8)
        self.relu = torch.nn.ReLU()
        self.dw = torch.nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.dw_bn = torch.nn.BatchNorm2d(8)
        self.relu6 = torch.nn.ReLU6()
        self.proj = torch.nn.Conv2d(8, 8, 1)
        self.proj_bn = torch.nn.BatchNorm2d(8)
        self.sum = Sum()
        self.relu2 = torch.nn.ReLU()
        self.pad = torch.nn.ZeroPad2d((0, 1, 0, 1))  # TF "SAME" for a stride-2 3x3 on an even size
        self.down = torch.nn.Conv2d(8, 16, 3, 2, 0, groups=8)
        self.down_bn = torch.nn.BatchNorm2d(16)
        self.relu3 = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = self.relu(self.stem_bn(self.stem(x)))
        y = self.relu6(self.dw_bn(self.dw(x)))
        y = self.proj_bn(self.proj(y))
        x = self.relu2(self.sum(torch.stack([x, y], dim=-1)))
        x = self.relu3(self.down_bn(self.down(self.pad(x))))
        return self.head(torch.flatten(self.pool(x), 1))


def torch_user_net(seed: int = 0) -> TorchUserNet:
    torch.manual_seed(seed)
    net = TorchUserNet().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


def flax_variables(net: TorchUserNet) -> dict:
    """The torch net's weights in UserNet's layout (OIHW -> HWIO, dense transposed)."""
    params, stats = {}, {}
    for name, m in net.named_children():
        if isinstance(m, torch.nn.Conv2d):
            params[name] = {"kernel": m.weight.detach().numpy().transpose(2, 3, 1, 0), "bias": m.bias.detach().numpy()}
        elif isinstance(m, torch.nn.Linear):
            params[name] = {"kernel": m.weight.detach().numpy().T, "bias": m.bias.detach().numpy()}
        elif isinstance(m, torch.nn.BatchNorm2d):
            params[name] = {"scale": m.weight.detach().numpy(), "bias": m.bias.detach().numpy()}
            stats[name] = {"mean": m.running_mean.numpy(), "var": m.running_var.numpy()}
    return {"params": params, "batch_stats": stats}


@pytest.fixture(scope="module")
def user(imagenet_sample):
    net = torch_user_net()
    model = hbjax.models.from_flax(UserNet(), flax_variables(net), mean=MEAN, std=STD, input_size=(32, 32))
    x = sample_images(imagenet_sample, 32, seed=4)
    return net, model, x


def zennit_relevance(net, x, targets, composite, dtype):
    mean, std = np.asarray(MEAN), np.asarray(STD)
    low = torch.tensor((0.0 - mean) / std, dtype=dtype).view(1, 3, 1, 1)
    high = torch.tensor((1.0 - mean) / std, dtype=dtype).view(1, 3, 1, 1)
    comp = {
        "epsilon_plus_flat": lambda: EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()]),
        "epsilon_gamma_box": lambda: EpsilonGammaBox(low=low, high=high, canonizers=[SequentialMergeBatchNorm()]),
    }[composite]()
    xn = torch.tensor(((x - mean) / std).transpose(0, 3, 1, 2), dtype=dtype, requires_grad=True)
    with Gradient(net, comp) as attributor:
        _, rel = attributor(xn, torch.eye(10, dtype=dtype)[list(targets)])
    return rel.detach().numpy().transpose(0, 2, 3, 1)


def test_user_net_logits_equal_torch(user):
    net, model, x = user
    mean, std = np.asarray(MEAN), np.asarray(STD)
    with torch.no_grad():
        theirs = net(torch.tensor(((x - mean) / std).transpose(0, 3, 1, 2), dtype=torch.float32)).numpy()
    ours = np.asarray(model.apply(model.params, jnp.asarray(x, jnp.float32)))
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()
    assert model.num_classes == 10


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_gamma_box"])
def test_user_net_agrees_with_zennit(user, composite):
    net, model, x = user
    targets = [3, 7]
    theirs64 = zennit_relevance(copy.deepcopy(net).double(), x, targets, composite, torch.float64)
    with jax.enable_x64(True):
        ours64 = np.asarray(lrp.relevance(model, jnp.asarray(x, jnp.float64), targets, composite=composite))
    err = relative_errors(ours64, theirs64)
    assert np.all(err <= 1e-4), f"{composite} float64: relative L2 errors {err}"
    theirs32 = zennit_relevance(net, x, targets, composite, torch.float32)
    ours32 = lrp.relevance(model, jnp.asarray(x, jnp.float32), targets, composite=composite)
    assert ours32.dtype == jnp.float32
    err = relative_errors(ours32, theirs32)
    assert np.all(err <= 2e-3), f"{composite} float32: relative L2 errors {err}"


def test_composites_address_layers_by_path_and_kind(user):
    """A rule on the depthwise convs by kind equals the same rule by glob on their paths, and
    differs from the composite without it."""
    _, model, x = user
    x = jnp.asarray(x, jnp.float32)
    by_kind = {"base": "epsilon_gamma_box", "kinds": {"depthwise_conv": {"rule": "epsilon", "epsilon": 0.1}}}
    by_path = {"base": "epsilon_gamma_box", "names": {"d[wo]*": {"rule": "epsilon", "epsilon": 0.1}}}
    r_kind = lrp.relevance(model, x, [1, 2], composite=by_kind)
    r_path = lrp.relevance(model, x, [1, 2], composite=by_path)
    r_base = lrp.relevance(model, x, [1, 2], composite="epsilon_gamma_box")
    np.testing.assert_allclose(r_kind, r_path, rtol=1e-6, atol=1e-9)
    assert float(jnp.abs(r_kind - r_base).max()) > 1e-3 * float(jnp.abs(r_base).max())
    last = lrp.relevance(model, x, [1, 2], composite={"base": "epsilon_gamma_box", "last": "lrp0"})
    by_name = lrp.relevance(model, x, [1, 2], composite={"base": "epsilon_gamma_box", "names": {"head": "lrp0"}})
    np.testing.assert_allclose(last, by_name, rtol=1e-6, atol=1e-9)


def test_residual_sum_conserves_and_blocks_conserve(user):
    """Zero biases and batch-norm shifts, the epsilon rule: the relevance total equals R_top at the
    input, at every layer on the main path and at the residual sum; the residual branch keeps its
    (negative) share from the sum down to its first layer; the sum's two parts add up to the
    relevance above it."""
    _, model, x = user

    def zero_shift(path, v):
        name = jax.tree_util.keystr(path)
        return 0 * v if ("'bias'" in name or "'mean'" in name) else v

    model = model.replace(params=jax.tree_util.tree_map_with_path(zero_shift, model.params))
    layers = lrp.layer_relevances(model, jnp.asarray(x, jnp.float32), [2, 5], composite="epsilon")
    totals = {name: np.asarray(r, np.float64).reshape(2, -1).sum(1) for name, r in layers}
    assert {"input", "stem", "dw", "proj", "sum1", "down", "head"} <= set(totals)
    for name in ("input", "stem", "sum1", "down", "head"):
        np.testing.assert_allclose(totals[name], 1.0, rtol=1e-4, err_msg=name)
    np.testing.assert_allclose(totals["dw"], totals["proj"], rtol=1e-4)
    assert np.all(np.abs(totals["proj"]) > 1e-3)
    a, b = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3))), jnp.ones((2, 3))
    r = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3)))
    ra, rb = jax.vjp(lambda u, v: lrp.layers.lrp_sum(1e-6, u, v), a, b)[1](r)
    np.testing.assert_allclose(ra, a * r / lrp.stabilize(a + b, 1e-6), rtol=1e-6)
    np.testing.assert_allclose(ra + rb, r * (a + b) / lrp.stabilize(a + b, 1e-6), rtol=1e-6)


class Bad(nn.Module):
    kind: str

    @nn.compact
    def __call__(self, x):
        if self.kind == "bn_first":
            x = bn("pre_bn")(x)
        x = nn.Conv(4, (3, 3), name="conv")(x)
        if self.kind == "tanh":
            with jax.named_scope("act"):
                x = jnp.tanh(x)
        if self.kind == "gate":
            x = x * jax.nn.relu(x)
        return nn.Dense(3, name="fc")(jnp.mean(x, axis=(1, 2)))


@pytest.mark.parametrize("kind, message", [
    ("tanh", r"primitive 'tanh' at module path 'act'"),
    ("bn_first", r"'sub' at module path 'pre_bn'.*follows no linear layer"),
    ("gate", r"'mul'.*two activations"),
])  # fmt: skip
def test_unsupported_operations_are_named(kind, message):
    module = Bad(kind)
    variables = module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    model = hbjax.models.from_flax(module, variables, mean=MEAN, std=STD, input_size=(8, 8))
    with pytest.raises(lrp.UnsupportedOperation, match=message):
        lrp.relevance(model, jnp.ones((1, 8, 8, 3)) * 0.5, [0])


def test_from_nnx_and_from_apply_models_run_lrp_and_the_defense(user):
    """The same network three ways (linen, a plain apply function, nnx) gives the same heatmap;
    Heat and Blur runs on each."""
    from flax import nnx

    _, model, x = user
    x = jnp.asarray(x, jnp.float32)
    plain = hbjax.models.from_apply(UserNet().apply, model.params, mean=MEAN, std=STD, input_size=(32, 32))
    h = lrp.heatmap(model, x, [1, 2], composite="epsilon_plus_flat")
    np.testing.assert_allclose(lrp.heatmap(plain, x, [1, 2], composite="epsilon_plus_flat"), h, rtol=1e-5, atol=1e-8)

    class Tiny(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 4, (3, 3), strides=2, rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)
            self.fc = nnx.Linear(4, 5, rngs=rngs)

        def __call__(self, x):
            return self.fc(jnp.mean(nnx.relu(self.bn(self.conv(x))), axis=(1, 2)))

    tiny = Tiny(nnx.Rngs(0))
    tiny.eval()
    nnx_model = hbjax.models.from_nnx(tiny, mean=MEAN, std=STD, input_size=(32, 32))
    r = lrp.relevance(nnx_model, x, [0, 4], composite="epsilon_plus")
    np.testing.assert_allclose(np.asarray(r).sum(axis=(1, 2, 3)), 1.0, rtol=0.2)
    for m in (model, plain, nnx_model):
        x_c = hbjax.defense.heat_and_blur(m, x, jax.random.key(0), sigma=(0.8, 1.2))
        assert x_c.shape == x.shape and bool(jnp.all(jnp.isfinite(x_c)))
