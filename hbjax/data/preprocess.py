"""Image preprocessing to uint8 HWC RGB arrays.

- ``imagenet``: resize the shorter side to ``resize`` (256, bilinear with antialiasing, as
  torchvision's ``Resize``), then centre-crop ``size`` x ``size`` (224).
- ``cifar``: images are used as they are when already ``size`` x ``size`` (32), else resized
  (bilinear) to it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Preprocess:
    kind: str = "cifar"
    size: int = 0
    resize: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("cifar", "imagenet"):
            raise ValueError(f"preprocess kind must be 'cifar' or 'imagenet', got {self.kind!r}")
        if self.size == 0:
            object.__setattr__(self, "size", 32 if self.kind == "cifar" else 224)
        if self.resize == 0:
            object.__setattr__(self, "resize", self.size if self.kind == "cifar" else 256)
        if self.resize < self.size:
            raise ValueError(f"resize ({self.resize}) must be >= crop size ({self.size})")


def preprocess_image(img: Image.Image, p: Preprocess) -> np.ndarray:
    """A PIL RGB image -> uint8 array (size, size, 3) following ``p``."""
    if p.kind == "cifar":
        if img.size != (p.size, p.size):
            img = img.resize((p.size, p.size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)
    w, h = img.size
    scale = p.resize / min(w, h)
    new_w, new_h = max(p.resize, round(w * scale)), max(p.resize, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    left = int(round((new_w - p.size) / 2.0))
    top = int(round((new_h - p.size) / 2.0))
    img = img.crop((left, top, left + p.size, top + p.size))
    return np.asarray(img, dtype=np.uint8)
