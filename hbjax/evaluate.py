"""``hbjax-evaluate``: the paper's evaluation (section 5) as a Hydra application.

    hbjax-evaluate data=folder data.root=../shared/data/cifar10 data.split=test
    hbjax-evaluate -m defense.sigma=0.5,0.8,1.0,1.2,1.5 metrics.coverage=0.9,0.99 attack=pgd_linf

Writes into the run directory: ``parts/`` (one CSV per finished batch; a run started again with the
same directory resumes after the last one), ``examples.csv`` (one row per image), ``results.json``
(the summary), ``panels.npz`` (a few examples for the Figure 3 panels) and Hydra's ``.hydra/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from typing import Any, Mapping

import hydra
import jax
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from hbjax.errors import ConfigError, HbjaxError, RunDirError
from hbjax.experiment import replay, schema, store
from hbjax.experiment.compose import (
    build_components,
    check_model_fits_data,
    load_model,
    open_data,
)
from hbjax.experiment.protocol import (
    Replayed,
    adversarials_of,
    attack_and_clean,
    batch_columns,
    batch_keys,
    column_names,
)
from hbjax.experiment.sharding import batch_sharding, shard_batch
from hbjax.experiment.summary import summarize


def config_dir() -> str:
    """The Hydra config tree: ``hbjax/conf`` (a link to the top-level ``conf/`` in a source checkout,
    a copy in an installed wheel)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "conf")


def _experiment_identity(cfg: DictConfig) -> dict:
    """The config keys that determine the results (a resumed run must match them)."""
    keys = ("model", "data", "attack", "defense", "lrp", "metrics", "seed", "num_examples", "batch_size")
    identity = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k] for k in keys}
    if cfg.get("matmul_precision") is not None:  # absent when unset: runs made before the key resume
        identity["matmul_precision"] = cfg.matmul_precision
    return identity


def matmul_precision(cfg: DictConfig) -> contextlib.AbstractContextManager:
    """The scope of ``matmul_precision``: JAX's precision of float32 matrix products and
    convolutions (``highest``: full float32; JAX's default computes them in TF32 on recent NVIDIA
    GPUs, which may move an adversarial example that sits on the decision boundary across it when
    it is classified again). No effect on the CPU, which computes in float32 either way."""
    value = cfg.get("matmul_precision")
    return contextlib.nullcontext() if value is None else jax.default_matmul_precision(str(value))


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: how many batches this run finished (their parts are kept)."""

    def __init__(self, finished: int, run_dir: str):
        super().__init__(finished, run_dir)
        self.finished, self.run_dir = finished, run_dir


def run_experiment(cfg: DictConfig, run_dir: str) -> dict:
    """Runs (or resumes) the experiment of ``cfg`` in ``run_dir``; returns the summary.

    Checked before any model or data is loaded: every config value (:mod:`hbjax.experiment.schema`)
    and the run directory (:func:`hbjax.experiment.store.check_run_dir`). Ctrl-C raises
    :class:`Interrupted`; the finished batches' parts stay for the resumed run.
    """
    schema.validate(cfg)
    with matmul_precision(cfg):
        return _run_experiment(cfg, run_dir)


def _run_experiment(cfg: DictConfig, run_dir: str) -> dict:
    t_start = time.time()
    store.check_run_dir(run_dir)
    identity = _experiment_identity(cfg)
    id_path = os.path.join(run_dir, "experiment.json")
    if os.path.exists(id_path):
        try:
            with open(id_path) as f:
                previous = json.load(f)
        except (OSError, ValueError) as e:
            raise RunDirError(f"{id_path}: unreadable ({e}); delete it to reuse {run_dir}, or use a new hydra.run.dir") from None
        if previous != json.loads(json.dumps(identity)):
            raise ConfigError(
                f"{run_dir} holds a run of a different experiment; use a new output directory "
                "(hydra.run.dir=...) or the same settings to resume"
            )
    # everything that can fail on bad input fails here, before any work
    num_examples = cfg.num_examples
    data = open_data(cfg.data, num_examples=num_examples, batch_size=cfg.batch_size, seed=cfg.seed)
    model = load_model(cfg.model)
    check_model_fits_data(model, data)
    components = build_components(OmegaConf.to_container(cfg, resolve=True), model)
    done = store.finished_batches(run_dir)
    source = None
    if cfg.get("adversarials_from"):
        pending = set(range(data.num_batches)) - done
        source = replay.open_source(str(cfg.adversarials_from), identity, run_dir, pending)
    store.atomic_write_json(id_path, identity)

    sharding = batch_sharding()
    key = jax.random.key(cfg.seed)
    bar = tqdm(total=data.num_batches, initial=len(done), desc="batches", disable=not cfg.progress)
    running: dict[str, list] = {}
    stop_after = cfg.get("stop_after_batches")
    try:
        count = _run_batches(cfg, run_dir, data, components, sharding, done, key, bar, running, stop_after, source)
    except KeyboardInterrupt:
        bar.close()
        raise Interrupted(len(store.finished_batches(run_dir)) - len(done), run_dir) from None
    if count is not None:
        return {"stopped": True, "finished_batches": len(done) + count}
    bar.close()

    columns = ["id", "batch"] + column_names(components.ks)
    rows = store.merge_parts(run_dir, [b for b in range(data.num_batches) if _nonempty(run_dir, b)], columns)
    if not rows:
        raise ConfigError("no image could be read from the data source")
    store.atomic_write_text(os.path.join(run_dir, "examples.csv"), store.rows_to_csv(rows))
    summary = summarize(rows, components.ks)
    summary["config"] = identity
    summary["class_names"] = data.class_names
    summary["wall_seconds_this_run"] = time.time() - t_start
    summary["devices"] = [str(d) for d in jax.local_devices()]
    summary["matmul_precision"] = jax.config.jax_default_matmul_precision or "default"
    # batch -> the run whose saved adversarial examples it evaluated (empty: the attack ran on all)
    summary["adversarials_from"] = replay.replayed_batches(run_dir, range(data.num_batches))
    store.atomic_write_json(os.path.join(run_dir, "results.json"), summary)
    if cfg.num_panels and not os.path.exists(os.path.join(run_dir, "panels.npz")):
        save_panels(cfg, model, data, components, run_dir, int(cfg.num_panels), rows, source)
    return summary


def _replayed(source: replay.ReplaySource, sharding, b: int, ids: list[str], x: np.ndarray) -> Replayed:
    """Batch ``b`` of the saved adversarial examples, placed like the batch's images."""
    arrays, _ = shard_batch(sharding, *source.load(b, ids, x.shape[1:]))
    return Replayed(*arrays)


def _run_batches(
    cfg, run_dir, data, components, sharding, done, key, bar, running, stop_after, source=None
) -> int | None:
    """Evaluates every unfinished batch, one part file each (and its adversarial examples with
    ``save_adversarials``); the count of new batches when ``stop_after_batches`` stopped the run,
    else None."""
    for count, (b, x, labels, ids) in enumerate(data.iterate(done)):
        if stop_after is not None and count >= stop_after:
            bar.close()
            print(f"hbjax-evaluate: stopped after {count} batches (stop_after_batches); "
                  f"run again with hydra.run.dir={run_dir} to resume", file=sys.stderr)
            return count
        if len(x) == 0:
            store.atomic_write_text(store.part_path(run_dir, b), "")
            bar.update(1)
            continue
        (xs, ys), n = shard_batch(sharding, x, labels)
        keys = batch_keys(jax.random.fold_in(key, b))
        replayed = _replayed(source, sharding, b, ids, x) if source is not None else None
        attacked = attack_and_clean(components, xs, ys, keys, replayed)
        cols = batch_columns(components, xs, ys, keys, attacked)
        cols = {k: v[:n] for k, v in cols.items()}
        if cfg.get("save_adversarials"):  # before the part: a finished batch has its adversarials
            adv = adversarials_of(attacked, xs.shape[0])
            replay.save(run_dir, b, ids, Replayed(*(np.asarray(a)[:n] for a in adv)))
        replay.mark_replayed(run_dir, b, source)  # or clears a mark of an earlier computation of b
        rows = {"id": ids, "batch": [b] * n, **cols}
        store.atomic_write_text(store.part_path(run_dir, b), store.rows_to_csv(rows))
        for k in ("benign_correct", "attack_success", "top1_adv", "top1_cleaned", "top1_control"):
            running.setdefault(k, []).extend(cols[k].tolist())
        bar.update(1)
        bar.set_postfix(_running_summary(running))
    return None


def _nonempty(run_dir: str, b: int) -> bool:
    return os.path.getsize(store.part_path(run_dir, b)) > 0


def _running_summary(running: dict[str, list]) -> dict[str, str]:
    correct = np.asarray(running["benign_correct"], bool)
    kept = correct & np.asarray(running["attack_success"], bool)
    out = {"benign": f"{correct.mean():.3f}"}
    if kept.any():
        out["adv"] = f"{np.asarray(running['top1_adv'])[kept].mean():.3f}"
        out["cleaned"] = f"{np.asarray(running['top1_cleaned'])[kept].mean():.3f}"
    if correct.any():
        out["control"] = f"{np.asarray(running['top1_control'])[correct].mean():.3f}"
    return out


def panel_positions(rows: Mapping[str, list], count: int, batch: int = 0) -> list[int]:
    """Positions in ``batch`` of the examples to show: the first ``count`` that the model classifies
    correctly and the attack fooled, then, if there are too few, the first of the others."""
    in_first = [i for i, b in enumerate(rows["batch"]) if int(b) == batch]
    flag = lambda v: str(v).strip().lower() in ("true", "1")  # noqa: E731
    wanted = [j for j, i in enumerate(in_first)
              if flag(rows["benign_correct"][i]) and flag(rows["attack_success"][i])]  # fmt: skip
    others = [j for j in range(len(in_first)) if j not in wanted]
    return (wanted + others)[:count]


def save_panels(
    cfg: DictConfig, model, data, components, run_dir: str, count: int, rows: Mapping[str, list],
    source: replay.ReplaySource | None = None,
) -> None:  # fmt: skip
    """Benign, adversarial, blurred, mask and cleaned images of ``count`` examples of the first batch
    with readable images (the first successful adversarial examples, see :func:`panel_positions`),
    recomputed with that batch's key (the adversarial examples read from ``source`` when the run
    replays them), for the Figure 3 panels of ``hbjax-report``."""
    from hbjax.experiment.panels import panel_arrays

    first = min(int(b) for b in rows["batch"])
    for _, x, labels, ids in data.iterate(set(range(data.num_batches)) - {first}):
        break
    else:
        return
    positions = np.asarray(panel_positions(rows, count, first), int)
    if not len(positions) or len(x) == 0:
        return
    replayed = None
    if source is not None:
        replayed = Replayed(*(a[positions] for a in source.load(first, ids, x.shape[1:])))
    x, labels = x[positions], labels[positions]
    key = jax.random.fold_in(jax.random.key(cfg.seed), first)
    arrays = panel_arrays(cfg, model, components, x, labels, key, replayed)
    arrays["class_names"] = np.asarray(data.class_names)
    store.atomic_write_npz(os.path.join(run_dir, "panels.npz"), arrays, compressed=True)


# jax logs at INFO that it found no TPU; Hydra's logging configuration would print it on every run
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def interrupted_outside_batches(run_dir: str) -> str:
    """What an interruption outside the batch loop left in ``run_dir``: a finished run whose Figure 3
    panels were being saved (``results.json`` written last before them), finished batches of a run
    that had not started its next one, or nothing."""
    resume = f"run the same command with hydra.run.dir={run_dir}"
    if os.path.exists(os.path.join(run_dir, "results.json")):
        return f"interrupted while saving the Figure 3 panels; results.json is complete; {resume} to save them"
    finished = len(store.finished_batches(run_dir))
    if finished:
        return f"interrupted with {finished} batches finished; {resume} to resume"
    return "interrupted before the first batch; nothing was computed"


@hydra.main(config_path=config_dir(), config_name="evaluate", version_base="1.3")
def hydra_main(cfg: DictConfig) -> Any:
    run_dir = hydra.core.hydra_config.HydraConfig.get().runtime.output_dir
    try:
        summary = run_experiment(cfg, run_dir)
    except HbjaxError as e:
        print(f"hbjax-evaluate: error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a full disk, a file that vanished: named, without a traceback
        print(f"hbjax-evaluate: error: {_one_line(e)}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as e:
        print(f"hbjax-evaluate: interrupted after {e.finished} batches; run the same command with "
              f"hydra.run.dir={e.run_dir} to resume", file=sys.stderr)  # fmt: skip
        sys.exit(130)
    except KeyboardInterrupt:  # outside the batch loop: while loading, compiling, or saving the panels
        print(f"hbjax-evaluate: {interrupted_outside_batches(run_dir)}", file=sys.stderr)
        sys.exit(130)
    if summary.get("stopped"):
        return None
    brief = {v: {k: summary[v][k] for k in ("n", "top1", "top5", "target_rate", "ndcg@1")} for v in ("adv", "cleaned", "control")}
    print(json.dumps({"run_dir": run_dir, "benign_accuracy": summary["benign_accuracy"], "attack_success_rate": summary["attack_success_rate"], **brief}))
    return summary["cleaned"]["top1"]


def _output_dirs(argv: list[str]) -> list[str]:
    """The run or sweep directories named on the command line (without interpolations)."""
    out = []
    for arg in argv:
        for key in ("hydra.run.dir=", "hydra.sweep.dir="):
            if arg.startswith(key) and "${" not in arg:
                out.append(arg[len(key) :].strip("'\""))
    return out


def main() -> Any:
    """The ``hbjax-evaluate`` command: checks the output directories named on the command line (Hydra
    creates them before the application starts), then runs the Hydra application."""
    try:
        for directory in _output_dirs(sys.argv[1:]):
            store.check_run_dir(directory)
    except HbjaxError as e:
        print(f"hbjax-evaluate: error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)
    return hydra_main()


if __name__ == "__main__":
    main()
