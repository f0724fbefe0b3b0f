"""Checkpoints: save/load round trips, and a clear CheckpointError naming the file (and the tensor)
for every kind of bad file."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import hbjax
from hbjax.models import CheckpointError
from tests._porting import random_model


@pytest.fixture(scope="module")
def model() -> hbjax.models.Model:
    """A small ImageNet-layout VGG (narrow, small classifier) with class names."""
    return random_model(
        hbjax.models.vgg, "vgg11", seed=1, num_classes=5, width=0.0625, classifier=(32,),
        class_names=["a", "b", "c", "d", "e"], input_size=(64, 64),
    )  # fmt: skip


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32)


@pytest.fixture
def saved(model, tmp_path) -> str:
    return hbjax.models.save(model, tmp_path / "model.safetensors")


def rewrite(src: str, dst, change) -> str:
    """Copies a checkpoint with its tensors changed by ``change(dict)``, metadata kept."""
    with safe_open(src, framework="numpy") as f:
        metadata = f.metadata()
    tensors = load_file(src)
    change(tensors)
    save_file(tensors, str(dst), metadata=metadata)
    return str(dst)


def test_round_trip(model, saved, x):
    loaded = hbjax.models.load(saved)
    assert loaded.meta == model.meta
    assert loaded.layers == model.layers and loaded.normalization == model.normalization
    assert loaded.class_names == ["a", "b", "c", "d", "e"]
    forward = jax.jit(model.apply)  # the same layers: one compilation for both parameter sets
    np.testing.assert_array_equal(
        np.asarray(forward(loaded.params, x)), np.asarray(forward(model.params, x))
    )


def test_round_trip_batchnorm_and_bgr(tmp_path, x):
    """Batch statistics and a Keras-style (BGR) normalisation survive too."""
    norm = hbjax.models.Normalization((0.4, 0.45, 0.5), (1 / 255,) * 3, channel_order="BGR")
    model = random_model(
        hbjax.models.vgg, "vgg11", num_classes=3, width=0.0625, classifier=(), batchnorm=True, normalization=norm,
        input_size=(32, 32),
    )  # fmt: skip
    loaded = hbjax.models.load(hbjax.models.save(model, tmp_path / "bn.safetensors"))
    assert loaded.normalization == norm and "batch_stats" in loaded.params
    for a, b in zip(jax.tree.leaves(model.params), jax.tree.leaves(loaded.params)):
        np.testing.assert_array_equal(a, b)


def test_missing_tensor(saved, tmp_path):
    path = rewrite(saved, tmp_path / "missing.safetensors", lambda t: t.pop("params/fc2/bias"))
    with pytest.raises(CheckpointError, match=r"missing\.safetensors: missing tensor 'params/fc2/bias'"):
        hbjax.models.load(path)


def test_wrong_shape(saved, tmp_path):
    def change(t):
        t["params/conv1_1/kernel"] = np.zeros((3, 3, 3, 5), np.float32)

    path = rewrite(saved, tmp_path / "shape.safetensors", change)
    with pytest.raises(CheckpointError, match=r"shape\.safetensors: tensor 'params/conv1_1/kernel' has shape \(3, 3, 3, 5\)"):
        hbjax.models.load(path)


def test_unexpected_tensor_and_nan(saved, tmp_path):
    def extra(t):
        t["params/fc9/kernel"] = np.zeros((2, 2), np.float32)

    with pytest.raises(CheckpointError, match="unexpected tensors.*params/fc9/kernel"):
        hbjax.models.load(rewrite(saved, tmp_path / "extra.safetensors", extra))

    def nan(t):
        t["params/fc1/bias"] = np.full_like(t["params/fc1/bias"], np.nan)

    with pytest.raises(CheckpointError, match="'params/fc1/bias' holds NaN"):
        hbjax.models.load(rewrite(saved, tmp_path / "nan.safetensors", nan))


def test_truncated_file_names_the_tensor(saved, tmp_path):
    data = open(saved, "rb").read()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.safetensors: truncated file: tensor 'params/"):
        hbjax.models.load(path)
    path.write_bytes(data[:20])  # cut inside the header
    with pytest.raises(CheckpointError, match=r"truncated\.safetensors: truncated file"):
        hbjax.models.load(path)
    path.write_bytes(data[:3])
    with pytest.raises(CheckpointError, match=r"truncated\.safetensors: not an hbjax checkpoint"):
        hbjax.models.load(path)


def test_text_png_and_empty_files(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("these are notes, not weights\n" * 20)
    png = tmp_path / "picture.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(png)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for path in (text, png, empty):
        with pytest.raises(CheckpointError, match=rf"{path.name}: not an hbjax checkpoint"):
            hbjax.models.load(path)


def test_safetensors_without_hbjax_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"features.0.weight": np.zeros((4, 3, 3, 3), np.float32)}, str(path))
    with pytest.raises(CheckpointError, match=r"plain\.safetensors: not an hbjax checkpoint"):
        hbjax.models.load(path)


def test_corrupt_metadata(saved, tmp_path):
    with safe_open(saved, framework="numpy") as f:
        metadata = dict(f.metadata())
    metadata["layers"] = "[{\"kind\": \"conv\"}"
    path = tmp_path / "meta.safetensors"
    save_file(load_file(saved), str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match=r"meta\.safetensors: corrupt checkpoint metadata"):
        hbjax.models.load(path)
    assert json.loads(metadata["meta"])["arch"] == "vgg11"


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        hbjax.models.load(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="not a shipped model name"):
        hbjax.models.load("vgg99_imaginary")


def test_save_is_atomic_and_leaves_no_temp_files(model, tmp_path):
    path = hbjax.models.save(model, tmp_path / "sub" / "m.safetensors")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.safetensors"]
    assert hbjax.models.load(path).meta["arch"] == "vgg11"
