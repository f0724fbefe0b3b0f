"""Builds an experiment's parts from its Hydra config, checking everything before any work starts:
the model, the data source, the attack, the defense, the LRP composite and the NDCG settings."""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from hbjax import xla
from hbjax.experiment.protocol import TARGET_MODES, Components


from hbjax.errors import ConfigError  # noqa: E402  (re-exported for existing imports)


def _get(cfg: Mapping, key: str, where: str) -> Any:
    if key not in cfg or cfg[key] is None or cfg[key] == "???":
        raise ConfigError(f"{where}.{key} must be set")
    return cfg[key]


# ----------------------------------------------------------------------------------------- model
def load_model(cfg: Mapping):
    """The model named by the ``model`` config group (shipped, checkpoint, torchvision, keras, or
    flax: ``model.factory=mypkg.models:make`` names a function returning an hbjax Model, called
    with ``model.kwargs``)."""
    import hbjax

    source = cfg.get("source", "shipped")
    if source == "flax":
        return _model_from_factory(_get(cfg, "factory", "model"), cfg.get("kwargs") or {})
    name = _get(cfg, "name", "model")
    if source in ("shipped", "checkpoint"):
        return hbjax.models.load(name)
    if source in ("torchvision", "keras"):
        arch = _get(cfg, "arch", "model")
        if not os.path.exists(name):
            raise ConfigError(f"model.name: weight file {name!r} does not exist")
        try:
            model = hbjax.models.from_weight_file(name, arch, source=source)
        except hbjax.models.WeightFileError as e:
            raise ConfigError(f"model.name: {e}") from None
        return hbjax.models.fold_batchnorm(model)
    raise ConfigError(f"model.source {source!r} is not one of shipped, checkpoint, torchvision, keras, flax")


def _model_from_factory(spec: str, kwargs: Mapping):
    """``module.path:function`` imported and called with kwargs; it must return an hbjax Model."""
    import importlib

    from hbjax.models import Model

    module_name, _, attr = str(spec).partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model.factory must look like 'package.module:function'; got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"model.factory {spec!r} cannot be imported: {e}") from None
    model = factory(**dict(kwargs))
    if not isinstance(model, Model):
        raise ConfigError(
            f"model.factory {spec!r} returned {type(model).__name__}, not an hbjax Model "
            "(build one with hbjax.models.from_flax, from_nnx or from_apply)"
        )
    return model


# ------------------------------------------------------------------------------------------ data
@dataclasses.dataclass
class DataSource:
    """Batches of (images float32 [0, 1] NHWC, labels int32, ids) in a fixed order, read lazily.

    ``iterate(skip)`` yields ``(batch_index, images, labels, ids)`` for every batch not in ``skip``
    (finished batches of a resumed run are not decoded again where the source allows it).
    """

    class_names: list[str]
    num_batches: int
    iterate: Callable[[set], Iterator[tuple[int, np.ndarray, np.ndarray, list[str]]]]
    description: str

    def first_batch(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        for _, x, y, ids in self.iterate(set()):
            return x, y, ids
        raise ConfigError(f"{self.description}: no readable image")


def open_data(cfg: Mapping, *, num_examples: int | None, batch_size: int, seed: int) -> DataSource:
    """Opens the data source of the ``data`` config group; fails early when it is unusable.

    ``sample`` is the CIFAR-10 test sample shipped in the package (an image folder inside it).
    Image folders are read in a fixed pseudo-random order (``seed``) so that the first
    ``num_examples`` images cover every class; tfds splits in their own order.
    """
    from hbjax.data import DataError, ImageFolder, Preprocess, seeded_order

    source = cfg.get("source", "folder")
    preprocess = Preprocess(cfg.get("preprocess", "cifar"))
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    if source == "sample":
        from hbjax.data import cifar10_sample_root

        if cfg.get("name", "cifar10") != "cifar10":
            raise ConfigError(f"data.name: the shipped sample is cifar10, got {cfg.get('name')!r}")
        cfg = {**cfg, "source": "folder", "root": cifar10_sample_root()}
        source = "folder"
    if source == "folder":
        root = _get(cfg, "root", "data")
        try:
            folder = ImageFolder(
                root, cfg.get("split"), preprocess, class_names=cfg.get("class_names"), num_workers=4
            )
        except DataError as e:
            raise ConfigError(str(e)) from None
        order = seeded_order(len(folder), seed)
        if num_examples is not None:
            order = order[:num_examples]
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

        def iterate(skip: set):
            for b, chunk in enumerate(chunks):
                if b in skip:
                    continue
                out = list(folder.batches(len(chunk), indices=chunk))
                if out:
                    x, y, paths = out[0]
                    yield b, x, y, [os.path.relpath(p, folder.base) for p in paths]
                else:  # every file of the batch was unreadable
                    yield b, np.zeros((0, preprocess.size, preprocess.size, 3), np.float32), np.zeros(0, np.int32), []

        return DataSource(list(folder.class_names), len(chunks), iterate, f"folder {folder.base}")
    if source == "tfds":
        from hbjax.data import load_tfds

        name = _get(cfg, "name", "data")
        try:
            ds = load_tfds(
                name, cfg.get("split", "test"), data_dir=cfg.get("data_dir"),
                manual_dir=cfg.get("manual_dir"), batch_size=batch_size, preprocess=preprocess,
                limit=num_examples,
            )  # fmt: skip
        except DataError as e:
            raise ConfigError(str(e)) from None
        total = ds.num_examples if num_examples is None else min(num_examples, ds.num_examples or num_examples)
        if not total:
            raise ConfigError(f"tfds {name}: the split holds no examples")

        def iterate(skip: set):
            for b, (x, y) in enumerate(ds):
                if b not in skip:
                    ids = [f"{name}/{cfg.get('split', 'test')}/{b * batch_size + i}" for i in range(len(y))]
                    yield b, x, y, ids

        num_batches = -(-total // batch_size)
        return DataSource(list(ds.class_names), num_batches, iterate, f"tfds {name}")
    raise ConfigError(f"data.source {source!r} is not one of sample, folder, tfds")


# --------------------------------------------------------------------------------------- metrics
def coverage_pair(value: Any) -> tuple[float, float]:
    """metrics.coverage: a float (both C_b and C_a) or a pair (C_b, C_a), each in (0, 1], checked
    by :func:`hbjax.metrics.ndcg`'s own check."""
    from hbjax.metrics import _check_coverage

    try:
        return _check_coverage(value if isinstance(value, (int, float)) else list(value))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"metrics.coverage: {e}") from None


def sigma_value(value: Any) -> float | tuple[float, float]:
    """defense.sigma: a float or a (low, high) pair with 0 < low <= high (a pair low == high is
    that float), checked by :mod:`hbjax.defense`'s own check."""
    from hbjax.defense import _check_sigma

    try:
        return _check_sigma(value if isinstance(value, (int, float)) else list(value))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"defense.sigma: {e}") from None


# -------------------------------------------------------------------------------------- assemble
def build_components(cfg: Mapping, model) -> Components:
    """Every callable of the protocol, jitted, from the composed config."""
    import hbjax

    ks = tuple(int(k) for k in cfg["metrics"]["ks"])
    if not ks or min(ks) < 1:
        raise ConfigError(f"metrics.ks must be positive integers, got {ks}")
    coverage = coverage_pair(cfg["metrics"]["coverage"])
    relevance = cfg["metrics"].get("relevance", "logit")
    if relevance not in ("logit", "prob"):
        raise ConfigError(f"metrics.relevance must be 'logit' or 'prob', got {relevance!r}")

    defense_cfg = cfg["defense"]
    sigma = sigma_value(defense_cfg["sigma"])
    binarize = dict(defense_cfg.get("binarize", {}))
    lrp_cfg = cfg["lrp"]
    defense_kwargs = dict(
        sigma=sigma, composite=lrp_cfg["composite"], method=lrp_cfg.get("method", "lrp"),
        binarize=binarize,
    )  # fmt: skip
    attack_cfg = cfg["attack"]
    targeted = bool(attack_cfg.get("targeted", False))
    target_mode = attack_cfg.get("target", "random")
    if target_mode not in TARGET_MODES:
        raise ConfigError(f"attack.target must be one of {TARGET_MODES}, got {target_mode!r}")

    params = model.params
    apply = xla.jit(model.apply)
    try:
        clean_fn = xla.jit(hbjax.defense.heat_and_blur_fn(model, **defense_kwargs))
    except ValueError as e:
        raise ConfigError(f"defense/lrp: {e}") from None

    def forward(x):
        return apply(params, x)

    def clean(x, key):
        return clean_fn(params, x, key)

    num_classes = model.num_classes
    ndcg_ks = ks + (num_classes,)

    @xla.jit
    def ndcg(benign_logits, other_logits):
        return hbjax.metrics.ndcg(
            benign_logits, other_logits, ks=ndcg_ks, coverage=coverage, relevance=relevance
        )

    attack = build_attack(attack_cfg, model, defense_kwargs)
    return Components(forward, attack, clean, ndcg, ks, targeted, target_mode)


def build_attack(attack_cfg: Mapping, model, defense_kwargs: Mapping) -> Callable:
    """(x, labels, key, targets) -> AttackResult for the ``attack`` config group."""
    import hbjax

    name = _get(attack_cfg, "name", "attack")
    try:
        attack_fn = hbjax.attacks.get(name)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"attack.name: {e}") from None
    params = dict(attack_cfg.get("params", {}) or {})
    accepted = inspect.signature(attack_fn).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"attack.params: {name} takes no {unknown}; its options are "
            f"{sorted(k for k, p in accepted.items() if p.kind == p.KEYWORD_ONLY)}"
        )
    targeted = bool(attack_cfg.get("targeted", False))
    logits_fn = hbjax.attacks.model_logits(model)
    if attack_cfg.get("defended", False):
        # attack the defended classifier itself (BPDA through the mask and argmax, a fresh sigma
        # draw per query or EOT sample); only attacks that take a randomised classifier can
        if not hbjax.attacks.metadata(name)["accepts_randomized"]:
            raise ConfigError(f"attack.defended: {name} cannot attack the defended classifier")
        logits_fn = hbjax.attacks.defended_logits(model, defense=dict(defense_kwargs))
    if hbjax.attacks.metadata(name)["needs_model"]:
        # adaptive attacks act on the defended model and need its parts (LRP, blur)
        params = dict(params, defense=dict(defense_kwargs))

        def run(x, labels, key, targets):
            return attack_fn(model, x, labels, key, targeted=targeted, targets=targets, **params)

        return run

    def run(x, labels, key, targets):
        return attack_fn(logits_fn, x, labels, key, targeted=targeted, targets=targets, **params)

    return run


def check_model_fits_data(model, data: DataSource) -> None:
    if model.num_classes != len(data.class_names):
        raise ConfigError(
            f"the model has {model.num_classes} classes but the data has {len(data.class_names)} "
            f"({data.description}); is it the right checkpoint?"
        )

