"""tensorflow-datasets pipelines: tfds' ImageFolder on the shared data (through temporary folders of
symlinks, nothing copied), the same pixels as hbjax's own folder loader, and clear errors when a
dataset cannot be prepared (no network, no manual directory) or tensorflow is missing."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from PIL import Image  # noqa: E402

from hbjax.data import DataError, ImageFolder, Preprocess, load_tfds, tfds_image_folder  # noqa: E402
from hbjax.models import CIFAR10_CLASSES  # noqa: E402


def link_subset(src_split, dst_split, classes, per_class: int) -> None:
    """dst_split/<class>/<file> symlinks to the first files of each class of src_split."""
    for cls in classes:
        os.makedirs(dst_split / cls)
        for name in sorted(os.listdir(src_split / cls))[:per_class]:
            os.symlink(src_split / cls / name, dst_split / cls / name)


def collect(data) -> tuple[np.ndarray, np.ndarray]:
    batches = list(data)
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def canonical(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted by (label, pixel sum): tfds shuffles the file order, the pixels must agree."""
    order = np.lexsort((images.reshape(len(images), -1).sum(1), labels))
    return images[order], labels[order]


def test_tfds_image_folder_cifar10(cifar10_sample, tmp_path):
    link_subset(cifar10_sample / "test", tmp_path / "test", CIFAR10_CLASSES, per_class=4)
    data = tfds_image_folder(tmp_path, "test", batch_size=16, preprocess=Preprocess("cifar"))
    assert data.class_names == list(CIFAR10_CLASSES) and data.num_examples == 40
    batches = list(data)
    assert [len(b[1]) for b in batches] == [16, 16, 8]
    images, labels = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    assert images.shape == (40, 32, 32, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32 and 0.0 <= images.min() and images.max() <= 1.0
    assert data.skipped == 0
    ref = ImageFolder(str(tmp_path), "test", Preprocess("cifar"))
    ref_images, ref_labels, _ = next(ref.batches(40))
    ours, ours_labels = canonical(images, labels)
    theirs, theirs_labels = canonical(ref_images, ref_labels)
    np.testing.assert_array_equal(ours_labels, theirs_labels)
    np.testing.assert_allclose(ours, theirs, atol=1.01 / 255)


def test_tfds_image_folder_imagenet_preprocessing(imagenet_sample, tmp_path):
    classes = sorted(os.listdir(imagenet_sample / "val"))[:3]
    link_subset(imagenet_sample / "val", tmp_path / "val", classes, per_class=1)
    data = tfds_image_folder(tmp_path, "val", batch_size=8, preprocess=Preprocess("imagenet"))
    images, labels = collect(data)
    assert images.shape == (3, 224, 224, 3) and data.class_names == classes
    ref_images, ref_labels, _ = next(ImageFolder(str(tmp_path), "val", Preprocess("imagenet")).batches(8))
    for label in range(3):
        a, b = images[labels == label][0], ref_images[ref_labels == label][0]
        assert np.abs(a - b).max() <= 1.01 / 255, f"class {label}: the tfds pixels differ"


def test_tfds_image_folder_bad_files(tmp_path, cifar10_sample):
    cls = tmp_path / "test" / "things"
    cls.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8), "L").save(cls / "gray.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 4), dtype=np.uint8), "RGBA").save(cls / "rgba.png")
    (cls / "good.jpg").write_bytes((cifar10_sample / "test" / "dog" / "0000.jpg").read_bytes())
    (cls / "notes.jpg").write_text("this is not an image\n")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(cls / "full.jpg")
    (cls / "truncated.jpg").write_bytes((cls / "full.jpg").read_bytes()[:1000])
    (cls / "full.jpg").unlink()
    data = tfds_image_folder(tmp_path, "test", batch_size=2)
    images, _ = collect(data)
    assert images.shape == (3, 32, 32, 3) and data.skipped == 2


def test_tfds_image_folder_missing(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        tfds_image_folder(tmp_path / "nowhere", "test")


@pytest.fixture
def no_network(monkeypatch):
    """Every tfds download fails at once, as it does without network access."""
    from tensorflow_datasets.core.download import download_manager

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.cs.toronto.edu' (network is unreachable)")

    for name in ("download", "download_and_extract", "download_checksums"):
        monkeypatch.setattr(download_manager.DownloadManager, name, offline)
    # the quick reachability probe passes (the host answers, the download then fails); the probe's
    # own failure is tested in test_faults_data.py
    from hbjax.data import tfds_data

    monkeypatch.setattr(tfds_data, "unreachable", lambda host, **kw: None)


def test_cifar10_without_data_and_network(tmp_path, no_network):
    with pytest.raises(DataError, match=r"could not prepare 'cifar10'.*ConnectionError.*data_dir"):
        load_tfds("cifar10", "test", data_dir=tmp_path / "tfds")
    with pytest.raises(DataError, match="not prepared .* download=False"):
        load_tfds("cifar10", "test", data_dir=tmp_path / "tfds", download=False)


def test_imagenet2012_needs_manual_dir(tmp_path, no_network):
    with pytest.raises(DataError, match="manual_dir"):
        load_tfds("imagenet2012", "validation", data_dir=tmp_path / "tfds")
    (tmp_path / "manual").mkdir()
    with pytest.raises(DataError, match="manual_dir .* does not exist or is empty"):
        load_tfds("imagenet2012", "validation", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "manual")


def test_imagenet2012_manual_dir_reaches_tfds(tmp_path, monkeypatch):
    """The manual directory goes to tfds through DownloadConfig(manual_dir=...)."""
    seen = {}

    def fake_prepare(self, *, download_config=None, **kwargs):
        seen["manual_dir"] = download_config.manual_dir
        raise RuntimeError("stop here")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fake_prepare)
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "ILSVRC2012_img_val.tar").write_bytes(b"")
    with pytest.raises(DataError, match="RuntimeError: stop here"):
        load_tfds("imagenet2012", "validation", data_dir=tmp_path / "tfds", manual_dir=manual)
    assert os.fspath(seen["manual_dir"]) == os.fspath(manual)


def test_unknown_dataset_and_missing_tensorflow(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no default preprocessing"):
        load_tfds("mnist", "test", data_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(DataError, match=r"need tensorflow .*pip install hbjax\[tf\]"):
        load_tfds("cifar10", "test", data_dir=tmp_path)
    with pytest.raises(DataError, match="need tensorflow"):
        tfds_image_folder(tmp_path, "test")
