"""The LRP interpreter: walks a model's layer list with its parameters, a rule on every layer.

The model's :class:`~hbjax.models.LayerSpec` tuple is the one description of the architecture; the
plan built here attaches to each conv, dense and average-pooling layer the rule its composite
assigns. Batch norm is folded into the conv before it (as zennit's canonizer and
:func:`hbjax.models.fold_batchnorm` do); dropout is the identity (test time).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from hbjax.lrp.composites import Composite
from hbjax.lrp.layers import LayerRule, LinearOp, lrp_linear, max_pool_winner, relu_pass
from hbjax.models.layers import LayerSpec, adaptive_avg_pool

BN_EPS = 1e-5  # hbjax's (and torch's) batch-norm epsilon


@dataclasses.dataclass(frozen=True)
class Step:
    """One layer of the plan: the layer, its rule (None: no rule), a batch norm folded into it."""

    layer: LayerSpec
    rule: LayerRule | None = None
    batchnorm: str | None = None
    is_first: bool = False
    pass_through: bool = False  # ReLU: pass relevance through (else: its ordinary gradient)


def build_plan(layers: Sequence[LayerSpec], composite: Composite) -> tuple[Step, ...]:
    """The layer list with a rule on every conv, dense and average-pooling layer."""
    steps: list[Step] = []
    nonneg = False  # whether the current activation is known to be >= 0 (after a ReLU)
    seen_linear = False
    layers = tuple(layers)
    for index, layer in enumerate(layers):
        kind = layer.kind
        if kind == "batchnorm":
            if not steps or steps[-1].layer.kind != "conv" or steps[-1].batchnorm is not None:
                raise ValueError(f"batch norm {layer.name!r} does not follow a conv layer; cannot fold it")
            steps[-1] = dataclasses.replace(steps[-1], batchnorm=layer.name)
            continue
        if kind == "dropout":
            continue
        if kind in ("conv", "dense"):
            is_first = not seen_linear
            seen_linear = True
            rule = composite.rule_for(layer, is_first, _rectified(layers, index))
            if rule is None:
                raise ValueError(f"composite {composite.name!r} has no rule for layer {layer.name!r}")
            if rule.uses_bounds and rule.bounds is None and not is_first:
                raise ValueError(
                    f"rule {rule.name!r} on layer {layer.name!r} needs explicit bounds (low, high); "
                    "only the input layer takes them from the normalisation"
                )
            steps.append(Step(layer, LayerRule(LinearOp(kind), rule, nonneg), is_first=is_first))
            nonneg = False
        elif kind == "adaptive_avgpool":
            rule = composite.rule_for(layer, False)
            if rule is None:  # plain gradient (the composite's plain_pooling)
                steps.append(Step(layer))
            else:
                op = LinearOp("avgpool", tuple(layer.output_size))
                steps.append(Step(layer, LayerRule(op, rule, nonneg)))
        else:  # relu, maxpool, flatten
            if kind == "relu":
                nonneg = True
            steps.append(Step(layer))
    if not seen_linear:
        raise ValueError("the model has no conv or dense layer to explain")
    return _relu_modes(steps)


def _rectified(layers: Sequence[LayerSpec], index: int) -> bool:
    """Whether a ReLU follows layer ``index`` (batch norm and dropout in between are skipped)."""
    for layer in layers[index + 1 :]:
        if layer.kind in ("batchnorm", "dropout"):
            continue
        return layer.kind == "relu"
    return False


def _multiplies_by_input(rule: LayerRule | None) -> bool:
    """Whether a rule's lower relevance is (a part of) the input times something, so that it is
    exactly zero wherever the input is zero."""
    if rule is None:
        return False
    return all(t.input in ("x", "pos", "neg") for g in rule.rule.groups for t in g.terms)


def _relu_modes(steps: list[Step]) -> tuple[Step, ...]:
    """zennit passes relevance through a ReLU unchanged. Where the next rule multiplies by its
    input, the relevance arriving at a ReLU's zero outputs is exactly zero, so the ReLU's ordinary
    gradient gives the same result and lets XLA fuse more; elsewhere (flat, w^2, z^B above) the
    ReLU passes relevance through."""
    out = list(steps)
    for i, step in enumerate(steps):
        if step.layer.kind != "relu":
            continue
        # the next rule above, or None at a plain-gradient average pool (it spreads relevance over
        # its whole window, zero inputs included)
        upper = next((s.rule for s in steps[i + 1 :] if s.rule is not None or s.layer.kind == "adaptive_avgpool"), None)
        if not _multiplies_by_input(upper):
            out[i] = dataclasses.replace(step, pass_through=True)
    return tuple(out)


def _layer_params(step: Step, variables: Any, dtype) -> tuple[jnp.ndarray, jnp.ndarray]:
    params = variables["params"][step.layer.name]
    kernel = jnp.asarray(params["kernel"], dtype)
    bias = jnp.asarray(params["bias"], dtype)
    if step.batchnorm is not None:
        bn = variables["params"][step.batchnorm]
        stats = variables["batch_stats"][step.batchnorm]
        scale = jnp.asarray(bn["scale"], dtype) / jnp.sqrt(jnp.asarray(stats["var"], dtype) + BN_EPS)
        kernel = kernel * scale
        bias = (bias - jnp.asarray(stats["mean"], dtype)) * scale + jnp.asarray(bn["bias"], dtype)
    return kernel, bias


def _bounds(step: Step, default: tuple[jnp.ndarray, jnp.ndarray] | None, dtype):
    rule = step.rule.rule
    if not rule.uses_bounds:
        return None
    if rule.bounds is None:
        if default is None:
            raise ValueError(f"rule {rule.name!r} on layer {step.layer.name!r} needs bounds (low, high)")
        return default
    low, high = rule.bounds
    return jnp.asarray(low, dtype), jnp.asarray(high, dtype)


def forward(
    plan: Sequence[Step],
    variables: Any,
    x: jnp.ndarray,
    bounds: tuple[jnp.ndarray, jnp.ndarray] | None = None,
    probes: Sequence[jnp.ndarray] | None = None,
    record: list | None = None,
) -> jnp.ndarray:
    """Logits of the normalised input x; differentiating with ``jax.vjp`` propagates relevance.

    Args:
      plan: from :func:`build_plan`.
      variables: the model's Flax variables (``{"params": ..., "batch_stats": ...}``).
      x: the normalised input (B, H, W, C); parameters are cast to its dtype.
      bounds: z^B's (low, high) per channel for the input layer.
      probes: optional zeros added to each step's output; their cotangents are the relevance
        arriving at each step's output (see :func:`hbjax.lrp.layer_relevances`).
      record: optional list that receives each step's output.
    """
    dtype = x.dtype
    for i, step in enumerate(plan):
        layer = step.layer
        if step.rule is not None:
            if step.rule.op.kind == "avgpool":
                x = lrp_linear(step.rule, x, None, None, None)
            else:
                w, b = _layer_params(step, variables, dtype)
                expected = w.shape[-2] if layer.kind == "conv" else w.shape[0]
                if x.shape[-1] != expected:
                    raise ValueError(
                        f"layer {layer.name!r} expects {expected} input features, got {x.shape[-1]} "
                        f"(activation shape {tuple(x.shape)}); is the input image the size the model "
                        "was built for?"
                    )
                x = lrp_linear(step.rule, x, w, b, _bounds(step, bounds, dtype))
        elif layer.kind == "relu":
            x = relu_pass(x) if step.pass_through else jax.nn.relu(x)
        elif layer.kind == "maxpool":
            if x.shape[1] < 2 or x.shape[2] < 2:
                raise ValueError(f"max-pool {layer.name!r} got a {x.shape[1]}x{x.shape[2]} activation; "
                                 "the input image is too small for this model")
            x = max_pool_winner(x)
        elif layer.kind == "adaptive_avgpool":  # no rule: its ordinary gradient
            x = adaptive_avg_pool(x, tuple(layer.output_size))
        elif layer.kind == "flatten":
            x = x.reshape(x.shape[0], -1)
        else:
            raise ValueError(f"layer kind {layer.kind!r} is not supported by LRP")
        if probes is not None:
            x = x + probes[i]
        if record is not None:
            record.append(x)
    return x
