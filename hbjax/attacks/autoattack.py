"""AutoAttack (Croce and Hein 2020): a fixed ensemble of parameter-free attacks run in sequence, each
on the examples the previous ones left robust, plus the authors' sanity checks.

``version="standard"``: APGD-CE, APGD-T (targeted DLR over the top 9 classes), Square (5,000
queries), 100 steps each; FAB-T is not included. ``version="rand"``, for randomised defenses:
APGD-CE and APGD-DLR with EOT over 20 draws. The checks (the authors' ``checks.py``) end up as
warnings in the result: a randomised model under ``standard``, a deterministic one under
``rand``, inputs with zero gradient, logits that look like probabilities, fewer than 4 classes for
APGD-T, and Square fooling examples the white-box attacks did not (a sign of gradient masking).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hbjax import xla
from hbjax.attacks import base
from hbjax.attacks.apgd import apgd, apgd_t
from hbjax.attacks.randomized import Randomized, as_sampler
from hbjax.attacks.square import square

VERSIONS = ("standard", "rand")
WHITE_BOX = ("apgd_ce", "apgd_t", "apgd_dlr")


class EnsembleResult(NamedTuple):
    """:class:`hbjax.attacks.AttackResult`'s fields (the worst case over the ensemble: an example
    counts as fooled if any attack fooled it, and x_adv is the first successful attack's), plus:

    Attributes:
      first_attack: (B,) int32, the index in ``attack_names`` of the first attack that fooled the
        example, -1 where none did.
      attack_success: (A, B) bool, attack a fooled the example (False where it did not run, because
        an earlier attack had already succeeded).
      robust_after: (A,) float, the robust accuracy after each attack (cumulative, as AutoAttack logs).
      attack_names: the attacks in the order run.
      warnings: the sanity checks' findings, as sentences (empty when all passed).
    """

    x_adv: jax.Array
    success: jax.Array
    l2: jax.Array
    linf: jax.Array
    model_calls: jax.Array
    first_attack: jax.Array
    attack_success: jax.Array
    robust_after: tuple
    attack_names: tuple
    warnings: tuple


@xla.jit
def _two_draws(sampler, x, key):
    k_a, k_b = jax.random.split(key)
    return sampler(x, k_a), sampler(x, k_b)


@xla.jit
def _ce_grad_norm(sampler, x, labels, key):
    def loss(z):
        logp = jax.nn.log_softmax(sampler(z, key), -1)
        return -jnp.sum(base.class_logit(logp, labels))

    return base.l2_norm(jax.grad(loss)(x))


def sanity_checks(logits_fn: Callable | Randomized, x: jax.Array, labels: jax.Array, key: jax.Array,
                  *, version: str) -> list[str]:  # fmt: skip
    """The authors' checks before an evaluation (checks.py): randomness, output range, zero
    gradients, number of classes. Returns the warnings as sentences."""
    sampler, random = as_sampler(logits_fn)
    warnings: list[str] = []
    k1, k2 = jax.random.split(key)
    draws = [np.asarray(d) for d in _two_draws(sampler, x, k1)]
    varies = bool(np.abs(draws[0] - draws[1]).max() > 0)
    if varies and version == "standard":
        warnings.append("the model is randomised (two draws of the same input differ): use version='rand' (EOT)")
    if not varies and version == "rand":
        warnings.append("the model gave the same logits on two draws; version='rand' is meant for randomised models")
    logits = draws[0]
    sums = logits.sum(-1)
    if logits.min() >= 0 and logits.max() <= 1 and np.allclose(sums, 1.0, atol=1e-5):
        warnings.append("the outputs look like probabilities (in [0, 1], summing to 1): the attacks expect logits")
    if logits.shape[-1] < 4:
        warnings.append(f"the model has {logits.shape[-1]} classes; the targeted DLR loss needs at least 4")
    grad_norm = np.asarray(_ce_grad_norm(sampler, x, labels, k2))
    zero = int(np.sum(grad_norm == 0))
    if zero:
        warnings.append(
            f"{zero} of {len(grad_norm)} inputs have a zero gradient of the cross-entropy: gradient "
            "attacks may be unreliable (gradient masking?)"
        )
    return warnings


def autoattack(
    logits_fn: Callable | Randomized,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    targeted: bool = False,
    targets: jax.Array | None = None,
    eps: float = 8 / 255,
    norm: str = "linf",
    version: str = "standard",
    steps: int = 100,
    square_queries: int = 5000,
    num_target_classes: int = 9,
    eot: int = 20,
    loop: str = "auto",
    unroll: int = 10,
) -> EnsembleResult:
    """AutoAttack (Croce and Hein 2020) at radius eps: the attacks of ``version`` in sequence, each on
    the examples still robust; the sanity checks' findings in ``warnings``.

    Args:
      logits_fn: x -> logits, or a :class:`hbjax.attacks.Randomized` classifier.
      x, labels, key: the common arguments; AutoAttack is untargeted (``targeted=True`` is refused).
      eps, norm: the threat model (Linf or L2 ball).
      version: ``"standard"`` (APGD-CE, APGD-T, Square) or ``"rand"`` (APGD-CE, APGD-DLR, EOT).
      steps: APGD iterations.
      square_queries: Square's query budget (standard).
      num_target_classes: APGD-T's targets (standard).
      eot: draws a gradient (rand; a deterministic model uses one).
      loop, unroll: loop runner.

    Returns:
      :class:`EnsembleResult`.

    References:
      Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
      parameter-free attacks", ICML 2020.
    """
    name = "autoattack"
    if targeted or targets is not None:
        raise ValueError(f"{name}: AutoAttack is untargeted; use apgd(targeted=True) for a chosen target")
    x, labels, _ = base.check_inputs(x, labels, targeted=False, targets=None, name=name)
    base.check_choice(version, VERSIONS, "version", name)
    base.check_choice(norm, base.NORMS, "norm", name)
    eps = base.check_nonnegative(eps, "eps", name)
    common = dict(eps=eps, norm=norm, loop=loop, unroll=unroll)
    if version == "standard":
        plan: list[tuple[str, Callable, dict]] = [
            ("apgd_ce", apgd, dict(common, steps=steps, loss="ce")),
            ("apgd_t", apgd_t, dict(common, steps=steps, num_target_classes=num_target_classes)),
            ("square", square, dict(common, queries=square_queries)),
        ]
    else:
        plan = [
            ("apgd_ce", apgd, dict(common, steps=steps, loss="ce", eot=eot)),
            ("apgd_dlr", apgd, dict(common, steps=steps, loss="dlr", eot=eot)),
        ]
    k_checks, k_clean, k_attacks = jax.random.split(key, 3)
    warnings = sanity_checks(logits_fn, x, labels, k_checks, version=version)
    sampler, _ = as_sampler(logits_fn)

    n = x.shape[0]
    clean_pred = np.asarray(jnp.argmax(sampler(x, k_clean), -1))
    robust = clean_pred == np.asarray(labels)
    first = np.where(robust, -1, -2).astype(np.int32)  # -2: misclassified before any attack
    attack_success = np.zeros((len(plan), n), bool)
    robust_after = []
    x_adv = x
    calls = 1
    for a, (attack_name, attack, kwargs) in enumerate(plan):
        idx = np.flatnonzero(robust)
        if len(idx):
            sub = jnp.asarray(idx)
            r = attack(logits_fn, x[sub], labels[sub], jax.random.fold_in(k_attacks, a), **kwargs)
            fooled = np.asarray(r.success)
            calls += int(r.model_calls)
            attack_success[a, idx] = fooled
            hit = idx[fooled]
            if len(hit):
                x_adv = x_adv.at[jnp.asarray(hit)].set(r.x_adv[jnp.asarray(np.flatnonzero(fooled))])
                first[hit] = a
                robust[hit] = False
        robust_after.append(float(robust.mean()))
    names = tuple(p[0] for p in plan)
    if "square" in names:
        s = names.index("square")
        gained = int(attack_success[s].sum())
        if gained:
            warnings.append(
                f"Square fooled {gained} of {n} examples that the white-box attacks did not "
                f"(robust accuracy {robust_after[s - 1]:.4f} -> {robust_after[s]:.4f}): a sign of "
                "gradient masking, so the white-box results alone would overestimate robustness"
            )
    first = np.where(first == -2, -1, first)
    success = ~robust
    l2, linf = base.distances(x_adv, x)
    return EnsembleResult(
        x_adv, jnp.asarray(success), l2, linf, jnp.asarray(calls, jnp.int32), jnp.asarray(first),
        jnp.asarray(attack_success), tuple(robust_after), names, tuple(warnings),
    )  # fmt: skip


def autoattack_rand(logits_fn: Callable | Randomized, x: jax.Array, labels: jax.Array, key: jax.Array,
                    *, targeted: bool = False, targets: jax.Array | None = None, eps: float = 8 / 255,
                    norm: str = "linf", steps: int = 100, eot: int = 20, loop: str = "auto",
                    unroll: int = 10) -> EnsembleResult:  # fmt: skip
    """AutoAttack's ``rand`` version (APGD-CE and APGD-DLR with EOT over ``eot`` draws), for
    randomised defenses; :func:`autoattack` with ``version="rand"``.

    References:
      Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
      parameter-free attacks", ICML 2020.
    """
    return autoattack(
        logits_fn, x, labels, key, targeted=targeted, targets=targets, eps=eps, norm=norm,
        version="rand", steps=steps, eot=eot, loop=loop, unroll=unroll,
    )  # fmt: skip
