"""Clear errors for unknown names, bad targets and bad inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hbjax
from hbjax import lrp


@pytest.fixture(scope="module")
def model():
    """A CIFAR-layout VGG (no adaptive pool: the input must be 32x32)."""
    return hbjax.models.vgg_cifar("vgg11", key=jax.random.key(0), width=0.125)


@pytest.fixture(scope="module")
def x():
    return jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))


def test_unknown_composite(model, x):
    with pytest.raises(ValueError, match="unknown LRP composite 'nope'.*epsilon_plus_flat"):
        lrp.relevance(model, x, [0, 1], composite="nope")
    with pytest.raises(ValueError, match="unknown LRP composite"):
        lrp.get_composite({"base": "nope"})
    with pytest.raises(ValueError, match="bad parameters for LRP composite 'dtd'"):
        lrp.get_composite({"base": "dtd", "gamma": 0.5})
    with pytest.raises(ValueError, match="need a 'base'"):
        lrp.get_composite({"epsilon": 0.1})
    with pytest.raises(ValueError, match="no rule applies to layer kind 'relu'"):
        lrp.get_composite({"kinds": {"relu": "epsilon"}})


def test_unknown_rule():
    with pytest.raises(ValueError, match="unknown LRP rule 'epsilom'.*epsilon"):
        lrp.make_rule("epsilom")
    with pytest.raises(ValueError, match="unknown LRP rule"):
        lrp.get_composite({"base": "dtd", "kinds": {"conv": {"rule": "zplus2"}}})
    with pytest.raises(ValueError, match="needs a 'rule' key"):
        lrp.make_rule({"gamma": 0.25})
    with pytest.raises(ValueError, match="bad parameters for LRP rule 'gamma'"):
        lrp.make_rule({"rule": "gamma", "alpha": 1.0})
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        lrp.alpha_beta(2.0, 2.0)
    with pytest.raises(ValueError, match="both low and high"):
        lrp.zbox(low=0.0)


def test_missing_rule_for_a_layer(model, x):
    only_conv = lrp.Composite("convs", kinds=(("conv", lrp.epsilon()),))
    with pytest.raises(ValueError, match="no rule for layer 'fc1'"):
        lrp.relevance(model, x, [0, 1], composite=only_conv)
    with pytest.raises(ValueError, match="needs explicit bounds"):
        lrp.relevance(model, x, [0, 1], composite={"base": "dtd", "names": {"conv2_1": "zbox"}})


def test_unknown_method(model, x):
    with pytest.raises(ValueError, match="unknown heatmap method 'gradcam'"):
        lrp.heatmap(model, x, [0, 1], method="gradcam")
    with pytest.raises(ValueError, match="scale_by_logit"):
        lrp.heatmap(model, x, [0, 1], method="sglrp", scale_by_logit=True)


@pytest.mark.parametrize("targets", [[0, 10], [-1, 0], 10])
def test_targets_out_of_range(model, x, targets):
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 10\)"):
        lrp.relevance(model, x, targets)


def test_targets_of_wrong_shape_or_type(model, x):
    with pytest.raises(ValueError, match=r"one class index per image, shape \(2,\)"):
        lrp.relevance(model, x, [0, 1, 2])
    with pytest.raises(ValueError, match=r"one class index per image"):
        lrp.relevance(model, x, np.zeros((2, 1), int))
    with pytest.raises(ValueError, match="integer class indices"):
        lrp.relevance(model, x, [0.0, 1.0])


def test_wrong_input_shapes(model, x):
    with pytest.raises(ValueError, match=r"shape \(B, H, W, 3\)"):
        lrp.relevance(model, x[0], [0])
    with pytest.raises(ValueError, match=r"shape \(B, H, W, 3\)"):
        lrp.relevance(model, x[..., :1], [0, 1])
    with pytest.raises(ValueError, match="floating point"):
        lrp.relevance(model, (x * 255).astype(jnp.uint8), [0, 1])
    with pytest.raises(ValueError, match="layer 'fc1' expects 64 input features"):
        lrp.relevance(model, jnp.zeros((1, 64, 64, 3)), [0])
    with pytest.raises(ValueError, match="too small"):
        lrp.relevance(model, jnp.zeros((1, 8, 8, 3)), [0])


def test_binarize_errors():
    h = jnp.ones((2, 4, 4))
    with pytest.raises(ValueError, match="unknown binarisation rule 'median'"):
        lrp.binarize(h, rule="median")
    with pytest.raises(ValueError, match=r"fraction must lie in \[0, 1\]"):
        lrp.binarize(h, rule="top", fraction=1.5)
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W\)"):
        lrp.binarize(jnp.ones(4))
