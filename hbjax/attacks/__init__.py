"""Adversarial attacks in JAX, all called the same way (foolbox 3's convention)::

    result = hbjax.attacks.pgd(logits_fn, x, labels, key, eps=8/255, norm="linf", steps=20)
    result = hbjax.attacks.get("carlini_wagner_l2")(logits_fn, x, labels, key, targeted=True,
                                                     targets=targets, steps=1000)
    result.x_adv, result.success, result.l2, result.linf, result.model_calls

``logits_fn(x) -> logits`` is any pure function of a batch in [0, 1]; hyper-parameters are
keyword-only. The adaptive attacks on Heat and Blur (``adaptive_heatmap``, ``bpda_eot``) take the
:class:`hbjax.models.Model` in place of ``logits_fn`` (they need its LRP heatmaps) and the defense's
settings as ``defense=``; the registry marks them ``needs_model`` (see :func:`metadata`).

APGD, APGD-T, Square and AutoAttack (``apgd``, ``apgd_t``, ``square``, ``autoattack``,
``autoattack_rand``) also take a randomised classifier (:class:`Randomized`, e.g.
:func:`defended_logits` for Heat and Blur with BPDA) and average over its draws (EOT) or query it
afresh each time; the registry marks them ``accepts_randomized``.
"""

from __future__ import annotations

from typing import Callable

from hbjax.attacks.adaptive import adaptive_heatmap, bpda_eot
from hbjax.attacks.apgd import apgd, apgd_t, dlr_loss, dlr_targeted_loss
from hbjax.attacks.autoattack import EnsembleResult, autoattack, autoattack_rand, sanity_checks
from hbjax.attacks.base import (
    LOOPS,
    LOSSES,
    NORMS,
    AttackResult,
    as_pytree_fn,
    attack_loss,
    clip_to_ball,
    distances,
    is_adversarial,
    iterate,
    margin,
    model_logits,
    project,
    random_in_ball,
)
from hbjax.attacks.boundary import blended_noise_start, boundary
from hbjax.attacks.cw import carlini_wagner_l2
from hbjax.attacks.lbfgs import lbfgs
from hbjax.attacks.pgd import fgsm, pgd
from hbjax.attacks.randomized import Randomized, defended_logits, randomized
from hbjax.attacks.square import square
from hbjax.registry import Registry

_BUILT_IN: dict[str, Callable] = {
    "fgsm": fgsm,
    "pgd": pgd,
    "carlini_wagner_l2": carlini_wagner_l2,
    "lbfgs": lbfgs,
    "boundary": boundary,
    "adaptive_heatmap": adaptive_heatmap,
    "bpda_eot": bpda_eot,
    "apgd": apgd,
    "apgd_t": apgd_t,
    "square": square,
    "autoattack": autoattack,
    "autoattack_rand": autoattack_rand,
}
ALIASES = {
    "cw": "carlini_wagner_l2", "cw_l2": "carlini_wagner_l2", "bpda": "bpda_eot", "apgd_ce": "apgd",
}  # fmt: skip
_RANDOMIZED = ("apgd", "apgd_t", "square", "autoattack", "autoattack_rand")


# The registry: name -> attack, with metadata ``needs_model`` (the attack takes the Model, not a
# logits function: the adaptive attacks act on the defended model) and ``accepts_randomized`` (it
# also takes a Randomized classifier, e.g. the defended one).
ATTACKS: Registry[Callable] = Registry("attack", aliases=ALIASES, needs_model=False, accepts_randomized=False)
for _name, _attack in _BUILT_IN.items():
    ATTACKS.register(
        _name, _attack, needs_model=_name in ("adaptive_heatmap", "bpda_eot"),
        accepts_randomized=_name in _RANDOMIZED,
    )  # fmt: skip


def names() -> list[str]:
    """The registered attack names (aliases: ``cw``, ``cw_l2``, ``bpda``)."""
    return ATTACKS.names()


def get(name: str) -> Callable:
    """The attack registered as ``name`` (or one of its aliases); KeyError naming the choices."""
    return ATTACKS.get(name)


def metadata(name: str) -> dict:
    """The registry's metadata of attack ``name``: ``needs_model`` (True: the attack takes the
    :class:`hbjax.models.Model` in place of ``logits_fn``) and ``accepts_randomized`` (True: it also
    takes a :class:`Randomized` classifier)."""
    return ATTACKS.metadata(name)


def register(name: str, attack: Callable | None = None, *, needs_model: bool = False,
             accepts_randomized: bool = False):  # fmt: skip
    """Registers an attack under ``name`` (usable as a decorator); it must follow the common call
    ``attack(logits_fn, x, labels, key, *, targeted=False, targets=None, ...) -> AttackResult``
    (with ``needs_model=True``: the Model in place of ``logits_fn``). A taken name is a ValueError."""
    return ATTACKS.register(name, attack, needs_model=needs_model, accepts_randomized=accepts_randomized)


# The public surface: the attacks, their result, the registry and model_logits. The building blocks
# of new attacks (attack_loss, margin, is_adversarial, project, clip_to_ball, random_in_ball,
# iterate, as_pytree_fn, blended_noise_start) stay importable from hbjax.attacks.base / .boundary.
__all__ = [
    "ALIASES", "ATTACKS", "LOOPS", "LOSSES", "NORMS", "AttackResult", "EnsembleResult", "Randomized",
    "adaptive_heatmap", "apgd", "apgd_t", "autoattack", "autoattack_rand", "boundary", "bpda_eot",
    "carlini_wagner_l2", "defended_logits", "distances", "fgsm", "get", "lbfgs", "metadata",
    "model_logits", "names", "pgd", "randomized", "register", "square",
]  # fmt: skip
