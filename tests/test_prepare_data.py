"""scripts/prepare_data.py writes the folder layout the tests and ``data=folder`` read (the downloads
themselves need the internet and are not run here)."""

from __future__ import annotations

import runpy

import numpy as np
from PIL import Image

from hbjax.data import ImageFolder, Preprocess
from tests.conftest import REPO

prepare = runpy.run_path(str(REPO / "scripts" / "prepare_data.py"))


def test_image_split_reads_back_with_its_labels(tmp_path):
    ramp = np.linspace(0, 200, 32)[None, :, None] + np.linspace(0, 50, 32)[:, None, None]
    images = (ramp + np.arange(7)[:, None, None, None] * np.array([5, 3, 1])).astype(np.uint8)
    labels = [3, 0, 3, 9, 1, 0, 3]
    split = tmp_path / "cifar10" / "test"
    assert prepare["write_image_split"](images, labels, prepare["CIFAR10_CLASSES"], str(split)) == 7
    assert sorted(p.name for p in (split / "cat").iterdir()) == ["0000.jpg", "0001.jpg", "0002.jpg"]
    folder = ImageFolder(str(tmp_path / "cifar10"), "test", Preprocess("cifar"),
                         class_names=list(prepare["CIFAR10_CLASSES"]))  # fmt: skip
    x, y = folder.load_uint8()
    assert sorted(y.tolist()) == sorted(labels)
    # JPEG quality 95: close to the written pixels
    first_cat = np.asarray(Image.open(split / "cat" / "0000.jpg"), np.float32)
    assert np.abs(first_cat - images[0]).mean() < 2
    # a second run keeps the existing files
    assert prepare["write_image_split"](images, labels, prepare["CIFAR10_CLASSES"], str(split)) == 0


def test_imagenet_sample_layout_and_classes_tsv(tmp_path):
    val = tmp_path / "ILSVRC2012_val"
    for i, wnid in enumerate(["n02", "n01", "n03"]):
        (val / wnid).mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (300 + 10 * i, 400), (10 * i, 20 * j, 30)).save(val / wnid / f"img{j}.JPEG")
    names = ["tench", "goldfish", "great white shark".replace(" ", "_")]
    assert prepare["write_imagenet_sample"](str(val), str(tmp_path / "out"), names) == 3
    root = tmp_path / "out" / "imagenet-sample"
    rows = [line.split("\t") for line in (root / "classes.tsv").read_text().splitlines()]
    assert rows == [["index", "wnid", "name"], ["0", "n01", "tench"], ["1", "n02", "goldfish"],
                    ["2", "n03", "great_white_shark"]]  # fmt: skip
    with Image.open(root / "val" / "n01" / "n01_tench.JPEG") as img:
        assert min(img.size) == 256 and img.size == (256, round(400 * 256 / 310))  # n01 is 310 x 400
    folder = ImageFolder(str(root), "val", Preprocess("imagenet"))
    assert folder.class_names == ["n01", "n02", "n03"] and len(folder) == 3
