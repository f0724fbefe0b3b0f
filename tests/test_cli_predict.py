"""``hbjax-predict`` run as a program (``python -m hbjax.cli.predict``) on small temporary inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import hbjax
from hbjax.cli.predict import preprocess_for
from hbjax.data import ImageFolder, Preprocess
from tests._porting import random_model


def run_predict(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hbjax.cli.predict", *map(str, args)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cifar_model(tmp_path_factory) -> tuple[hbjax.models.Model, str]:
    model = random_model(hbjax.models.vgg_cifar, width=0.125, seed=4)
    path = tmp_path_factory.mktemp("predict") / "cifar.safetensors"
    return model, hbjax.models.save(model, path)


@pytest.fixture
def image_dir(tmp_path, cifar10_sample):
    """Symlinks to 3 CIFAR-10 test images in nested folders, a text file named .jpg, a truncated
    JPEG and a non-image file that is not looked at."""
    root = tmp_path / "images"
    for cls in ("cat", "ship"):
        (root / cls).mkdir(parents=True)
    os.symlink(cifar10_sample / "test" / "cat" / "0000.jpg", root / "cat" / "a.jpg")
    os.symlink(cifar10_sample / "test" / "cat" / "0001.jpg", root / "cat" / "b.jpg")
    os.symlink(cifar10_sample / "test" / "ship" / "0000.jpg", root / "ship" / "c.jpg")
    (root / "ship" / "notes.jpg").write_text("not an image")
    data = (cifar10_sample / "test" / "ship" / "0001.jpg").read_bytes()
    (root / "ship" / "cut.jpg").write_bytes(data[: len(data) // 3])
    (root / "README.txt").write_text("ignored: not an image suffix")
    return root


def test_predict_folder_text_output(cifar_model, image_dir):
    _, path = cifar_model
    result = run_predict(image_dir, "--model", path, "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "classified 3 image(s); skipped 2 file(s)"
    blocks = lines[:-1]
    assert len(blocks) == 3 * 6  # a path line and the top 5 for each image
    heads = blocks[::6]
    assert [os.path.basename(h) for h in heads] == ["a.jpg", "b.jpg", "c.jpg"]
    for i in range(3):
        rows = blocks[6 * i + 1 : 6 * i + 6]
        assert [r.split(".")[0].strip() for r in rows] == ["1", "2", "3", "4", "5"]
        probs = [float(r.split()[-1]) for r in rows]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        assert all(r.split()[1] in hbjax.models.CIFAR10_CLASSES for r in rows)
    assert "skipped" in result.stderr and "notes.jpg" in result.stderr and "cut.jpg" in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_json_matches_the_model(cifar_model, image_dir):
    model, path = cifar_model
    files = [image_dir / "ship" / "c.jpg", image_dir / "cat" / "a.jpg"]
    result = run_predict(*files, "--model", path, "--json", "--top-k", "3")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["path"] for r in records] == [str(f) for f in files]
    x = np.stack([hbjax.data.load_image(str(f), Preprocess("cifar")) for f in files]) / np.float32(255)
    logits = jax.jit(model.apply)(model.params, x.astype(np.float32))
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    for record, p in zip(records, probs):
        assert len(record["top"]) == 3
        assert [t["index"] for t in record["top"]] == list(np.argsort(-p)[:3])
        np.testing.assert_allclose([t["prob"] for t in record["top"]], np.sort(p)[::-1][:3], atol=1e-5)
        assert record["top"][0]["class"] == hbjax.models.CIFAR10_CLASSES[record["top"][0]["index"]]
    assert "classified 2 image(s); skipped 0 file(s)" in result.stderr


def test_predict_imagenet_model_uses_imagenet_preprocessing(tmp_path, imagenet_sample):
    names = [line.split("\t")[2] for line in (imagenet_sample / "classes.tsv").read_text().splitlines()[1:]]
    model = random_model(
        hbjax.models.vgg, "vgg11", seed=5, width=0.0625, classifier=(32,), class_names=names,
    )  # fmt: skip
    assert preprocess_for(model.meta) == Preprocess("imagenet")
    path = hbjax.models.save(model, tmp_path / "imagenet.safetensors")
    folder = ImageFolder(str(imagenet_sample), "val", Preprocess("imagenet"), limit_per_class=1)
    x, _, files = next(folder.batches(2, indices=[3, 900]))
    result = run_predict(*files, "--model", path, "--json", "--batch-size", "4")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    probs = np.asarray(jax.nn.softmax(jax.jit(model.apply)(model.params, x), axis=-1))
    for record, p in zip(records, probs):
        top = record["top"]
        assert len(top) == 5 and top[0]["class"] == names[top[0]["index"]]
        np.testing.assert_allclose([t["prob"] for t in top], np.sort(p)[::-1][:5], atol=1e-5)


def test_predict_errors(cifar_model, tmp_path):
    _, path = cifar_model
    result = run_predict(tmp_path, "--model", tmp_path / "absent.safetensors")
    assert result.returncode == 1 and "no such checkpoint file" in result.stderr
    result = run_predict(tmp_path / "nowhere", "--model", path)
    assert result.returncode == 1 and "nowhere: no such file or folder" in result.stderr
    (tmp_path / "empty").mkdir()
    result = run_predict(tmp_path / "empty", "--model", path)
    assert result.returncode == 1 and "no image files" in result.stderr
    (tmp_path / "bad.png").write_text("not a png")
    result = run_predict(tmp_path / "bad.png", "--model", path)
    assert result.returncode == 1 and "skipped 1 file(s)" in result.stdout
    assert "Traceback" not in result.stderr
