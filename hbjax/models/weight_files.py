"""Reading weight files: torchvision state dicts (.pth through ``torch.load(weights_only=True)``, or
.safetensors) and Keras VGG weight files (.h5), into an hbjax :class:`~hbjax.models.Model`.

Library code (the evaluation app, ``hbjax-port``) reads weights through :func:`from_weight_file`;
nothing here unpickles arbitrary objects.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hbjax.errors import HbjaxError
from hbjax.models.checkpoint import FORMAT
from hbjax.models.porting import from_keras, from_torchvision

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
KERAS_SUFFIXES = (".h5", ".hdf5")


class WeightFileError(HbjaxError):
    """The file cannot be read as weights (missing, wrong format, unsafe content, missing tool)."""


def _unwrap(obj: Any, path: str) -> dict[str, Any]:
    """The tensor mapping inside a loaded .pth (a state dict, or one under "state_dict"/"model");
    a ``module.`` prefix (DataParallel) is removed."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(hasattr(v, "shape") for v in obj.values()):
        raise WeightFileError(f"{path}: not a state dict (a mapping of tensor names to tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def read_torch(path: str) -> dict[str, Any]:
    """A torchvision state dict from a .pth file, through ``torch.load(weights_only=True)``."""
    try:
        import torch
    except ImportError:
        raise WeightFileError(f"{path}: reading .pth files needs torch (pip install torch)") from None
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # UnpicklingError for unsafe content, RuntimeError for corrupt zips
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightFileError(
            f"{path}: torch.load(weights_only=True) refused or failed to read the file ({first}); "
            "only plain state dicts of tensors are accepted"
        ) from None
    return _unwrap(obj, path)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """A state dict stored in safetensors (e.g. ``safetensors.torch.save_file(model.state_dict())``)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            if (f.metadata() or {}).get("format") == FORMAT:
                raise WeightFileError(f"{path}: already an hbjax checkpoint; load it with hbjax.models.load")
            return {key: f.get_tensor(key) for key in f.keys()}
    except WeightFileError:
        raise
    except Exception as e:
        raise WeightFileError(f"{path}: not a readable safetensors file ({e})") from None


def read_state_dict(path: str) -> dict[str, Any]:
    """A torchvision state dict from a .pth/.pt/.bin or a .safetensors file (by its suffix)."""
    suffix = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise WeightFileError(f"{path}: no such file")
    if suffix in SAFETENSORS_SUFFIXES:
        return read_safetensors(path)
    if suffix in TORCH_SUFFIXES:
        return read_torch(path)
    raise WeightFileError(
        f"{path}: unknown state-dict file type {suffix!r}; expected one of {TORCH_SUFFIXES + SAFETENSORS_SUFFIXES}"
    )


def from_weight_file(path: str, arch: str, *, input_size: int = 224, source: str | None = None):
    """The hbjax Model for the VGG weights in ``path``.

    Args:
      path: a torchvision state dict (.pth/.pt/.bin, .safetensors) or a Keras VGG weight file (.h5).
      arch: ``vgg11`` .. ``vgg19`` (``_bn`` for batch-norm variants; Keras: vgg16, vgg19).
      input_size: the input side recorded in the metadata (torchvision weights).
      source: ``"torchvision"`` or ``"keras"`` to insist on one kind (a file of the other kind is an
        error); None chooses by the suffix.

    Raises:
      WeightFileError: a missing file, an unknown suffix, a file of the other kind, unsafe content.
      hbjax.models.PortingError: weights that do not fit ``arch``.
    """
    suffix = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise WeightFileError(f"{path}: no such file")
    kind = "keras" if suffix in KERAS_SUFFIXES else "torchvision" if suffix in TORCH_SUFFIXES + SAFETENSORS_SUFFIXES else None
    if kind is None:
        raise WeightFileError(
            f"{path}: unknown weight file type {suffix!r}; expected one of "
            f"{TORCH_SUFFIXES + SAFETENSORS_SUFFIXES + KERAS_SUFFIXES}"
        )
    if source is not None and source != kind:
        raise WeightFileError(f"{path}: a {kind} weight file, but the model source is {source!r}")
    if kind == "keras":
        model = from_keras(arch, path)
    else:
        model = from_torchvision(arch, read_state_dict(path), input_size=(input_size, input_size))
    return model.replace(meta=dict(model.meta, source_file=os.path.basename(path)))
