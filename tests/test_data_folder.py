"""Image folders: the shipped CIFAR-10 test sample, the shared ImageNet sample, label order, preprocessing,
and bad files (converted or skipped and counted, never a crash)."""

from __future__ import annotations

import csv
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from hbjax.data import DataError, ImageFolder, Preprocess, load_image
from hbjax.models import CIFAR10_CLASSES


def test_shipped_cifar10_sample_is_complete_and_opens_as_a_data_source(cifar10_sample):
    from hbjax.experiment.compose import open_data

    folder = ImageFolder(str(cifar10_sample), "test", Preprocess("cifar"))
    assert folder.class_names == list(CIFAR10_CLASSES)
    images, labels = folder.load_uint8()
    assert images.shape == (1000, 32, 32, 3) and folder.skipped == []
    np.testing.assert_array_equal(np.bincount(labels), [100] * 10)
    cfg = {"source": "sample", "name": "cifar10", "split": "test", "preprocess": "cifar"}
    data = open_data(cfg, num_examples=20, batch_size=8, seed=0)
    assert data.class_names == list(CIFAR10_CLASSES) and data.num_batches == 3
    x, y, ids = data.first_batch()
    assert x.shape == (8, 32, 32, 3) and len(set(ids)) == 8 and all(i.endswith(".jpg") for i in ids)


def test_cifar10_test_split(cifar10_sample):
    folder = ImageFolder(str(cifar10_sample), "test", Preprocess("cifar"), limit_per_class=3)
    assert folder.class_names == list(CIFAR10_CLASSES)
    assert len(folder) == 30
    batches = list(folder.batches(8))
    assert [len(b[1]) for b in batches] == [8, 8, 8, 6]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.shape == (30, 32, 32, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0.1
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 3))
    for path, label in zip([p for b in batches for p in b[2]], labels):
        assert os.path.basename(os.path.dirname(path)) == CIFAR10_CLASSES[label]
    assert folder.skipped == []
    # the uint8 loader gives the same pixels
    x8, y8 = folder.load_uint8()
    np.testing.assert_array_equal(x8.astype(np.float32) / 255, images)
    np.testing.assert_array_equal(y8, labels)


def read_classes_tsv(path) -> list[tuple[int, str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["index", "wnid", "name"]
    return [(int(i), wnid, name) for i, wnid, name in rows[1:]]


def test_imagenet_sample_labels_follow_classes_tsv(imagenet_sample):
    folder = ImageFolder(str(imagenet_sample), "val", Preprocess("imagenet"), limit_per_class=1)
    rows = read_classes_tsv(imagenet_sample / "classes.tsv")
    assert len(folder) == 1000 and len(rows) == 1000
    assert [r[0] for r in rows] == list(range(1000))
    assert folder.class_names == [wnid for _, wnid, _ in rows]
    picks = [0, 1, 417, 999]
    images, labels, paths = next(folder.batches(4, indices=picks))
    assert images.shape == (4, 224, 224, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_array_equal(labels, picks)
    for path, label in zip(paths, labels):
        _, wnid, name = rows[label]
        assert os.path.basename(path) == f"{wnid}_{name}.JPEG"


def test_imagenet_preprocessing_geometry(tmp_path):
    """Shorter side to 256, then the central 224x224 (here on a synthetic ramp image)."""
    w, h = 512, 300
    ramp = np.tile(np.linspace(0, 255, w).astype(np.uint8)[None, :, None], (h, 1, 3))
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    out = load_image(str(path), Preprocess("imagenet"))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    # resized width round(512 * 256 / 300) = 437; the crop starts at round((437 - 224) / 2) = 106
    expected = np.linspace(0, 255, 437)[106 : 106 + 224]
    assert np.abs(out[112, :, 0].astype(float) - expected).max() < 2.0


@pytest.fixture
def messy_folder(tmp_path, cifar10_sample):
    """One class of good and bad files: grayscale, RGBA, palette GIF, truncated JPEG, text."""
    root = tmp_path / "messy"
    cls = root / "test" / "things"
    cls.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8), "L").save(cls / "gray.png")
    rgba = rng.integers(0, 255, (32, 32, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(cls / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE
    ).save(cls / "palette.gif")
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(cls / "big.jpg")
    good = open(cifar10_sample / "test" / "cat" / "0000.jpg", "rb").read()
    (cls / "good.jpg").write_bytes(good)
    big = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    big.save(cls / "full.jpg", quality=95)
    data = (cls / "full.jpg").read_bytes()
    (cls / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (cls / "full.jpg").unlink()
    (cls / "notes.jpg").write_text("this is not an image\n")
    return root, rgba


def test_bad_files_are_converted_or_skipped(messy_folder):
    root, rgba = messy_folder
    folder = ImageFolder(str(root), "test", Preprocess("cifar"))
    assert len(folder) == 7
    with pytest.warns(UserWarning, match=r"2 file\(s\) under .* were skipped"):
        batches = list(folder.batches(3))
    paths = sorted(os.path.basename(p) for b in batches for p in b[2])
    assert paths == ["big.jpg", "good.jpg", "gray.png", "palette.gif", "rgba.png"]
    skipped = sorted(os.path.basename(p) for p, _ in folder.skipped)
    assert skipped == ["notes.jpg", "truncated.jpg"]
    assert "truncated" in dict((os.path.basename(p), why) for p, why in folder.skipped)["truncated.jpg"]
    for images, labels, batch_paths in batches:
        assert images.shape[1:] == (32, 32, 3) and images.dtype == np.float32
        assert len(images) == len(labels) == len(batch_paths)
        for image, path in zip(images, batch_paths):
            if path.endswith("gray.png"):  # grayscale: three equal channels
                np.testing.assert_array_equal(image[..., 0], image[..., 2])
            if path.endswith("rgba.png"):  # alpha dropped, colour kept
                np.testing.assert_array_equal(np.round(image * 255).astype(np.uint8), rgba[..., :3])
    # a second pass reports the same count, not a growing one
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(folder.batches(8))
    assert len(folder.skipped) == 2 and any("2 file(s)" in str(w.message) for w in caught)
    with pytest.warns(UserWarning, match=r"2 file\(s\)"):
        images, labels = ImageFolder(str(root), "test").load_uint8()
    assert images.shape == (5, 32, 32, 3)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolder(str(tmp_path / "nowhere"), "test")
    (tmp_path / "empty" / "test").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        ImageFolder(str(tmp_path / "empty"), "test")
    (tmp_path / "empty" / "test" / "cat").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        ImageFolder(str(tmp_path / "empty"), "test")
    bad = tmp_path / "bad" / "test" / "cat"
    bad.mkdir(parents=True)
    (bad / "a.jpg").write_text("text")
    with pytest.raises(DataError, match="none of the 1 files"):
        ImageFolder(str(tmp_path / "bad"), "test").load_uint8()


def test_class_names_order_and_unknown_folder(tmp_path, cifar10_sample):
    for name in ("b", "a"):
        (tmp_path / "split" / name).mkdir(parents=True)
        (tmp_path / "split" / name / "x.jpg").write_bytes(
            (cifar10_sample / "test" / "cat" / "0001.jpg").read_bytes()
        )
    folder = ImageFolder(str(tmp_path), "split", class_names=["b", "a"])
    assert [label for _, label in folder.files] == [1, 0]  # folders sorted, labels from the list
    with pytest.raises(DataError, match=r"folders \['b'\] are not among the given class names"):
        ImageFolder(str(tmp_path), "split", class_names=["a"])
