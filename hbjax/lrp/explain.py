"""Relevance and heatmaps: LRP, contrastive LRP (CLRP) and softmax-gradient LRP (SGLRP).

One jitted function per (architecture, normalisation, composite, method) runs the forward pass once
and ``jax.vjp`` once: the forward gives the logits, the custom VJP rules of
:mod:`hbjax.lrp.layers` turn the initial relevance into the input relevance. Everything is batched;
each image's result equals its single-image call.

Relevance is computed for the normalised input the network sees and reported per image pixel:
the input normalisation belongs to the input layer, so relevance per image pixel equals relevance
per normalised pixel (channels put back in RGB order for BGR models).

Initial relevance R_top (a vector over the classes, one per image) by ``method``:

- ``lrp``: the one-hot vector of the target t (``scale_by_logit``: times its logit z_t).

A composite with ``output_relu`` (``deep_taylor``) puts a ReLU on the logits first: R_top is
zeroed where the logit is <= 0, so a target with a non-positive logit gets no relevance.
- ``sglrp`` (Iwana et al. 2019): the gradient of the target's softmax probability with respect to
  the logits, R_top = p_t (e_t - p): p_t (1 - p_t) at the target, -p_t p_j elsewhere. LRP is linear
  in R_top, so this one backward pass equals LRP(target part) - LRP(dual part) of the paper.
- ``clrp`` (Gu et al. 2018, CLRP1 as Iwana et al. implement it): the target map R (from e_t) and a
  dual map R_d for the virtual concept "all other classes" (from (1 - e_t) / (N - 1)), both times
  z_t with ``scale_by_logit``; the dual is rescaled to the target's total relevance:
  R_clrp = R - R_d * sum(R) / sum(R_d). Its heatmap is clipped at zero: max(0, sum_c R_clrp).

The outputs carry no gradient: the input is wrapped in ``stop_gradient`` (a surrounding ``jax.grad``,
as in BPDA attacks, sees constants); differentiate ``model.apply`` for gradients of the logits.

References:
  Bach et al. 2015 (LRP); Montavon et al. 2017 (deep Taylor decomposition, z^B and z+);
  Gu, Yang and Tresp 2018, "Understanding individual decisions of CNNs via contrastive
  backpropagation"; Iwana, Kuroki and Uchida 2019, "Explaining convolutional neural networks using
  softmax gradient layer-wise relevance propagation".
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from hbjax import xla
from hbjax.lrp.composites import Composite, get_composite
from hbjax.lrp.network import Step, build_plan, forward
from hbjax import validation
from hbjax.errors import InputError
from hbjax.models.model import Model, check_images
from hbjax.models.vgg import Normalization

METHODS = ("lrp", "clrp", "sglrp")

ExplainFn = Callable[[Any, jnp.ndarray, "jnp.ndarray | None"], tuple[jnp.ndarray, jnp.ndarray]]


def initial_relevance(
    logits: jnp.ndarray, targets: jnp.ndarray, *, method: str = "lrp", scale_by_logit: bool = False
) -> jnp.ndarray:
    """R_top for ``method`` (see the module docstring): (B, N), or (2, B, N) for ``clrp``
    (the target's and the dual's)."""
    n = logits.shape[-1]
    onehot = jax.nn.one_hot(targets, n, dtype=logits.dtype)
    scale = jnp.sum(logits * onehot, axis=-1, keepdims=True) if scale_by_logit else 1.0
    if method == "lrp":
        return onehot * scale
    if method == "sglrp":
        p = jax.nn.softmax(logits, axis=-1)
        p_t = jnp.sum(p * onehot, axis=-1, keepdims=True)
        return p_t * (onehot - p)
    if method == "clrp":
        if n < 2:
            raise ValueError("CLRP needs at least two classes")
        dual = (1.0 - onehot) / (n - 1)
        return jnp.stack([onehot * scale, dual * scale])
    raise ValueError(f"unknown heatmap method {method!r}; expected one of {METHODS}")


def _explain(plan, normalization: Normalization, method: str, scale_by_logit: bool, output_relu: bool,
             variables, x, targets):  # fmt: skip
    x = jax.lax.stop_gradient(x)
    xn = normalization(x)
    bounds = normalization.bounds(x.dtype)
    logits, vjp = jax.vjp(lambda a: forward(plan, variables, a, bounds), xn)
    if targets is None:
        targets = jnp.argmax(logits, axis=-1)
    r_top = initial_relevance(logits, targets, method=method, scale_by_logit=scale_by_logit)
    if output_relu:  # the VJP of a ReLU on the logits
        r_top = jnp.where(logits > 0, r_top, 0)
    if method == "clrp":
        (both,) = jax.vmap(vjp)(r_top)
        target, dual = both[0], both[1]
        total_t = jnp.sum(target, axis=(1, 2, 3), keepdims=True)
        total_d = jnp.sum(dual, axis=(1, 2, 3), keepdims=True)
        ratio = jnp.where(total_d == 0, 0, total_t / jnp.where(total_d == 0, 1, total_d))
        r = target - dual * ratio
    else:
        (r,) = vjp(r_top)
    return normalization.to_pixels(r), logits


@functools.lru_cache(maxsize=32)
def _compiled(
    plan: tuple[Step, ...],
    normalization: Normalization,
    method: str,
    scale_by_logit: bool,
    output: str,
    output_relu: bool = False,
) -> ExplainFn:
    def explain(variables, x, targets=None):
        r, logits = _explain(plan, normalization, method, scale_by_logit, output_relu, variables, x, targets)
        if output == "heatmap":
            h = jnp.sum(r, axis=-1)
            return (jnp.maximum(h, 0) if method == "clrp" else h), logits
        return r, logits

    return xla.jit(explain)


def _check_method(method: str, scale_by_logit: bool) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown heatmap method {method!r}; expected one of {METHODS}")
    if method == "sglrp" and scale_by_logit:
        raise ValueError("scale_by_logit applies to 'lrp' and 'clrp'; SGLRP starts from the softmax gradient")


def relevance_fn(
    model: Model,
    *,
    composite: str | Composite | dict = "dtd",
    method: str = "lrp",
    scale_by_logit: bool = False,
    output: str = "relevance",
) -> ExplainFn:
    """The pure, jitted function ``fn(variables, x, targets=None) -> (out, logits)`` behind
    :func:`relevance_and_logits` (``output="relevance"``: out is (B, H, W, 3)) and
    :func:`heatmap_and_logits` (``output="heatmap"``: out is (B, H, W)).

    Call it inside your own ``hbjax.jit`` (``jax.jit`` with hbjax's compiler options, see
    :mod:`hbjax.xla`) with the variables as an argument (not closed over), e.g.
    ``fn(model.params, x)``; ``targets=None`` explains the argmax of the logits. It does not check
    its arguments (the wrappers do). Functions are cached on the layers with their rules, the
    normalisation and the method, so repeated calls reuse one compilation.
    """
    _check_method(method, scale_by_logit)
    if output not in ("relevance", "heatmap"):
        raise ValueError(f"output must be 'relevance' or 'heatmap', got {output!r}")
    comp = get_composite(composite)
    plan = build_plan(tuple(model.layers), comp)
    return _compiled(plan, model.normalization, method, bool(scale_by_logit), output, comp.output_relu)


def _check_targets(targets: Any, batch: int, num_classes: int) -> jnp.ndarray | None:
    if targets is None:
        return None
    if isinstance(targets, jax.core.Tracer):
        t = targets
    else:
        t = np.asarray(targets)
        if t.dtype == bool or not np.issubdtype(t.dtype, np.integer):
            raise InputError(f"targets must be integer class indices; got dtype {t.dtype}")
        if t.size and (t.min() < 0 or t.max() >= num_classes):
            raise InputError(
                f"targets must lie in [0, {num_classes}); got values in [{t.min()}, {t.max()}]"
            )
    if t.ndim == 0:
        t = jnp.broadcast_to(t, (batch,))
    if t.shape != (batch,):
        raise InputError(f"targets must be one class index per image, shape ({batch},); got {t.shape}")
    return jnp.asarray(t, jnp.int32)


def _run(model, x, targets, composite, method, scale_by_logit, output):
    validation.check_images(x, where="hbjax.lrp")
    if isinstance(x, np.ndarray):
        x = jnp.asarray(x)
    fn = relevance_fn(model, composite=composite, method=method, scale_by_logit=scale_by_logit, output=output)
    t = _check_targets(targets, x.shape[0], model.num_classes)
    return fn(model.params, x, t)


def relevance_and_logits(
    model: Model,
    x: jnp.ndarray,
    targets: Any = None,
    *,
    composite: str | Composite | dict = "dtd",
    method: str = "lrp",
    scale_by_logit: bool = False,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Input relevance and logits from one forward and one backward pass.

    Args:
      model: an :class:`hbjax.models.Model` (batch-norm models are explained through their folded
        twin).
      x: (B, H, W, 3) images in [0, 1]; the computation follows x's dtype (float64 under x64).
      targets: class indices (B,) or one int for all; None explains each image's argmax.
      composite: a registered name (``"dtd"``, ``"epsilon_plus_flat"``, ``"epsilon_gamma_box"``,
        ...), a :class:`Composite` or a config mapping (see :func:`get_composite`).
      method: ``"lrp"``, ``"clrp"`` or ``"sglrp"`` (the initial relevance; module docstring).
      scale_by_logit: start from the one-hot vector times the target's logit.

    Returns:
      (relevance (B, H, W, 3) per image pixel in RGB order, logits (B, N)).
    """
    return _run(model, x, targets, composite, method, scale_by_logit, "relevance")


def relevance(
    model: Model,
    x: jnp.ndarray,
    targets: Any = None,
    *,
    composite: str | Composite | dict = "dtd",
    method: str = "lrp",
    scale_by_logit: bool = False,
) -> jnp.ndarray:
    """LRP relevance (B, H, W, 3) of ``targets`` for images x (B, H, W, 3) in [0, 1].

    See :func:`relevance_and_logits` for the arguments; the sum of a conservative composite's
    relevance over an image approximates R_top's total (1, or the logit with ``scale_by_logit``).
    """
    return relevance_and_logits(
        model, x, targets, composite=composite, method=method, scale_by_logit=scale_by_logit
    )[0]


def heatmap_and_logits(
    model: Model,
    x: jnp.ndarray,
    targets: Any = None,
    *,
    composite: str | Composite | dict = "dtd",
    method: str = "lrp",
    scale_by_logit: bool = False,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Heatmap h = sum over channels of the relevance (clipped at 0 for ``clrp``), (B, H, W), and
    the logits (B, N), from one forward pass: what Heat and Blur (Algorithm 1, steps 1-2) needs.
    ``targets=None`` explains the predicted class. Arguments as :func:`relevance_and_logits`."""
    return _run(model, x, targets, composite, method, scale_by_logit, "heatmap")


def heatmap(
    model: Model,
    x: jnp.ndarray,
    targets: Any = None,
    *,
    composite: str | Composite | dict = "dtd",
    method: str = "lrp",
    scale_by_logit: bool = False,
) -> jnp.ndarray:
    """Heatmap (B, H, W) of ``targets``: the channel sum of :func:`relevance` (``lrp``,
    ``sglrp``), or max(0, channel sum) of the contrastive relevance (``clrp``)."""
    return heatmap_and_logits(
        model, x, targets, composite=composite, method=method, scale_by_logit=scale_by_logit
    )[0]


def layer_relevances(
    model: Model,
    x: jnp.ndarray,
    targets: Any = None,
    *,
    composite: str | Composite | dict = "dtd",
    scale_by_logit: bool = False,
) -> list[tuple[str, jnp.ndarray]]:
    """LRP relevance at every layer boundary, for inspection and conservation checks.

    Returns [("input", R at the normalised input), (name, R at the output of layer name), ...] down
    to the logits (where it is R_top); batch-norm and dropout layers have no entry of their own.
    """
    check_images(x)
    x = jnp.asarray(x)
    comp = get_composite(composite)
    plan = build_plan(tuple(model.layers), comp)
    t = _check_targets(targets, x.shape[0], model.num_classes)

    @xla.jit
    def run(variables, x, t):
        xn = model.normalization(x)
        bounds = model.normalization.bounds(x.dtype)

        def outputs(a):
            acts: list = []
            forward(plan, variables, a, bounds, record=acts)
            return acts

        probes = [jnp.zeros(s.shape, s.dtype) for s in jax.eval_shape(outputs, xn)]
        logits, vjp = jax.vjp(lambda a, p: forward(plan, variables, a, bounds, probes=p), xn, probes)
        t = jnp.argmax(logits, axis=-1) if t is None else t
        r_top = initial_relevance(logits, t, method="lrp", scale_by_logit=scale_by_logit)
        if comp.output_relu:
            r_top = jnp.where(logits > 0, r_top, 0)
        r_in, r_steps = vjp(r_top)
        return r_in, r_steps

    r_in, r_steps = run(model.params, x, t)
    return [("input", r_in)] + [(step.layer.name, r) for step, r in zip(plan, r_steps)]
