"""Adaptive attacks on Heat and Blur: the paper's Algorithm 2 (perturb only the pixels the defense
keeps) and a white-box PGD through the whole defense (BPDA for the mask, EOT over the blur's sigma).

Both take the :class:`hbjax.models.Model` in place of a logits function, since they need its LRP
heatmaps, and the defense's keyword arguments as ``defense=`` (those of
:func:`hbjax.defense.heat_and_blur`: ``sigma``, ``composite``, ``method``, ``binarize``, ``mode``,
``truncate``). Success is judged on the defended classifier f(heat_and_blur(x)), with a fresh draw
of sigma for the final verdict.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from hbjax import xla
from hbjax.attacks import base
from hbjax.attacks.base import AttackResult


def _defense_module():
    from hbjax import defense  # imported on use: the attacks do not need it otherwise

    return defense


def _defense_of(model: Any, options: Mapping[str, Any] | None) -> tuple[Callable, Any]:
    """The defense's pure ``(params, x, key) -> Cleaned`` (compiled once per configuration) and its
    :class:`hbjax.defense.HeatAndBlur` config, from keyword arguments of
    :func:`hbjax.defense.heat_and_blur`."""
    defense = _defense_module()
    config = defense.HeatAndBlur.of(options)
    return defense.heat_and_blur_fn(model, **config.options()), config


@functools.partial(xla.jit, static_argnames=("clean", "apply", "targeted"))
def _defended_verdict(clean, apply, params, x, x_adv, classes, key, *, targeted):
    """success on the defended classifier (one draw of sigma), L2 and Linf distances."""
    logits = apply(params, clean(params, x_adv, key).image)
    pred = jnp.argmax(logits, -1)
    success = (pred == classes) if targeted else (pred != classes)
    l2, linf = base.distances(x_adv, x)
    return success, l2, linf


@functools.partial(xla.jit, static_argnames=("apply", "targeted"))
def _undefended_verdict(apply, params, x_adv, classes, *, targeted):
    """success on the undefended network (Algorithm 2's line 7 read literally)."""
    return base.is_adversarial(apply(params, x_adv), classes, targeted)


STOP_ON = ("defended", "undefended", "both")


def _result(clean, apply, params, x, x_adv, classes, key, targeted, calls) -> AttackResult:
    x_adv = jnp.clip(x_adv, 0.0, 1.0).astype(x.dtype)
    success, l2, linf = _defended_verdict(
        clean, apply, params, x, x_adv, classes, key, targeted=bool(targeted)
    )
    return AttackResult(x_adv, success, l2, linf, jnp.asarray(calls + 1, jnp.int32))


@functools.partial(xla.jit, static_argnames=("clean",))
def _mask(clean, params, x, key):
    return clean(params, x, key).mask


@xla.jit
def _merge(x, x_cur, x_adv, mask, done, eps, linf_ball):
    """Copies x_adv into the masked pixels of x_cur, then clips to the eps-ball around x (when
    eps is finite; Linf or L2) and to [0, 1]; examples already done keep x_cur."""
    merged = jnp.where(mask[..., None], x_adv, x_cur)
    ball_linf = base.clip_to_ball(merged, x, eps, "linf")
    ball_l2 = base.clip_to_ball(merged, x, eps, "l2")
    merged = jnp.where(jnp.isfinite(eps), jnp.where(linf_ball, ball_linf, ball_l2), merged)
    return base.select(done, x_cur, jnp.clip(merged, 0.0, 1.0))


def adaptive_heatmap(
    model: Any,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    targeted: bool = False,
    targets: jax.Array | None = None,
    defense: Mapping[str, Any] | None = None,
    attack: str = "pgd",
    attack_params: Mapping[str, Any] | None = None,
    iterations: int = 10,
    eps: float | None = None,
    norm: str | None = None,
    params: Any = None,
    stop_on: str = "defended",
) -> AttackResult:
    """The adaptive attack of the paper (Algorithm 2): perturb only the pixels Heat and Blur keeps.

    Starting from x_0 = x, each iteration t runs the base attack on the undefended model at the
    current image x_t, computes the binarised LRP heatmap of x_t (the defense's mask: the pixels it
    restores unblurred), copies the adversarial values into those pixels only, clips, and checks
    the defended classifier; an example stops once the defense is fooled, the attack when all have
    stopped or after ``iterations``. Clipping is to [0, 1] and, for a bounded base attack (one
    with ``eps``), to its eps-ball around the original x, so the result obeys the base attack's
    threat model.

    Args:
      model: the classifier (:class:`hbjax.models.Model`).
      x, labels, key, targeted, targets: the common attack arguments.
      defense: keyword arguments of :func:`hbjax.defense.heat_and_blur` (default: its defaults).
      attack: the base attack's registered name (any non-adaptive attack).
      attack_params: the base attack's hyper-parameters.
      iterations: most rounds of attack and merge.
      eps, norm: the ball around x to clip to; default the base attack's ``eps`` and ``norm``
        (given in attack_params, or else its defaults); no ball for a base attack without eps.
      params: model parameters (default ``model.params``).
      stop_on: when an example stops (line 7, "if i_adapt is adversarial", is ambiguous):
        ``"defended"`` once the defended classifier is fooled (one sigma draw), ``"undefended"``
        once the undefended network is (the literal reading), ``"both"`` once both are.

    Returns:
      :class:`AttackResult`; success against the defended classifier with a fresh sigma draw;
      model_calls counts base-attack calls, heatmap passes and defended evaluations.

    References:
      Brama and Grinshpoun, "Heat and Blur: An Interpretability Based Defense Against Adversarial
      Examples", Algorithm 2.
    """
    from hbjax import attacks as registry

    name = "adaptive_heatmap"
    x, labels, classes = base.check_inputs(x, labels, targeted=targeted, targets=targets, name=name, logits_fn=model)
    iterations = base.check_count(iterations, "iterations", name)
    base_attack = registry.get(attack)
    if registry.metadata(attack)["needs_model"]:
        raise ValueError(f"{name}: the base attack must act on a logits function; got {attack!r}")
    attack_params = dict(attack_params or {})
    defaults = {
        k: p.default for k, p in inspect.signature(base_attack).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }  # fmt: skip
    if eps is None:
        eps = attack_params.get("eps", defaults.get("eps"))
    if norm is None:
        norm = attack_params.get("norm", defaults.get("norm", "linf"))
    base.check_choice(norm, base.NORMS, "norm", name)
    base.check_choice(stop_on, STOP_ON, "stop_on", name)
    eps = float("inf") if eps is None else base.check_nonnegative(eps, "eps", name)
    clean, _ = _defense_of(model, defense)
    params = model.params if params is None else params
    apply = base._model_apply(model.module)
    logits_fn = jax.tree_util.Partial(apply, params)

    n = x.shape[0]
    x_cur = x
    done = jnp.zeros((n,), bool)
    calls = 0
    eps_arr = jnp.asarray(eps, x.dtype)
    for t in range(iterations):
        k_attack, k_mask, k_check = jax.random.split(jax.random.fold_in(key, t), 3)
        r = base_attack(
            logits_fn, x_cur, labels, k_attack, targeted=targeted, targets=targets, **attack_params
        )
        mask = _mask(clean, params, x_cur, k_mask)
        x_cur = _merge(x, x_cur, r.x_adv, mask, done, eps_arr, norm == "linf")
        fooled, _, _ = _defended_verdict(
            clean, apply, params, x, x_cur, classes, k_check, targeted=bool(targeted)
        )
        if stop_on != "defended":
            fooled_undefended = _undefended_verdict(apply, params, x_cur, classes, targeted=bool(targeted))
            fooled = fooled_undefended if stop_on == "undefended" else fooled & fooled_undefended
            calls += 1
        calls += int(r.model_calls) + 2
        done = done | fooled
        if bool(jnp.all(done)):
            break
    k_final = jax.random.fold_in(key, iterations)
    return _result(clean, apply, params, x, x_cur, classes, k_final, targeted, calls)


@dataclasses.dataclass(frozen=True)
class BPDAStep(base.Settings):
    """One PGD step on the expected loss of the defended classifier.

    The defense's mask (LRP heatmap of the predicted class, binarised) is computed once per step
    and held constant in the backward pass (BPDA: the mask and the argmax behind it have no useful
    gradient); the blur and the restore step are differentiated exactly (``backward="mask"``), or
    the whole cleaning is taken as the identity in the backward pass (``backward="identity"``,
    Athalye et al.'s original BPDA). The gradient is the sum over ``samples`` draws of sigma (EOT),
    computed as one batch of samples * B images.

    Operands: (params, x, classes, eps, step_size, key).
    """

    clean: Callable
    apply: Callable
    config: Any  # hbjax.defense.HeatAndBlur: sigma, border mode, truncation
    norm: str
    loss: str
    targeted: bool
    samples: int
    backward: str

    def __call__(self, operands, i, x_adv):
        params, x, classes, eps, step_size, key = operands
        defense = _defense_module()
        k_mask, k_sigma = jax.random.split(jax.random.fold_in(key, i))
        mask = jax.lax.stop_gradient(self.clean(params, x_adv, k_mask).mask)
        n, s = x.shape[0], self.samples
        if isinstance(self.config.sigma, tuple):  # EOT: s draws of sigma for each image
            sigmas = self.config.draw_sigma(k_sigma, s * n, x.dtype)
        else:
            sigmas = float(self.config.sigma)
        masks = jnp.tile(mask, (s, 1, 1))
        labels = jnp.tile(classes, (s,))

        def total(z):
            zs = jnp.tile(z, (s, 1, 1, 1))
            cleaned, _ = defense.blur_and_restore(zs, masks, sigmas, config=self.config)
            if self.backward == "identity":
                cleaned = zs + jax.lax.stop_gradient(cleaned - zs)
            logits = self.apply(params, cleaned)
            return jnp.sum(base.attack_loss(logits, labels, self.loss, self.targeted))

        g = jax.grad(total)(x_adv)
        x_adv = x_adv + step_size * base.normalize(g, self.norm).astype(x_adv.dtype)
        return base.clip_to_ball(x_adv, x, eps, self.norm)


BACKWARDS = ("mask", "identity")


def bpda_eot(
    model: Any,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    targeted: bool = False,
    targets: jax.Array | None = None,
    defense: Mapping[str, Any] | None = None,
    eps: float = 8 / 255,
    norm: str = "linf",
    steps: int = 20,
    step_size: float | None = None,
    random_start: bool = True,
    loss: str = "ce",
    eot_samples: int = 8,
    backward: str = "mask",
    params: Any = None,
    loop: str = "auto",
    unroll: int = 1,
) -> AttackResult:
    """PGD through Heat and Blur: BPDA for the mask, EOT over the blur's sigma (white-box).

    The defended classifier is f(restore(x, blur(x, sigma), mask(x))) with mask(x) the binarised
    LRP heatmap of f's prediction on x. Its mask is piecewise constant in x (it changes only when
    the heatmap's ranking or the argmax does), so its gradient is zero almost everywhere and
    useless: BPDA (Athalye, Carlini and Wagner 2018) holds it constant in the backward pass, while
    the blur and the restore step, which are linear in x, are differentiated exactly (or, with
    ``backward="identity"``, the whole cleaning is replaced by the identity in the backward pass).
    sigma is random per image; EOT (Athalye et al. 2018) follows the gradient of the expected loss,
    estimated by ``eot_samples`` draws a step. Steps, projection, random start and losses are those
    of :func:`hbjax.attacks.pgd`, with the same key use, so on a defense that keeps every pixel the
    attack is plain PGD. With a fixed sigma the defense is deterministic and one sample is used.

    Args:
      model: the classifier (:class:`hbjax.models.Model`).
      x, labels, key, targeted, targets: the common attack arguments.
      defense: keyword arguments of :func:`hbjax.defense.heat_and_blur`.
      eps, norm, steps, step_size, random_start, loss: as :func:`hbjax.attacks.pgd`.
      eot_samples: draws of sigma a step.
      backward: ``"mask"`` (exact gradient with the mask constant) or ``"identity"``.
      params: model parameters (default ``model.params``).
      loop, unroll: loop runner; one step a chunk by default (a step holds an LRP pass and
        eot_samples gradients, and compiles slowly).

    Returns:
      :class:`AttackResult` of the last iterate; success against the defended classifier with a
      fresh sigma draw; model_calls counts one heatmap pass and eot_samples gradients a step.

    References:
      Athalye, Carlini, Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018;
      Athalye, Engstrom, Ilyas, Kwok, "Synthesizing Robust Adversarial Examples", ICML 2018.
    """
    from hbjax.attacks.pgd import _start

    name = "bpda_eot"
    x, labels, classes = base.check_inputs(x, labels, targeted=targeted, targets=targets, name=name, logits_fn=model)
    if x.ndim != 4:
        raise ValueError(f"{name}: x must be a batch of images (B, H, W, 3); got shape {x.shape}")
    base.check_choice(norm, base.NORMS, "norm", name)
    base.check_choice(loss, base.LOSSES, "loss", name)
    base.check_choice(backward, BACKWARDS, "backward", name)
    eps = base.check_nonnegative(eps, "eps", name)
    steps = base.check_count(steps, "steps", name, minimum=0)
    samples = base.check_count(eot_samples, "eot_samples", name)
    unroll = base.check_count(unroll, "unroll", name)
    step_size = 2.5 * eps / max(steps, 1) if step_size is None else step_size
    step_size = base.check_nonnegative(step_size, "step_size", name)
    loop = base.resolve_loop(loop, name)
    clean, config = _defense_of(model, defense)
    if not isinstance(config.sigma, tuple):  # a fixed sigma: the defense is deterministic
        samples = 1
    params = model.params if params is None else params
    apply = base._model_apply(model.module)

    step = BPDAStep(clean, apply, config, norm, loss, bool(targeted), samples, backward)
    dtype = x.dtype
    eps_arr = jnp.asarray(eps, dtype)
    x0 = _start(x, jax.random.fold_in(key, 0), eps_arr, norm) if random_start else x
    k_walk = jax.random.fold_in(key, 2**31 - 1)
    operands = (params, x, classes, eps_arr, jnp.asarray(step_size, dtype), k_walk)
    x_adv, _ = base.iterate(step, operands, x0, steps, loop=loop, unroll=unroll)
    calls = steps * (1 + samples)
    k_final = jax.random.fold_in(key, 2**31 - 2)
    return _result(clean, apply, params, x, x_adv, classes, k_final, targeted, calls)
