"""The arrays behind the Figure 3 panels of a run: benign, adversarial, heatmap, mask, blurred and
cleaned images of a few examples, with the predictions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hbjax.experiment.protocol import Components, Replayed, attack_and_clean, batch_keys


def panel_arrays(
    cfg, model, c: Components, x: np.ndarray, labels: np.ndarray, key: jax.Array, replay: Replayed | None = None
) -> dict:
    """Recomputes the protocol's attack (or reads its ``replay``) and cleaning for (x, labels) with
    the batch key (the same steps and keys as :func:`hbjax.experiment.protocol.evaluate_batch`) and
    keeps the images."""
    x = jnp.asarray(x)
    labels = jnp.asarray(labels)
    logits_b, _, _, x_adv, cleaned = attack_and_clean(c, x, labels, batch_keys(key), replay)
    out = {
        "x": x, "x_adv": x_adv, "x_blurred": cleaned.blurred, "x_cleaned": cleaned.image,
        "mask": cleaned.mask, "heatmap": cleaned.heatmap, "labels": labels,
        "pred_benign": jnp.argmax(logits_b, -1), "pred_adv": jnp.argmax(cleaned.logits, -1),
        "pred_cleaned": jnp.argmax(c.forward(cleaned.image), -1), "sigma": cleaned.sigma,
    }  # fmt: skip
    return {k: np.asarray(v) for k, v in out.items()}
