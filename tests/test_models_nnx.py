"""``hbjax.models.from_nnx`` against a reference: LRP-0 started from the target's logit is
gradient x input (R_i = a_i df/da_i layer by layer: at a ReLU a_i = z_i or both sides are 0; the
normalisation rule of a sum or a mean is the same identity), so the relevance of a flax.nnx network
read through hbjax's jaxpr interpreter must equal x * grad of the user's own module, differentiated
by plain JAX. float64, random weights, biases and batch-norm statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hbjax
from hbjax import lrp

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def nnx_net():
    from flax import nnx

    class Net(nnx.Module):
        """Strided conv, batch norm, ReLU, a residual block, a depthwise conv, mean pool, dense."""

        def __init__(self, rngs):
            self.stem = nnx.Conv(3, 8, (3, 3), strides=2, rngs=rngs)
            self.stem_bn = nnx.BatchNorm(8, rngs=rngs)
            self.conv = nnx.Conv(8, 8, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(8, rngs=rngs)
            self.depthwise = nnx.Conv(8, 8, (3, 3), feature_group_count=8, rngs=rngs)
            self.fc = nnx.Linear(8, 5, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.stem_bn(self.stem(x)))
            x = nnx.relu(x + self.bn(self.conv(x)))
            x = nnx.relu(self.depthwise(x))
            return self.fc(jnp.mean(x, axis=(1, 2)))

    net = Net(nnx.Rngs(0))
    key = jax.random.key(1)
    for bn in (net.stem_bn, net.bn):
        k1, k2, k3, k4, key = jax.random.split(key, 5)
        bn.mean[...] = 0.1 * jax.random.normal(k1, bn.mean.shape)
        bn.var[...] = jax.random.uniform(k2, bn.var.shape, minval=0.5, maxval=1.5)
        bn.scale[...] = jax.random.uniform(k3, bn.scale.shape, minval=0.5, maxval=1.5)
        bn.bias[...] = 0.1 * jax.random.normal(k4, bn.bias.shape)
    for layer in (net.stem, net.conv, net.depthwise, net.fc):
        key, k = jax.random.split(key)
        layer.bias[...] = 0.05 * jax.random.normal(k, layer.bias.shape)
    net.eval()
    return net


def test_from_nnx_lrp0_is_the_modules_own_gradient_times_input(nnx_net):
    model = hbjax.models.from_nnx(nnx_net, mean=MEAN, std=STD, input_size=(16, 16))
    kinds = [kind for _, kind, _ in lrp.explained_layers(model)]
    assert sorted(kinds) == ["avgpool", "conv", "conv", "dense", "depthwise_conv", "sum"]
    with jax.enable_x64(True):
        model = hbjax.models.cast(model, jnp.float64)
        x = jax.random.uniform(jax.random.key(2), (2, 16, 16, 3), jnp.float64)
        targets = jnp.array([1, 3])
        r = lrp.relevance(model, x, targets, composite="lrp0", scale_by_logit=True)
        xn = (x - jnp.asarray(MEAN)) / jnp.asarray(STD)
        # the reference: the user's module itself (nnx.merge of its state), plain jax.grad
        grads = jax.grad(lambda a: jnp.sum(model.net(model.params, a)[jnp.arange(2), targets]))(xn)
        assert r.dtype == jnp.float64 and float(jnp.abs(r).max()) > 0
        np.testing.assert_allclose(r, xn * grads, rtol=1e-9, atol=1e-12 * float(jnp.abs(r).max()))
