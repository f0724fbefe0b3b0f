"""Training of the CIFAR-10 VGG (flax + optax), resumable and deterministic for a fixed seed.

Recipe: SGD with Nesterov momentum 0.9, weight decay on kernels, a one-cycle cosine learning-rate
schedule, label smoothing, random crop (zero padding of 4) and horizontal flip; batch norm during
training, folded into the convolutions for the shipped model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from typing import Callable

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from hbjax import xla
from hbjax.data.folder import ImageFolder
from hbjax.data.preprocess import Preprocess
from hbjax.models.model import Model, fold_batchnorm, vgg_cifar


@dataclasses.dataclass
class TrainConfig:
    data_root: str = "../shared/data/cifar10"
    train_split: str = "train"
    test_split: str = "test"
    out_dir: str = "runs/train_cifar"
    width: float = 0.25
    epochs: int = 30
    batch_size: int = 128
    peak_lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    pad: int = 4
    seed: int = 0
    eval_every: int = 5
    limit_per_class: int | None = None
    test_limit_per_class: int | None = None
    stop_after: int | None = None  # stop after this epoch (resume later with the same out_dir)
    init_from: str | None = None  # start from the weights of another run's train_state.msgpack


def augment(images_u8: jnp.ndarray, key: jax.Array, pad: int) -> jnp.ndarray:
    """Random crop after zero padding by ``pad`` and random horizontal flip; uint8 -> float [0, 1]."""
    x = images_u8.astype(jnp.float32) / 255.0
    b, h, w, _ = x.shape
    k_crop, k_flip = jax.random.split(key)
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * pad + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, 3))

    x = jax.vmap(crop)(padded, offsets)
    flip = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
    return jnp.where(flip, x[:, :, ::-1, :], x)


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    schedule = optax.cosine_onecycle_schedule(total_steps, cfg.peak_lr)
    kernels_only = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, _: getattr(path[-1], "key", "") == "kernel", params
    )
    return optax.chain(
        optax.add_decayed_weights(cfg.weight_decay, mask=kernels_only),
        optax.sgd(schedule, momentum=cfg.momentum, nesterov=True),
    )


def make_train_step(model: Model, tx: optax.GradientTransformation, cfg: TrainConfig) -> Callable:
    module = model.module
    num_classes = model.num_classes

    def loss_fn(params, batch_stats, x, labels):
        logits, updates = module.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), cfg.label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        return loss, (logits, updates["batch_stats"])

    @xla.jit
    def step(state, images_u8, labels, key):
        x = augment(images_u8, key, cfg.pad)
        grads, (logits, batch_stats) = jax.grad(loss_fn, has_aux=True)(
            state["params"], state["batch_stats"], x, labels
        )
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        correct = jnp.sum(jnp.argmax(logits, -1) == labels)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), cfg.label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        new_state = {
            "params": params,
            "batch_stats": batch_stats,
            "opt_state": opt_state,
            "step": state["step"] + 1,
        }
        return new_state, loss, correct

    return step


def accuracy(model: Model, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    """Top-1 accuracy of a (folded or eval-mode) model on uint8 or [0, 1] float images."""
    apply = xla.jit(model.apply)
    correct = 0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x
        pred = np.asarray(jnp.argmax(apply(model.params, x), -1))
        correct += int((pred == labels[start : start + batch_size]).sum())
    return correct / len(images)


def _atomic_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _load_data(cfg: TrainConfig, log: Callable[[str], None]) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test) as uint8 images and int labels."""
    pre = Preprocess("cifar")
    t0 = time.time()
    train_set = ImageFolder(cfg.data_root, cfg.train_split, pre, limit_per_class=cfg.limit_per_class)
    test_set = ImageFolder(
        cfg.data_root, cfg.test_split, pre, limit_per_class=cfg.test_limit_per_class
    )
    x_train, y_train = train_set.load_uint8()
    x_test, y_test = test_set.load_uint8()
    log(f"loaded {len(x_train)} train and {len(x_test)} test images in {time.time() - t0:.1f}s")
    return x_train, y_train, x_test, y_test


def _initial_state(
    cfg: TrainConfig, model: Model, tx: optax.GradientTransformation, state_path: str,
    log: Callable[[str], None],
) -> tuple[dict, int, list[dict]]:  # fmt: skip
    """The training state to start from, the first epoch to run and the history so far: a saved
    run in ``state_path`` (resume), else ``cfg.init_from``'s weights (a warm restart: weights and
    BN statistics only, a fresh optimizer and schedule), else the initialisation."""
    state = {
        "params": model.params["params"],
        "batch_stats": model.params["batch_stats"],
        "opt_state": tx.init(model.params["params"]),
        "step": jnp.zeros((), jnp.int32),
    }
    if cfg.init_from and not os.path.exists(state_path):
        with open(cfg.init_from, "rb") as f:
            saved = flax.serialization.msgpack_restore(f.read())["state"]
        state["params"] = flax.serialization.from_state_dict(state["params"], saved["params"])
        state["batch_stats"] = flax.serialization.from_state_dict(
            state["batch_stats"], saved["batch_stats"]
        )
        log(f"initialised from {cfg.init_from}")
    if not os.path.exists(state_path):
        return state, 0, []
    with open(state_path, "rb") as f:
        saved = flax.serialization.msgpack_restore(f.read())
    state = flax.serialization.from_state_dict(state, saved["state"])
    log(f"resuming from {state_path} after epoch {int(saved['epoch'])}")
    return state, int(saved["epoch"]), json.loads(saved["history"])


def _run_epoch(
    step: Callable, state: dict, x_train: np.ndarray, y_train: np.ndarray, epoch_key: jax.Array,
    cfg: TrainConfig, desc: str,
) -> tuple[dict, float]:  # fmt: skip
    """One epoch over a permutation drawn from ``epoch_key``; the new state and the train accuracy."""
    steps_per_epoch = len(x_train) // cfg.batch_size
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(epoch_key, 0), len(x_train)))
    correct, seen = 0, 0
    bar = tqdm(range(steps_per_epoch), desc=desc, leave=False)
    for i in bar:
        idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        k = jax.random.fold_in(epoch_key, i + 1)
        state, loss, c = step(state, x_train[idx], y_train[idx], k)
        correct += int(c)
        if i % 20 == 0 or i == steps_per_epoch - 1:
            bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{correct / (seen + len(idx)):.3f}")
        seen += len(idx)
    return state, correct / seen


def _save_state(state_path: str, state: dict, epoch: int, history: list[dict]) -> None:
    payload = {
        "state": flax.serialization.to_state_dict(jax.device_get(state)),
        "epoch": epoch,
        "history": json.dumps(history),
    }
    _atomic_write(state_path, flax.serialization.msgpack_serialize(payload))


def _finish(
    cfg: TrainConfig, model: Model, state: dict, history: list[dict], elapsed: float,
    x_test: np.ndarray, y_test: np.ndarray,
) -> tuple[Model, dict]:  # fmt: skip
    """The BN-folded model with its metadata and the run's summary."""
    trained = model.replace(
        params={"params": state["params"], "batch_stats": state["batch_stats"]}
    )
    trained = jax.tree.map(np.asarray, trained.params)
    bn_model = model.replace(params=trained)
    folded = fold_batchnorm(bn_model)
    summary = {
        "epochs": cfg.epochs,
        "train_seconds": elapsed,
        "test_accuracy_bn": accuracy(bn_model, x_test, y_test),
        "test_accuracy_folded": accuracy(folded, x_test, y_test),
        "test_images": int(len(x_test)),
        "history": history,
        "config": dataclasses.asdict(cfg),
    }
    folded = folded.replace(
        meta=dict(
            folded.meta,
            source="hbjax scripts/train_cifar.py",
            seed=cfg.seed,
            epochs=cfg.epochs,
            test_accuracy=summary["test_accuracy_folded"],
        )
    )
    return folded, summary


def train(cfg: TrainConfig, *, log: Callable[[str], None] = print) -> tuple[Model, dict]:
    """Trains (or resumes) the CIFAR VGG; returns the BN-folded model and a summary dict.

    State is saved after every epoch to ``out_dir/train_state.msgpack`` (msgpack, no pickle); a
    later call with the same ``out_dir`` continues from the last finished epoch and gives the same
    result as an uninterrupted run.
    """
    x_train, y_train, x_test, y_test = _load_data(cfg, log)
    key = jax.random.key(cfg.seed)
    init_key, data_key = jax.random.split(key)
    model = vgg_cifar(key=init_key, width=cfg.width, batchnorm=True)
    tx = make_optimizer(cfg, (len(x_train) // cfg.batch_size) * cfg.epochs)
    state_path = os.path.join(cfg.out_dir, "train_state.msgpack")
    state, start_epoch, history = _initial_state(cfg, model, tx, state_path, log)
    step = make_train_step(model, tx, cfg)
    elapsed = sum(h["seconds"] for h in history)
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.time()
        state, train_accuracy = _run_epoch(
            step, state, x_train, y_train, jax.random.fold_in(data_key, epoch), cfg,
            f"epoch {epoch + 1}/{cfg.epochs}",
        )  # fmt: skip
        record = {"epoch": epoch + 1, "train_accuracy": train_accuracy, "seconds": time.time() - t_epoch}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            current = fold_batchnorm(
                model.replace(params={"params": state["params"], "batch_stats": state["batch_stats"]})
            )
            record["test_accuracy"] = accuracy(current, x_test, y_test)
        history.append(record)
        elapsed += record["seconds"]
        log(json.dumps(record))
        _save_state(state_path, state, epoch + 1, history)
        if cfg.stop_after is not None and epoch + 1 >= cfg.stop_after and epoch + 1 < cfg.epochs:
            log(f"stopping after epoch {epoch + 1} (stop_after); run again to resume")
            break
    return _finish(cfg, model, state, history, elapsed, x_test, y_test)
