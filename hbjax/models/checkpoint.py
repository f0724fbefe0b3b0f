"""Checkpoints in safetensors: tensors named ``<collection>/<layer>/<param>``, metadata as JSON.

No pickle anywhere: a checkpoint is a flat table of named arrays plus strings. Loading checks every
tensor against the architecture the metadata describes and names the file and tensor on a mismatch.
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib import resources
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hbjax.models.layers import LayerSpec
from hbjax.models.model import Model
from hbjax.models.vgg import Normalization, Sequential

FORMAT = "hbjax-checkpoint"
FORMAT_VERSION = "1"
SHIPPED = {"vgg19_cifar": "vgg19_cifar.safetensors"}
# Pretrained models converted on first use from a weight package into the cache
# (hbjax.models.efficientnet_weights).
CONVERTED = ("efficientnet_lite0",)


from hbjax.errors import CheckpointError  # noqa: E402  (re-exported: hbjax.models.CheckpointError)


def _flatten(variables: dict) -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for collection, layers in variables.items():
        for layer, tensors in layers.items():
            for name, value in tensors.items():
                flat[f"{collection}/{layer}/{name}"] = np.ascontiguousarray(np.asarray(value))
    return flat


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    variables: dict = {}
    for key, value in flat.items():
        collection, layer, name = key.split("/")
        variables.setdefault(collection, {}).setdefault(layer, {})[name] = value
    return variables


def save(model: Model, path: str | os.PathLike) -> str:
    """Writes the model to ``path`` (safetensors) atomically; returns the path."""
    from safetensors.numpy import save_file

    if (model.meta or {}).get("family") == "efficientnet_lite":
        from hbjax.models.efficientnet_weights import save as save_efficientnet

        return save_efficientnet(model, path)
    path = os.fspath(path)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": json.dumps(model.meta),
        "layers": json.dumps([layer.to_dict() for layer in model.layers]),
        "normalization": json.dumps(model.normalization.to_dict()),
    }
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(_flatten(model.params), tmp, metadata=metadata)
        # mkstemp creates 0600 and save_file may recreate the file: set an ordinary file's mode last
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def expected_shapes(layers: tuple[LayerSpec, ...], normalization: Normalization, input_size) -> dict:
    """Tensor name -> shape that the architecture needs (computed abstractly, no allocation)."""
    module = Sequential(layers, normalization)
    x = jax.ShapeDtypeStruct((1, *input_size, 3), jnp.float32)
    shapes = jax.eval_shape(
        lambda x: module.init({"params": jax.random.key(0), "dropout": jax.random.key(0)}, x), x
    )
    return {k: tuple(v.shape) for k, v in _flatten_shapes(dict(shapes)).items()}


def _flatten_shapes(variables: dict) -> dict:
    out = {}
    for collection, layers in variables.items():
        for layer, tensors in layers.items():
            for name, value in tensors.items():
                out[f"{collection}/{layer}/{name}"] = value
    return out


def shipped_path(name: str) -> str:
    return str(resources.files("hbjax") / "weights" / SHIPPED[name])


def load(name_or_path: str | os.PathLike) -> Model:
    """A shipped model by name (``"vgg19_cifar"``), a pretrained one converted on first use
    (``"efficientnet_lite0"``, needs ``pip install "hbjax[imagenet]"``), or a checkpoint file."""
    name = os.fspath(name_or_path)
    if name in CONVERTED:
        from hbjax.models.efficientnet_weights import load_pretrained

        return load_pretrained(name)
    if name in SHIPPED:
        path = shipped_path(name)
        if not os.path.exists(path):
            raise CheckpointError(
                f"the shipped model {name!r} is not in this installation (expected {path}); "
                "train it with scripts/train_cifar.py"
            )
    else:
        path = name
        if not os.path.exists(path):
            raise CheckpointError(
                f"{path}: no such checkpoint file, and not a shipped model name "
                f"({sorted(SHIPPED) + list(CONVERTED)})"
            )
    return _load_file(path)


MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_header(path: str) -> dict:
    """The JSON header of a safetensors file, checked against the file's size.

    The format: 8 bytes little-endian header length n, n bytes of JSON (tensor name -> dtype, shape,
    data_offsets; ``__metadata__``), then the data. A CheckpointError says what is wrong: not a
    safetensors file (and what it starts with), or truncated (naming the first tensor cut off).
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            start = f.read(8)
            n = int.from_bytes(start, "little")
            raw = f.read(n) if len(start) == 8 and 2 <= n <= MAX_HEADER_BYTES else b""
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the file ({e})") from None
    not_safetensors = (
        f"{path}: not an hbjax checkpoint: not a safetensors file (it starts with {start!r})"
    )
    if len(start) < 8 or not 2 <= n <= MAX_HEADER_BYTES:
        raise CheckpointError(not_safetensors)
    if len(raw) < n:
        raise CheckpointError(
            f"{path}: truncated file: the safetensors header needs {8 + n} bytes, the file has {size}"
        )
    try:
        header = json.loads(raw) if raw[:1] == b"{" else None
    except (UnicodeDecodeError, ValueError):
        header = None
    if not isinstance(header, dict):
        raise CheckpointError(not_safetensors)
    data_bytes = size - 8 - n

    def end(item: tuple[str, Any]) -> int:
        offsets = item[1].get("data_offsets") if isinstance(item[1], dict) else None
        ok = isinstance(offsets, list) and len(offsets) == 2 and isinstance(offsets[1], int)
        return offsets[1] if ok else 0

    cut = sorted((kv for kv in header.items() if end(kv) > data_bytes), key=end)
    if cut:
        raise CheckpointError(
            f"{path}: truncated file: tensor {cut[0][0]!r} needs data bytes up to "
            f"{end(cut[0])}, but only {data_bytes} are there ({size} bytes in all)"
        )
    return header


def _load_file(path: str) -> Model:
    from safetensors import safe_open

    read_header(path)
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not an hbjax checkpoint (no '{FORMAT}' metadata)")
            flat = {key: f.get_tensor(key) for key in f.keys()}
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    if metadata.get("family") == "efficientnet_lite":
        from hbjax.models.efficientnet_weights import model_from_checkpoint

        return model_from_checkpoint(path, metadata, flat)
    try:
        meta = json.loads(metadata["meta"])
        layers = tuple(LayerSpec.from_dict(d) for d in json.loads(metadata["layers"]))
        normalization = Normalization.from_dict(json.loads(metadata["normalization"]))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({e})") from None
    expected = expected_shapes(layers, normalization, tuple(meta.get("input_size", (224, 224))))
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
    num_classes = [layer for layer in layers if layer.kind == "dense"][-1].features
    if int(meta.get("num_classes", num_classes)) != num_classes:
        raise CheckpointError(
            f"{path}: metadata says {meta['num_classes']} classes, the last layer has {num_classes}"
        )
    meta["num_classes"] = num_classes
    return Model(layers, normalization, _unflatten(flat), meta)


def describe(model: Model) -> dict[str, Any]:
    """A short summary of a model for logs and the CLI."""
    n = sum(int(np.prod(np.shape(v))) for v in jax.tree.leaves(model.params))
    return {**{k: v for k, v in model.meta.items() if k != "class_names"}, "parameters": n}
