"""Image folders in the ``root/split/class/image`` layout, decoded with Pillow.

Yields batches of float32 [0, 1] NHWC arrays and int32 labels. Every Pillow mode is converted to
RGB with its values scaled (16-bit and float images included; alpha dropped, see :func:`to_rgb8`); files that are not images or are corrupt are skipped and
counted in :attr:`ImageFolder.skipped`, never a crash mid-run.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import warnings
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from hbjax.data.preprocess import Preprocess, preprocess_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


from hbjax.errors import DataError  # noqa: E402  (re-exported: hbjax.data.DataError)


def to_rgb8(img: Image.Image) -> Image.Image:
    """An image of any Pillow mode as 8-bit RGB, its values scaled, never clipped to white:

    - ``I;16`` (16-bit grayscale: PNG, TIFF) and ``I`` (32-bit integers; 16-bit data in practice):
      v / 65535 * 255, rounded (``I`` clipped to [0, 65535] first);
    - ``F`` (32-bit float): values in [0, 1] when the image's maximum is at most 1, else Pillow's
      0-255 scale; clipped, rounded;
    - alpha (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour): dropped, as
      torchvision's ``ImageFolder`` does (the stored colours are kept);
    - every other mode (``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ...): Pillow's ``convert("RGB")``.
    """
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode == "I":
        v = np.clip(np.asarray(img, dtype=np.float64), 0, 65535) / 65535.0 * 255.0
        return Image.fromarray(np.round(v).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        v = np.asarray(img, dtype=np.float64)
        v = v * 255.0 if v.size and np.nanmax(v) <= 1.0 else v
        return Image.fromarray(np.round(np.clip(np.nan_to_num(v), 0, 255)).astype(np.uint8), "L").convert("RGB")
    if "A" in img.mode or "a" in img.mode or (img.mode == "P" and "transparency" in img.info):
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def load_image(path: str, preprocess: Preprocess) -> np.ndarray:
    """Decodes one image file to uint8 (H, W, 3) RGB following ``preprocess`` (modes other than
    RGB through :func:`to_rgb8`). Raises PIL's errors (``UnidentifiedImageError``, ``OSError`` for
    truncated files, ...) on bad files."""
    with Image.open(path) as img:
        img.load()
        return preprocess_image(to_rgb8(img), preprocess)


@dataclasses.dataclass
class ImageFolder:
    """Images under ``root/split/<class>/`` (or ``root/<class>/`` when split is None).

    Classes are the sorted sub-folder names (the ILSVRC-2012 and CIFAR-10 index orders), unless
    ``class_names`` gives the order. Files directly in the split folder are ignored.
    """

    root: str
    split: str | None = None
    preprocess: Preprocess = dataclasses.field(default_factory=lambda: Preprocess("cifar"))
    class_names: Sequence[str] | None = None
    limit_per_class: int | None = None
    num_workers: int = 4

    def __post_init__(self) -> None:
        base = os.path.join(self.root, self.split) if self.split else self.root
        if not os.path.isdir(base):
            raise DataError(f"data folder {base!r} does not exist")
        folders = sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))
        if self.class_names is None:
            self.class_names = folders
        else:
            missing = sorted(set(folders) - set(self.class_names))
            if missing:
                raise DataError(f"{base}: folders {missing[:5]} are not among the given class names")
        index = {name: i for i, name in enumerate(self.class_names)}
        files: list[tuple[str, int]] = []
        for folder in folders:
            names = sorted(
                n for n in os.listdir(os.path.join(base, folder)) if not n.startswith(".")
            )
            if self.limit_per_class is not None:
                names = names[: self.limit_per_class]
            files.extend((os.path.join(base, folder, n), index[folder]) for n in names)
        if not files:
            raise DataError(f"data folder {base!r} holds no images (expected {base}/<class>/<image>)")
        self.base = base
        self.files = files
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.files)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([label for _, label in self.files], np.int32)

    def _decode(self, path: str) -> np.ndarray | None:
        try:
            return load_image(path, self.preprocess)
        except Exception as e:  # a corrupt file must not stop a run; it is reported instead
            self.skipped.append((path, f"{type(e).__name__}: {e}"))
            return None

    def batches(
        self, batch_size: int, *, indices: Sequence[int] | None = None, dtype=np.float32
    ) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
        """Yields (images (B, H, W, 3) in [0, 1], labels (B,), paths) in file order.

        A skipped file shortens its batch; the last batch may be smaller.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        order = list(range(len(self.files))) if indices is None else list(indices)
        self.skipped = []
        with concurrent.futures.ThreadPoolExecutor(self.num_workers) as pool:
            for start in range(0, len(order), batch_size):
                chunk = [self.files[i] for i in order[start : start + batch_size]]
                decoded = list(pool.map(self._decode, [p for p, _ in chunk]))
                keep = [(img, lab, p) for img, (p, lab) in zip(decoded, chunk) if img is not None]
                if not keep:
                    continue
                images = np.stack([k[0] for k in keep]).astype(dtype) / np.asarray(255, dtype)
                labels = np.asarray([k[1] for k in keep], np.int32)
                yield images, labels, [k[2] for k in keep]
        if self.skipped:
            warnings.warn(self.skipped_report(), stacklevel=2)

    def load_uint8(self) -> tuple[np.ndarray, np.ndarray]:
        """All images as uint8 (N, H, W, 3) and labels (N,); skipped files are left out."""
        self.skipped = []
        with concurrent.futures.ThreadPoolExecutor(self.num_workers) as pool:
            decoded = list(pool.map(self._decode, [p for p, _ in self.files]))
        keep = [i for i, img in enumerate(decoded) if img is not None]
        if not keep:
            n, report = len(self.files), self.skipped_report()
            raise DataError(f"none of the {n} files under {self.base} is readable\n{report}")
        if self.skipped:
            warnings.warn(self.skipped_report(), stacklevel=2)
        images = np.stack([decoded[i] for i in keep])
        labels = np.asarray([self.files[i][1] for i in keep], np.int32)
        return images, labels

    def skipped_report(self) -> str:
        lines = [f"{len(self.skipped)} file(s) under {self.base} were skipped:"]
        lines += [f"  {p}: {why}" for p, why in self.skipped[:10]]
        if len(self.skipped) > 10:
            lines.append(f"  ... and {len(self.skipped) - 10} more")
        return "\n".join(lines)
