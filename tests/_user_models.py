"""Model factories for the ``model=flax model.factory=...`` config entry (used by the tests)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

import hbjax
from hbjax.models import CIFAR10_CLASSES
from hbjax.models.vgg import CIFAR10_MEAN, CIFAR10_STD


class SmallResidualNet(nn.Module):
    """A user-written CIFAR-size network: strided conv, batch norm, a residual block, mean pool."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.BatchNorm(use_running_average=True, name="bn")(nn.Conv(8, (3, 3), (2, 2), name="stem")(x)))
        y = nn.relu(nn.Conv(8, (3, 3), feature_group_count=8, name="dw")(x))
        x = nn.relu(x + nn.Conv(8, (1, 1), name="proj")(y))
        return nn.Dense(10, name="head")(jnp.mean(x, axis=(1, 2)))


def small_residual_net(seed: int = 0) -> hbjax.models.Model:
    module = SmallResidualNet()
    variables = module.init(jax.random.key(seed), jnp.zeros((1, 32, 32, 3)))
    return hbjax.models.from_flax(
        module, variables, mean=CIFAR10_MEAN, std=CIFAR10_STD, class_names=CIFAR10_CLASSES, input_size=(32, 32)
    )


def not_a_model() -> dict:
    return {}
