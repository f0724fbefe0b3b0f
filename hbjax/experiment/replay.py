"""Adversarial examples saved with a run and replayed by another.

``save_adversarials=true`` writes, beside each batch's part, ``parts/batch_NNNNNN.adv.npz``: the
attack's adversarial images (clipped to [0, 1]), its success flags, model calls and targets, and
the ids of the images. ``adversarials_from=DIR`` reads them back in place of running the attack,
so that a sweep over the defense (the paper's Figure 4: sigma; the heatmap's binarisation) or the
metrics evaluates every setting on the same adversarial examples and pays for the attack once. The result is the run
that would have recomputed the attack: the attack is a function of the model, the images, its own
settings and the batch key only.

That holds for every attack that does not look at the defense; the adaptive attacks
(``adaptive_heatmap``, ``bpda_eot``) and an attack of the defended classifier (``attack.defended``)
are refused. The files are plain ``.npz`` arrays, read with ``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from hbjax.errors import ConfigError, RunDirError
from hbjax.experiment import store
from hbjax.experiment.protocol import Replayed

# the identity keys (hbjax.evaluate) that determine the attack's output, batch by batch
ATTACK_IDENTITY_KEYS = ("model", "data", "attack", "seed", "num_examples", "batch_size", "matmul_precision")
ARRAYS = ("ids", "x_adv", "success", "model_calls", "targets")


def adversarials_path(run_dir: str, batch_index: int) -> str:
    return os.path.join(run_dir, store.PARTS, f"batch_{batch_index:06d}.adv.npz")


def replayed_marker_path(run_dir: str, batch_index: int) -> str:
    """The file that records, in a replaying run, which run a batch's adversarial examples came from."""
    return os.path.join(run_dir, store.PARTS, f"batch_{batch_index:06d}.replayed_from")


def mark_replayed(run_dir: str, batch_index: int, source: ReplaySource | None) -> None:
    """Records that batch ``batch_index`` evaluated ``source``'s adversarial examples, or (None)
    that it ran the attack, removing a record of an earlier computation of the batch."""
    path = replayed_marker_path(run_dir, batch_index)
    if source is not None:
        store.atomic_write_text(path, os.path.abspath(source.run_dir) + "\n")
    elif os.path.exists(path):
        os.remove(path)


def replayed_batches(run_dir: str, batches: Iterable[int]) -> dict[str, str]:
    """Batch index -> the run whose adversarial examples the batch evaluated, for the batches of
    ``run_dir`` that replayed them (empty when it ran its attack on every batch)."""
    out = {}
    for b in sorted(batches):
        path = replayed_marker_path(run_dir, b)
        if os.path.exists(path):
            with open(path) as f:
                out[str(b)] = f.read().strip()
    return out


def depends_on_defense(attack_cfg: Mapping[str, Any]) -> bool:
    """True for the attacks whose adversarial examples change with the defense's settings: the
    adaptive ones (registry ``needs_model``) and any attack of the defended classifier."""
    import hbjax

    if attack_cfg.get("defended", False):
        return True
    try:
        return bool(hbjax.attacks.metadata(attack_cfg["name"])["needs_model"])
    except (KeyError, ValueError) as e:
        raise ConfigError(f"attack.name: {e}") from None


def save(run_dir: str, batch_index: int, ids: Sequence[str], adversarials: Replayed) -> None:
    """Writes one batch's adversarial examples (numpy arrays of the batch's length) atomically."""
    a = adversarials
    store.atomic_write_npz(adversarials_path(run_dir, batch_index), {
        "ids": np.asarray(list(ids), dtype=str), "x_adv": np.asarray(a.x_adv, np.float32),
        "success": np.asarray(a.success, bool), "model_calls": np.asarray(a.model_calls, np.int64),
        "targets": np.asarray(a.targets, np.int32),
    })  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ReplaySource:
    """The run directory whose saved adversarial examples a run evaluates."""

    run_dir: str

    def load(self, batch_index: int, ids: Sequence[str], image_shape: tuple[int, ...]) -> Replayed:
        """The saved arrays of batch ``batch_index`` (numpy), checked against this run's batch: the same
        image ids in the same order, images of ``image_shape``, finite values in [0, 1]."""
        path = adversarials_path(self.run_dir, batch_index)
        redo = (f"delete {store.part_path(self.run_dir, batch_index)} and run that run again with "
                f"save_adversarials=true to recompute batch {batch_index}")  # fmt: skip
        if not os.path.exists(path):
            raise RunDirError(f"adversarials_from: {path} does not exist; {redo}")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ARRAYS if k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # truncated, not a zip, object arrays
            raise RunDirError(f"adversarials_from: {path} is unreadable ({type(e).__name__}: {e}); {redo}") from None
        missing = [k for k in ARRAYS if k not in arrays]
        if missing:
            raise RunDirError(f"adversarials_from: {path} lacks the arrays {missing}; {redo}")
        n = len(ids)
        if arrays["ids"].tolist() != list(ids):
            raise RunDirError(
                f"adversarials_from: {path} holds other images than batch {batch_index} of this run "
                "(the data folder changed since that run); use a run of the same data"
            )
        x_adv = arrays["x_adv"]
        if x_adv.shape != (n, *image_shape) or x_adv.dtype != np.float32:
            raise RunDirError(
                f"adversarials_from: {path}: x_adv is {x_adv.dtype}{list(x_adv.shape)}, expected "
                f"float32{[n, *image_shape]}; {redo}"
            )
        if not np.all(np.isfinite(x_adv)) or x_adv.min(initial=0.0) < 0.0 or x_adv.max(initial=0.0) > 1.0:
            raise RunDirError(f"adversarials_from: {path}: x_adv has values outside [0, 1] or NaN; {redo}")
        for k in ("success", "model_calls", "targets"):
            if arrays[k].shape != (n,):
                raise RunDirError(f"adversarials_from: {path}: {k} has shape {list(arrays[k].shape)}, expected [{n}]; {redo}")
        return Replayed(x_adv, arrays["success"], arrays["model_calls"], arrays["targets"])


def open_source(
    source_dir: str, identity: Mapping[str, Any], run_dir: str, batches: Iterable[int]
) -> ReplaySource:
    """Checks, before any work, that ``source_dir`` can stand in for this run's attack: it is
    another run directory, its attack does not depend on the defense, its attack identity (model,
    data, attack, seed, image count, batch size) is this run's, and it saved the adversarial
    examples of every batch in ``batches`` (those this run has still to compute)."""
    if not os.path.isdir(source_dir):
        raise ConfigError(f"adversarials_from: {source_dir} is not a directory")
    if os.path.realpath(source_dir) == os.path.realpath(run_dir):
        raise ConfigError("adversarials_from names this run's own directory; name the run that saved them")
    if depends_on_defense(identity["attack"]):
        raise ConfigError(
            f"adversarials_from: attack {identity['attack']['name']!r} depends on the defense "
            "(adaptive, or attack.defended=true), so its adversarial examples cannot be reused with "
            "other defense settings; run it without adversarials_from"
        )
    id_path = os.path.join(source_dir, "experiment.json")
    try:
        with open(id_path) as f:
            theirs = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"adversarials_from: {id_path} is missing or unreadable ({e}); is {source_dir} a run directory?") from None
    ours = json.loads(json.dumps(dict(identity)))
    differ = [k for k in ATTACK_IDENTITY_KEYS if theirs.get(k) != ours.get(k)]
    if differ:
        raise ConfigError(
            f"adversarials_from: {source_dir} ran another attack setup (its {', '.join(differ)} "
            "differ from this run's); only the defense, lrp and metrics settings may differ"
        )
    done = store.finished_batches(source_dir)
    pending = sorted(set(batches))
    unfinished = [b for b in pending if b not in done]
    if unfinished:
        raise ConfigError(
            f"adversarials_from: {source_dir} has not finished batches {_short(unfinished)}; finish "
            "it first (run its command again: it resumes)"
        )
    unsaved = [
        b for b in pending
        if os.path.getsize(store.part_path(source_dir, b)) > 0 and not os.path.exists(adversarials_path(source_dir, b))
    ]  # fmt: skip
    if unsaved:
        raise ConfigError(
            f"adversarials_from: {source_dir} saved no adversarial examples for batches "
            f"{_short(unsaved)} (it ran without save_adversarials=true); delete those batches' "
            "parts/batch_*.csv there and run it again with save_adversarials=true"
        )
    return ReplaySource(source_dir)


def _short(batches: list[int]) -> str:
    return str(batches) if len(batches) <= 8 else f"{batches[:8]}... ({len(batches)} in all)"
