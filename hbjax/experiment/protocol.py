"""One batch of the evaluation protocol (section 5 of the paper).

benign logits -> (targets) -> attack -> adversarial logits -> Heat and Blur on the adversarial
("cleaned") and on the benign images ("control") -> per-example columns: predictions, top-1/top-5
against the true label, whether the adversarial label is still predicted, NDCG@k and the full NDCG
against the benign logits, L2 / Linf distances to the benign image.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hbjax.metrics import distances, topk_correct

TARGET_MODES = ("random", "least_likely", "second")


@dataclasses.dataclass(frozen=True)
class Components:
    """The parts an experiment is composed of (built from the config by :mod:`.compose`).

    forward: (x) -> logits of the undefended model.
    attack: (x, labels, key, targets) -> AttackResult (targets None when untargeted).
    clean: (x, key) -> :class:`hbjax.defense.Cleaned` (Heat and Blur, Algorithm 1: the cleaned and
      blurred images, mask, heatmap, sigma and the logits of x).
    ndcg: (benign_logits, other_logits) -> (B, len(ks) + 1): NDCG@k for ks, then the full NDCG.
    """

    forward: Callable[[jax.Array], jax.Array]
    attack: Callable[..., Any]
    clean: Callable[[jax.Array, jax.Array], Any]
    ndcg: Callable[[jax.Array, jax.Array], jax.Array]
    ks: tuple[int, ...]
    targeted: bool
    target_mode: str = "random"


def choose_targets(logits: jax.Array, labels: jax.Array, key: jax.Array, mode: str) -> jax.Array:
    """Target classes for targeted attacks: ``random`` (uniform over the classes other than the
    label), ``least_likely`` (the lowest logit) or ``second`` (the highest logit other than the label)."""
    num_classes = logits.shape[-1]
    if mode == "random":
        offset = jax.random.randint(key, labels.shape, 1, num_classes)
        return (labels + offset) % num_classes
    if mode == "least_likely":
        return jnp.argmin(logits, axis=-1)
    if mode == "second":
        masked = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), -jnp.inf, logits)
        return jnp.argmax(masked, axis=-1)
    raise ValueError(f"unknown target mode {mode!r}; expected one of {TARGET_MODES}")


class BatchKeys(NamedTuple):
    """The keys of a batch's random steps, split once from the batch key (the Figure 3 panels
    recompute a batch with the same ones)."""

    target: jax.Array
    attack: jax.Array
    clean_adv: jax.Array
    clean_benign: jax.Array


def batch_keys(key: jax.Array) -> BatchKeys:
    return BatchKeys(*jax.random.split(key, 4))


class Attacked(NamedTuple):
    """The attack half of a batch: benign logits, targets (None when untargeted), the attack's
    result, the adversarial images clipped to [0, 1] and their Heat and Blur cleaning."""

    logits_benign: jax.Array
    targets: jax.Array | None
    result: Any
    x_adv: jax.Array
    cleaned: Any


class Replayed(NamedTuple):
    """An attack's outcome read back from a run that saved it (:mod:`hbjax.experiment.replay`), in
    place of running the attack: the fields of an AttackResult the protocol reads, and the targets
    (-1 when untargeted)."""

    x_adv: jax.Array
    success: jax.Array
    model_calls: jax.Array
    targets: jax.Array


def attack_and_clean(
    c: Components, x: jax.Array, labels: jax.Array, keys: BatchKeys, replay: Replayed | None = None
) -> Attacked:
    """The attack (or its ``replay``) and Heat and Blur on its adversarial examples."""
    logits_b = c.forward(x)
    if replay is None:
        targets = choose_targets(logits_b, labels, keys.target, c.target_mode) if c.targeted else None
        result = c.attack(x, labels, keys.attack, targets)
    else:
        targets = replay.targets if c.targeted else None
        result = replay
    x_adv = jnp.clip(result.x_adv, 0.0, 1.0)
    cleaned = c.clean(x_adv, keys.clean_adv)  # its first forward gives the adversarial logits
    return Attacked(logits_b, targets, result, x_adv, cleaned)


def evaluate_batch(
    c: Components, x: jax.Array, labels: jax.Array, key: jax.Array, replay: Replayed | None = None
) -> dict[str, np.ndarray]:
    """Per-example columns for one batch (numpy arrays of length B), in the order of :func:`column_names`."""
    keys = batch_keys(key)
    return batch_columns(c, x, labels, keys, attack_and_clean(c, x, labels, keys, replay))


def adversarials_of(attacked: Attacked, batch_size: int) -> Replayed:
    """What a run saves of its attack (``save_adversarials``) for another to replay."""
    calls = jnp.broadcast_to(jnp.asarray(getattr(attacked.result, "model_calls", 0)), (batch_size,))
    targets = attacked.targets if attacked.targets is not None else jnp.full((batch_size,), -1, jnp.int32)
    return Replayed(attacked.x_adv, attacked.result.success, calls, targets)


def batch_columns(
    c: Components, x: jax.Array, labels: jax.Array, keys: BatchKeys, attacked: Attacked
) -> dict[str, np.ndarray]:
    """The columns of :func:`evaluate_batch` from a batch's attack half."""
    logits_b, targets, result, x_adv, cleaned = attacked
    pred_b = jnp.argmax(logits_b, -1)
    logits_adv = cleaned.logits
    pred_adv = jnp.argmax(logits_adv, -1)
    adv_label = targets if c.targeted else pred_adv
    control = c.clean(x, keys.clean_benign)
    views = {
        "adv": (x_adv, logits_adv),
        "cleaned": (cleaned.image, c.forward(cleaned.image)),
        "control": (control.image, c.forward(control.image)),
    }
    cols: dict[str, Any] = {
        "label": labels,
        "benign_pred": pred_b,
        "benign_correct": pred_b == labels,
        "target": targets if c.targeted else jnp.full_like(labels, -1),
        "adv_label": adv_label,
        "attack_success": result.success,
        "model_calls": jnp.broadcast_to(jnp.asarray(getattr(result, "model_calls", 0)), labels.shape),
    }
    for view, (xv, logits) in views.items():
        pred = jnp.argmax(logits, -1)
        cols[f"pred_{view}"] = pred
        cols[f"top1_{view}"] = pred == labels
        cols[f"top5_{view}"] = topk_correct(logits, labels, k=min(5, logits.shape[-1]))
        cols[f"target_hit_{view}"] = pred == adv_label
        scores = c.ndcg(logits_b, logits)
        for i, k in enumerate(c.ks):
            cols[f"ndcg{k}_{view}"] = scores[:, i]
        cols[f"ndcg_full_{view}"] = scores[:, len(c.ks)]
        cols[f"l2_{view}"], cols[f"linf_{view}"] = distances(xv, x)
    cols["sigma_cleaned"] = cleaned.sigma
    cols["mask_fraction_cleaned"] = jnp.mean(cleaned.mask.reshape(x.shape[0], -1), axis=1)
    cols["mask_fraction_control"] = jnp.mean(control.mask.reshape(x.shape[0], -1), axis=1)
    names = column_names(c.ks)
    if sorted(cols) != sorted(names):  # column_names is the one list of the columns
        differ = sorted(set(cols) ^ set(names))
        raise AssertionError(f"evaluate_batch's columns differ from column_names: {differ}")
    out = {}
    for name in names:
        arr = np.asarray(cols[name])
        if arr.dtype == bool:
            arr = arr.astype(np.int8)
        out[name] = arr
    return out


def column_names(ks: Sequence[int]) -> list[str]:
    """The columns :func:`evaluate_batch` returns, in this order (it checks that it computes exactly
    these)."""
    names = ["label", "benign_pred", "benign_correct", "target", "adv_label", "attack_success", "model_calls"]
    for view in ("adv", "cleaned", "control"):
        names += [f"pred_{view}", f"top1_{view}", f"top5_{view}", f"target_hit_{view}"]
        names += [f"ndcg{k}_{view}" for k in ks] + [f"ndcg_full_{view}", f"l2_{view}", f"linf_{view}"]
    return names + ["sigma_cleaned", "mask_fraction_cleaned", "mask_fraction_control"]
