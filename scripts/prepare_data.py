"""Writes the test data folder (``../shared/data`` by default) for a machine that lacks it.

    python scripts/prepare_data.py --out ../shared/data                    # CIFAR-10 (downloads)
    python scripts/prepare_data.py --out ../shared/data --imagenet-dir /data/ILSVRC2012/val

The layout is the one the tests and ``data=folder`` read (see the README of the data folder):

    cifar10/{train,test}/<class>/<NNNN>.jpg       CIFAR-10 through tensorflow-datasets (its binary
                                                  release, no pickle), JPEG quality 95
    imagenet-sample/val/<wnid>/<wnid>_<name>.JPEG one image a class from a local ILSVRC-2012
                                                  validation folder (<wnid>/*.JPEG), shorter side
                                                  256 (bicubic), JPEG quality 90
    imagenet-sample/classes.tsv                   index, wnid, name (index = rank of the wnid)

ImageNet cannot be downloaded without an account, so the ImageNet sample needs ``--imagenet-dir``;
its class names come from torchvision's weight metadata (spaces as underscores). Existing files are
kept, so an interrupted run can be restarted. JPEG re-encoding makes pixels differ slightly from
another copy of the same data (the shared copy is a public mirror's re-encoding).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def _save_jpeg(image: Image.Image, path: str, quality: int) -> None:
    """Writes ``path`` atomically (a temporary file, then a rename)."""
    tmp = path + ".tmp"
    image.save(tmp, format="JPEG", quality=quality)
    os.replace(tmp, path)


def write_image_split(
    images: Iterable[np.ndarray], labels: Iterable[int], class_names: Sequence[str], split_dir: str,
    *, quality: int = 95,
) -> int:  # fmt: skip
    """Writes uint8 (H, W, 3) images as ``split_dir/<class>/<NNNN>.jpg``, numbered per class in the
    order given; returns the number of images written (existing files are kept)."""
    counts = [0] * len(class_names)
    written = 0
    for image, label in zip(images, labels):
        label = int(label)
        folder = os.path.join(split_dir, class_names[label])
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{counts[label]:04d}.jpg")
        counts[label] += 1
        if not os.path.exists(path):
            _save_jpeg(Image.fromarray(np.asarray(image, np.uint8)), path, quality)
            written += 1
    return written


def prepare_cifar10(out: str, data_dir: str | None) -> None:
    """CIFAR-10's train and test splits from tensorflow-datasets (downloads on first use)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        sys.exit("prepare_data: CIFAR-10 needs tensorflow-datasets and tensorflow (pip install -e '.[tf]')")
    builder = tfds.builder("cifar10", data_dir=data_dir)
    builder.download_and_prepare()
    names = builder.info.features["label"].names
    if tuple(names) != CIFAR10_CLASSES:
        sys.exit(f"prepare_data: unexpected CIFAR-10 class order {names}")
    for split in ("train", "test"):
        ds = tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True, shuffle_files=False))
        images, labels = zip(*ds)
        n = write_image_split(images, labels, names, os.path.join(out, "cifar10", split))
        print(f"cifar10/{split}: {len(labels)} images ({n} written)")


def imagenet_class_names() -> list[str]:
    """The 1000 ILSVRC-2012 class names in index order (torchvision's weight metadata)."""
    from torchvision.models import VGG19_Weights

    return [c.replace(" ", "_") for c in VGG19_Weights.IMAGENET1K_V1.meta["categories"]]


def resize_shorter_side(image: Image.Image, side: int) -> Image.Image:
    w, h = image.size
    scale = side / min(w, h)
    return image.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BICUBIC)


def write_imagenet_sample(val_dir: str, out: str, class_names: Sequence[str]) -> int:
    """One image a class (the first in sorted order) of ``val_dir/<wnid>/``, resized, and
    classes.tsv; the wnids must be the 1000 ILSVRC-2012 classes. Returns the images written."""
    wnids = sorted(d for d in os.listdir(val_dir) if os.path.isdir(os.path.join(val_dir, d)))
    if len(wnids) != len(class_names):
        sys.exit(f"prepare_data: {val_dir} holds {len(wnids)} class folders, expected {len(class_names)}")
    root = os.path.join(out, "imagenet-sample")
    written = 0
    for wnid, name in zip(wnids, class_names):
        files = sorted(f for f in os.listdir(os.path.join(val_dir, wnid)) if not f.startswith("."))
        if not files:
            sys.exit(f"prepare_data: {os.path.join(val_dir, wnid)} holds no image")
        folder = os.path.join(root, "val", wnid)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{wnid}_{name}.JPEG")
        if not os.path.exists(path):
            with Image.open(os.path.join(val_dir, wnid, files[0])) as img:
                _save_jpeg(resize_shorter_side(img.convert("RGB"), 256), path, quality=90)
            written += 1
    tsv = "index\twnid\tname\n" + "".join(f"{i}\t{w}\t{n}\n" for i, (w, n) in enumerate(zip(wnids, class_names)))
    with open(os.path.join(root, "classes.tsv") + ".tmp", "w") as f:
        f.write(tsv)
    os.replace(os.path.join(root, "classes.tsv") + ".tmp", os.path.join(root, "classes.tsv"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("HBJAX_DATA", os.path.join("..", "shared", "data")))
    parser.add_argument("--tfds-dir", default=None, help="tensorflow-datasets data_dir (its default: ~/tensorflow_datasets)")
    parser.add_argument("--imagenet-dir", default=None, help="a local ILSVRC-2012 validation folder, <wnid>/*.JPEG")
    parser.add_argument("--skip-cifar10", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_cifar10:
        prepare_cifar10(args.out, args.tfds_dir)
    if args.imagenet_dir:
        n = write_imagenet_sample(args.imagenet_dir, args.out, imagenet_class_names())
        print(f"imagenet-sample/val: 1000 classes ({n} images written)")
    else:
        print("imagenet-sample: skipped (needs --imagenet-dir; the tests marked shared_data use it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
