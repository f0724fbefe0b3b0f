"""Weight porting from torchvision state dicts and Keras HDF5 files.

torchvision: conv kernels OIHW -> HWIO; dense (out, in) -> (in, out); the first dense layer's input
rows reordered from the NCHW flatten order (c, h, w) to NHWC (h, w, c).
Keras: kernels are already HWIO / (in, out) and Keras flattens NHWC; the model takes BGR 0-255 minus
the ImageNet BGR means ("caffe" preprocessing), which becomes the model's normalisation.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

from hbjax.models.layers import LayerSpec
from hbjax.models.model import Model
from hbjax.models.vgg import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    KERAS_CAFFE_MEAN_BGR,
    KERAS_CAFFE_STD,
    VGG_CONFIGS,
    Normalization,
    flatten_dim,
    vgg_layers,
)


from hbjax.errors import PortingError  # noqa: E402  (re-exported: hbjax.models.PortingError)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _parse_arch(arch: str) -> tuple[str, bool]:
    base = arch[:-3] if arch.endswith("_bn") else arch
    if base not in VGG_CONFIGS:
        raise PortingError(
            f"unknown architecture {arch!r}; expected one of "
            f"{sorted(VGG_CONFIGS) + [a + '_bn' for a in sorted(VGG_CONFIGS)]}"
        )
    return base, arch.endswith("_bn")


def torchvision_key_map(layers: tuple[LayerSpec, ...]) -> dict[str, str]:
    """hbjax layer name -> torchvision module prefix ("features.0", "classifier.3", ...)."""
    mapping: dict[str, str] = {}
    index = 0
    in_classifier = False
    for layer in layers:
        if layer.kind == "adaptive_avgpool":
            continue
        if layer.kind == "flatten":
            in_classifier, index = True, 0
            continue
        prefix = "classifier" if in_classifier else "features"
        if layer.has_params:
            mapping[layer.name] = f"{prefix}.{index}"
        index += 1
    return mapping


def from_torchvision(
    arch: str,
    state_dict: Mapping[str, Any],
    *,
    class_names: list[str] | None = None,
    input_size: tuple[int, int] = (224, 224),
) -> Model:
    """A Model from a torchvision VGG state dict (values: numpy arrays or torch tensors).

    ``arch``: "vgg11" ... "vgg19", or "vgg11_bn" ... "vgg19_bn" (batch norm is kept; fold it with
    :func:`hbjax.models.fold_batchnorm`). The number of classes follows the last layer's shape.
    """
    base, batchnorm = _parse_arch(arch)
    sd = {k: _to_numpy(v) for k, v in state_dict.items()}
    last_key = "classifier.6.weight"
    if last_key not in sd:
        raise PortingError(f"state dict for {arch} has no {last_key!r}; is it a torchvision VGG?")
    num_classes = int(sd[last_key].shape[0])
    layers = vgg_layers(base, num_classes=num_classes, batchnorm=batchnorm)
    key_map = torchvision_key_map(layers)
    h, w, c = flatten_dim(layers, input_size)
    params: dict = {}
    stats: dict = {}
    used: set[str] = set()

    def take(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in sd:
            raise PortingError(f"state dict for {arch} is missing tensor {key!r}")
        value = sd[key]
        if tuple(value.shape) != shape:
            raise PortingError(
                f"tensor {key!r} has shape {tuple(value.shape)}, expected {shape} for {arch}"
            )
        used.add(key)
        return value.astype(np.float32)

    in_channels = 3
    first_dense = True
    for layer in layers:
        if layer.name not in key_map:
            continue
        prefix = key_map[layer.name]
        if layer.kind == "conv":
            kernel = take(f"{prefix}.weight", (layer.features, in_channels, 3, 3))
            params[layer.name] = {
                "kernel": np.transpose(kernel, (2, 3, 1, 0)),
                "bias": take(f"{prefix}.bias", (layer.features,)),
            }
            in_channels = layer.features
        elif layer.kind == "batchnorm":
            n = in_channels
            params[layer.name] = {
                "scale": take(f"{prefix}.weight", (n,)),
                "bias": take(f"{prefix}.bias", (n,)),
            }
            stats[layer.name] = {
                "mean": take(f"{prefix}.running_mean", (n,)),
                "var": take(f"{prefix}.running_var", (n,)),
            }
            used.add(f"{prefix}.num_batches_tracked")
        elif layer.kind == "dense":
            if first_dense:
                weight = take(f"{prefix}.weight", (layer.features, c * h * w))
                # rows of the torch flatten are (c, h, w); ours are (h, w, c)
                weight = weight.reshape(layer.features, c, h, w).transpose(2, 3, 1, 0)
                kernel = weight.reshape(h * w * c, layer.features)
                first_dense = False
                in_features = layer.features
            else:
                kernel = take(f"{prefix}.weight", (layer.features, in_features)).T
                in_features = layer.features
            params[layer.name] = {
                "kernel": np.ascontiguousarray(kernel),
                "bias": take(f"{prefix}.bias", (layer.features,)),
            }
    unused = sorted(set(sd) - used)
    if unused:
        raise PortingError(f"state dict for {arch} has unexpected tensors: {unused[:5]}")
    variables = {"params": params}
    if stats:
        variables["batch_stats"] = stats
    meta = {
        "arch": arch,
        "num_classes": num_classes,
        "input_size": list(input_size),
        "source": "torchvision",
        "class_names": class_names,
    }
    return Model(layers, Normalization(IMAGENET_MEAN, IMAGENET_STD), variables, meta)


# Keras VGG layer names: block{b}_conv{i}, fc1, fc2, predictions.
def _keras_names(layers: tuple[LayerSpec, ...]) -> dict[str, str]:
    names: dict[str, str] = {}
    dense = [layer for layer in layers if layer.kind == "dense"]
    for layer in layers:
        if layer.kind == "conv":
            block, index = layer.name[len("conv") :].split("_")
            names[layer.name] = f"block{block}_conv{index}"
    for i, layer in enumerate(dense):
        names[layer.name] = "predictions" if i == len(dense) - 1 else f"fc{i + 1}"
    return names


def _read_keras_weights(path: str) -> dict[str, list[np.ndarray]]:
    """Layer name -> [kernel, bias] from a legacy Keras HDF5 file (``layer_names`` attribute, maybe
    under ``model_weights``) or a Keras 3 ``*.weights.h5`` file (``layers/<name>/vars/<i>``)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise PortingError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        out: dict[str, list[np.ndarray]] = {}
        if "layer_names" in root.attrs:
            for raw in root.attrs["layer_names"]:
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                group = root[name]
                weight_names = [
                    w.decode() if isinstance(w, bytes) else str(w)
                    for w in group.attrs.get("weight_names", [])
                ]
                if weight_names:
                    out[name] = [np.asarray(group[w]) for w in weight_names]
            return out
        if "layers" in root:
            # Keras 3 keys layers by class ("conv2d", "conv2d_1", ...); since Keras 3.x the
            # layer's own name is the "name" attribute of its "vars" group.
            layers = root["layers"]
            for key in layers:
                vars_group = layers[key].get("vars")
                if vars_group is not None and len(vars_group):
                    name = vars_group.attrs.get("name", key)
                    name = name.decode() if isinstance(name, bytes) else str(name)
                    out[name] = [np.asarray(vars_group[str(i)]) for i in range(len(vars_group))]
            return out
    raise PortingError(
        f"{path}: neither a legacy Keras weight file (no 'layer_names' attribute) "
        "nor a Keras 3 '.weights.h5' file (no 'layers' group)"
    )


def _keras3_by_order(
    weights: dict[str, list[np.ndarray]], names: list[str], path: str
) -> dict[str, list[np.ndarray]]:
    """Renames the class-keyed layers of a Keras 3 file without layer names ("conv2d",
    "conv2d_1", ..., "dense", "dense_1", ...; numbered in model order) to the VGG layer names."""

    def ordered(prefix: str) -> list[str]:
        keys = [k for k in weights if k == prefix or re.fullmatch(rf"{prefix}_\d+", k)]
        return sorted(keys, key=lambda k: int(k[len(prefix) + 1 :] or 0))

    convs, denses = ordered("conv2d"), ordered("dense")
    conv_names = [n for n in names if n.startswith("block")]
    dense_names = [n for n in names if not n.startswith("block")]
    if len(convs) != len(conv_names) or len(denses) != len(dense_names):
        raise PortingError(
            f"{path}: Keras 3 file with {len(convs)} conv and {len(denses)} dense layers; "
            f"expected {len(conv_names)} and {len(dense_names)}"
        )
    renamed = dict(zip(conv_names + dense_names, convs + denses))
    out = {new: weights[old] for new, old in renamed.items()}
    out.update({k: v for k, v in weights.items() if k not in renamed.values()})
    return out


def from_keras(
    arch: str,
    h5_path: str | os.PathLike,
    *,
    class_names: list[str] | None = None,
) -> Model:
    """A Model from a Keras VGG16/VGG19 weight file (``keras.applications`` layout, include_top).

    Keras models take 224x224 BGR images in 0-255 minus the ImageNet means; hbjax folds that into the
    model's normalisation, so the ported model takes RGB in [0, 1] like every other.
    """
    base, batchnorm = _parse_arch(arch)
    if batchnorm:
        raise PortingError("Keras VGG models have no batch norm variant")
    path = os.fspath(h5_path)
    weights = _read_keras_weights(path)
    layer_names = _keras_names(vgg_layers(base))
    if "predictions" not in weights and "dense" in weights:
        weights = _keras3_by_order(weights, list(layer_names.values()), path)
    if "predictions" not in weights:
        raise PortingError(f"{path}: no 'predictions' layer; is it a Keras VGG with include_top?")
    num_classes = int(weights["predictions"][0].shape[-1])
    layers = vgg_layers(base, num_classes=num_classes)
    names = _keras_names(layers)
    params: dict = {}
    in_channels = 3
    in_features = 7 * 7 * 512
    for layer in layers:
        if not layer.has_params:
            continue
        keras_name = names[layer.name]
        if keras_name not in weights:
            raise PortingError(f"{path}: missing layer {keras_name!r} for {arch}")
        values = weights[keras_name]
        if len(values) != 2:
            raise PortingError(f"{path}: layer {keras_name!r} has {len(values)} tensors, expected 2")
        kernel, bias = values
        if layer.kind == "conv":
            expected = (3, 3, in_channels, layer.features)
            in_channels = layer.features
        else:
            expected = (in_features, layer.features)
            in_features = layer.features
        if kernel.shape != expected or bias.shape != (layer.features,):
            raise PortingError(
                f"{path}: layer {keras_name!r} has shapes {kernel.shape}, {bias.shape}; "
                f"expected {expected}, ({layer.features},)"
            )
        params[layer.name] = {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}
    extra = sorted(set(weights) - set(names.values()))
    if extra:
        raise PortingError(f"{path}: unexpected layers for {arch}: {extra[:5]}")
    meta = {
        "arch": arch,
        "num_classes": num_classes,
        "input_size": [224, 224],
        "source": "keras",
        "class_names": class_names,
    }
    norm = Normalization(KERAS_CAFFE_MEAN_BGR, KERAS_CAFFE_STD, channel_order="BGR")
    return Model(layers, norm, {"params": params}, meta)
