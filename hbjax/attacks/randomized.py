"""Randomised classifiers for the attacks that average over them (EOT) or query them as a black box.

A randomised classifier gives different logits for the same input on different draws of its
randomness (Heat and Blur draws the blur's sigma per image). The attacks of this package that
support one (:func:`hbjax.attacks.apgd`, :func:`hbjax.attacks.apgd_t`, :func:`hbjax.attacks.square`
and the AutoAttack ensembles) take, in place of ``logits_fn``, a :class:`Randomized`: a pytree
holding ``sample(x, keys) -> (S, B, num_classes)``, the logits of S independent draws (one per key).
Every other ``logits_fn`` is deterministic and is called as ``logits_fn(x)``.

    f = hbjax.attacks.randomized(lambda x, key: my_logits(x, key))        # any (x, key) -> logits
    f = hbjax.attacks.defended_logits(model, defense={"sigma": (0.8, 1.2)}) # Heat and Blur, BPDA

The attacks draw a fresh key for every query and every EOT sample, as a deployed defense would.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from hbjax.attacks import base


class Randomized(NamedTuple):
    """A randomised classifier: ``sample(x, keys)`` returns the (S, B, num_classes) logits of S
    independent draws for a (S,) array of keys. A pytree (jit takes it as an argument)."""

    sample: jax.tree_util.Partial

    def __call__(self, x: jax.Array, key: jax.Array) -> jax.Array:
        """The logits of one draw."""
        return self.sample(x, key[None])[0]


def _per_key(fn: Callable, x: jax.Array, keys: jax.Array) -> jax.Array:
    return jax.vmap(lambda k: fn(x, k))(keys)


def _deterministic(fn: Callable, x: jax.Array, keys: jax.Array) -> jax.Array:
    return fn(x)[None]


def randomized(logits_fn: Callable) -> Randomized:
    """``logits_fn(x, key) -> logits`` (one draw) as a :class:`Randomized` (draws vmapped over keys).

    Array arguments bound by a ``functools.partial``/``jax.tree_util.Partial`` are traced, as in
    :func:`hbjax.attacks.base.as_pytree_fn`."""
    if isinstance(logits_fn, Randomized):
        return logits_fn
    return Randomized(jax.tree_util.Partial(_per_key, base.as_pytree_fn(logits_fn)))


def as_sampler(logits_fn: Callable) -> tuple[Randomized, bool]:
    """(a :class:`Randomized` view of logits_fn, whether it is random). A deterministic
    ``logits_fn(x)`` gives the same logits for every key: S = 1 sample is all an average needs."""
    if isinstance(logits_fn, Randomized):
        return logits_fn, True
    return Randomized(jax.tree_util.Partial(_deterministic, base.as_pytree_fn(logits_fn))), False


BACKWARDS = ("mask", "identity")


@dataclasses.dataclass(frozen=True)
class _DefendedSampler:
    """The defended classifier f(restore(x, blur(x, sigma_s), mask(x))) for S draws of sigma.

    The mask (binarised LRP heatmap of f's prediction on x) does not depend on the draw: it is
    computed once and held constant in the backward pass (BPDA); the blur and the restore step are
    differentiated exactly (``backward="mask"``) or the cleaning is the identity in the backward
    pass (``backward="identity"``). Each draw's sigma is the defense's own draw for that key, so one
    sample equals :func:`hbjax.defense.defended` for the same key."""

    clean: Callable
    apply: Callable
    config: Any  # hbjax.defense.HeatAndBlur
    backward: str

    def __call__(self, params: Any, x: jax.Array, keys: jax.Array) -> jax.Array:
        from hbjax import defense

        s, n = keys.shape[0], x.shape[0]
        mask = jax.lax.stop_gradient(self.clean(params, x, keys[0]).mask)
        if isinstance(self.config.sigma, tuple):
            sigmas = jax.vmap(lambda k: self.config.draw_sigma(k, n, x.dtype))(keys).reshape(-1)
        else:
            sigmas = float(self.config.sigma)
        xs = jnp.tile(x, (s,) + (1,) * (x.ndim - 1))
        cleaned, _ = defense.blur_and_restore(xs, jnp.tile(mask, (s, 1, 1)), sigmas, config=self.config)
        if self.backward == "identity":
            cleaned = xs + jax.lax.stop_gradient(cleaned - xs)
        logits = self.apply(params, cleaned)
        return logits.reshape((s, n) + logits.shape[1:])


def defended_logits(
    model: Any,
    *,
    defense: Mapping[str, Any] | None = None,
    params: Any = None,
    backward: str = "mask",
) -> Randomized:
    """Heat and Blur's defended classifier as a :class:`Randomized`, for gradient attacks through
    it (BPDA for the mask and the argmax behind it, as :func:`hbjax.attacks.bpda_eot`) and for
    black-box attacks on it (the forward pass is exactly the defense's, one sigma draw a key).

    Args:
      model: the classifier (:class:`hbjax.models.Model`).
      defense: keyword arguments of :func:`hbjax.defense.heat_and_blur` (``sigma`` a float or a
        range (low, high), ``composite``, ``method``, ``binarize``, ``mode``, ``truncate``).
      params: model parameters (default ``model.params``); traced, not embedded.
      backward: ``"mask"`` or ``"identity"``, see :func:`hbjax.attacks.bpda_eot`.

    S draws cost one LRP pass (for the mask) and S forward passes.
    """
    from hbjax.attacks.adaptive import _defense_of

    base.check_choice(backward, BACKWARDS, "backward", "defended_logits")
    clean, config = _defense_of(model, defense)
    sampler = _DefendedSampler(clean, base._model_apply(model.module), config, backward)
    params = model.params if params is None else params
    return Randomized(jax.tree_util.Partial(sampler, params))


def is_random_defense(defense: Mapping[str, Any] | None) -> bool:
    """Whether Heat and Blur with these settings draws sigma at random (a range low < high)."""
    sigma = dict(defense or {}).get("sigma", 1.0)
    return isinstance(sigma, (tuple, list)) and float(sigma[0]) != float(sigma[1])
