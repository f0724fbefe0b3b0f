"""The arrays behind the Figure 3 panels of a run: benign, adversarial, heatmap, mask, blurred and
cleaned images of a few examples, with the predictions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hbjax.experiment.protocol import Components, choose_targets


def panel_arrays(cfg, model, c: Components, x: np.ndarray, labels: np.ndarray, key: jax.Array) -> dict:
    """Recomputes the protocol's steps for (x, labels) with the batch key and keeps the images."""
    k_target, k_attack, k_clean_adv, _ = jax.random.split(key, 4)
    x = jnp.asarray(x)
    labels = jnp.asarray(labels)
    logits_b = c.forward(x)
    targets = choose_targets(logits_b, labels, k_target, c.target_mode) if c.targeted else None
    x_adv = jnp.clip(c.attack(x, labels, k_attack, targets).x_adv, 0.0, 1.0)
    cleaned = c.clean(x_adv, k_clean_adv)
    out = {
        "x": x, "x_adv": x_adv, "x_blurred": cleaned.blurred, "x_cleaned": cleaned.image,
        "mask": cleaned.mask, "heatmap": cleaned.heatmap, "labels": labels,
        "pred_benign": jnp.argmax(logits_b, -1), "pred_adv": jnp.argmax(cleaned.logits, -1),
        "pred_cleaned": jnp.argmax(c.forward(cleaned.image), -1), "sigma": cleaned.sigma,
    }  # fmt: skip
    return {k: np.asarray(v) for k, v in out.items()}
