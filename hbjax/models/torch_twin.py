"""The same network in torch, for comparisons with torch-based reference frameworks (torchattacks,
foolbox): same weights, NCHW input in [0, 1], the same logits up to float round-off."""

from __future__ import annotations

from typing import Any

import numpy as np

from hbjax.models.model import Model


def to_torch(model: Model) -> Any:
    """A ``torch.nn.Sequential`` in eval mode computing ``model``'s logits from NCHW images in
    [0, 1]: the model's input normalisation (channel flip for BGR sources), conv kernels
    HWIO -> OIHW, dense kernels (in, out) -> (out, in), flatten in NHWC order (a permute before
    flattening). Supports the layer kinds conv (3x3, padding 1), relu, maxpool (2x2), flatten,
    dense and dropout (dropped: eval mode); batch-norm models must be folded first
    (:func:`hbjax.models.fold_batchnorm`). Needs torch (the ``test`` extra)."""
    try:
        import torch
        from torch import nn
    except ImportError as e:  # pragma: no cover - torch is in the test extra
        raise ImportError("hbjax.models.to_torch needs torch: pip install 'hbjax[test]'") from e

    norm = model.normalization

    class Normalize(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor(norm.mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(norm.std).view(1, 3, 1, 1))
            self.bgr = norm.channel_order == "BGR"

        def forward(self, x):
            if self.bgr:
                x = x.flip(1)
            return (x - self.mean) / self.std

    class FlattenNHWC(nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)

    def tensor(a) -> Any:
        return torch.from_numpy(np.ascontiguousarray(np.asarray(a)))

    params = model.params["params"]
    modules: list = [Normalize()]
    channels = 3
    for layer in model.layers:
        if layer.kind == "conv":
            conv = nn.Conv2d(channels, layer.features, 3, padding=1)
            conv.weight.data = tensor(np.asarray(params[layer.name]["kernel"]).transpose(3, 2, 0, 1))
            conv.bias.data = tensor(params[layer.name]["bias"])
            modules.append(conv)
            channels = layer.features
        elif layer.kind == "relu":
            modules.append(nn.ReLU())
        elif layer.kind == "maxpool":
            modules.append(nn.MaxPool2d(2))
        elif layer.kind == "flatten":
            modules.append(FlattenNHWC())
        elif layer.kind == "dense":
            kernel = np.asarray(params[layer.name]["kernel"])
            dense = nn.Linear(*kernel.shape)
            dense.weight.data = tensor(kernel.T)
            dense.bias.data = tensor(params[layer.name]["bias"])
            modules.append(dense)
        elif layer.kind != "dropout":
            raise ValueError(f"to_torch: no torch twin for layer kind {layer.kind!r}")
    return nn.Sequential(*modules).eval()
