"""Adversarial attacks in JAX, all called the same way (foolbox 3's convention)::

    result = hbjax.attacks.pgd(logits_fn, x, labels, key, eps=8/255, norm="linf", steps=20)
    result = hbjax.attacks.get("carlini_wagner_l2")(logits_fn, x, labels, key, targeted=True,
                                                     targets=targets, steps=1000)
    result.x_adv, result.success, result.l2, result.linf, result.model_calls

``logits_fn(x) -> logits`` is any pure function of a batch in [0, 1]; hyper-parameters are
keyword-only. The adaptive attacks on Heat and Blur (``adaptive_heatmap``, ``bpda_eot``) take the
:class:`hbjax.models.Model` in place of ``logits_fn`` (they need its LRP heatmaps) and the defense's
settings as ``defense=``; they carry ``needs_model = True``.

APGD, APGD-T, Square and AutoAttack (``apgd``, ``apgd_t``, ``square``, ``autoattack``,
``autoattack_rand``) also take a randomised classifier (:class:`Randomized`, e.g.
:func:`defended_logits` for Heat and Blur with BPDA) and average over its draws (EOT) or query it
afresh each time; they carry ``accepts_randomized = True``.
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

ATTACKS: dict[str, Callable] = {
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


for _attack in (apgd, apgd_t, square, autoattack, autoattack_rand):
    _attack.accepts_randomized = True  # type: ignore[attr-defined]


def names() -> list[str]:
    """The registered attack names (aliases: ``cw``, ``cw_l2``, ``bpda``)."""
    return sorted(ATTACKS)


def get(name: str) -> Callable:
    """The attack registered as ``name`` (or one of its aliases); KeyError naming the choices."""
    key = ALIASES.get(name, name)
    if key not in ATTACKS:
        raise KeyError(f"unknown attack {name!r}; expected one of {names()} (aliases {sorted(ALIASES)})")
    return ATTACKS[key]


def register(name: str, attack: Callable | None = None):
    """Registers an attack under ``name`` (usable as a decorator); it must follow the common call
    ``attack(logits_fn, x, labels, key, *, targeted=False, targets=None, ...) -> AttackResult``."""

    def add(fn: Callable) -> Callable:
        if name in ATTACKS or name in ALIASES:
            raise ValueError(f"an attack named {name!r} is already registered")
        ATTACKS[name] = fn
        return fn

    return add(attack) if attack is not None else add


__all__ = [
    "ALIASES", "ATTACKS", "LOOPS", "LOSSES", "NORMS", "AttackResult", "EnsembleResult",
    "Randomized", "adaptive_heatmap", "apgd", "apgd_t", "as_pytree_fn", "attack_loss",
    "autoattack", "autoattack_rand", "blended_noise_start", "boundary", "bpda_eot",
    "carlini_wagner_l2", "clip_to_ball", "defended_logits", "distances", "dlr_loss",
    "dlr_targeted_loss", "fgsm", "get", "is_adversarial", "iterate", "lbfgs", "margin",
    "model_logits", "names", "pgd", "project", "random_in_ball", "randomized", "register",
    "sanity_checks", "square",
]  # fmt: skip
