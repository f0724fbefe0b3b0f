"""Fault injection into the data and file layer: images of every Pillow mode decode faithfully,
corrupt files are skipped and counted, part files that are damaged are named with the way out,
written files follow the umask, and an offline tfds fails in seconds."""

from __future__ import annotations

import os
import stat
import time

import numpy as np
import pytest
from PIL import Image

import hbjax
from hbjax.data import DataError, ImageFolder, Preprocess, load_image
from hbjax.errors import HbjaxError, RunDirError
from hbjax.experiment import store

CIFAR = Preprocess("cifar")
RAMP = np.arange(32 * 32, dtype=np.float64).reshape(32, 32) / (32 * 32 - 1)  # 0 .. 1


def _save(img: Image.Image, path, **kw) -> str:
    img.save(path, **kw)
    return str(path)


def _gray(decoded: np.ndarray) -> np.ndarray:
    assert decoded.shape == (32, 32, 3) and decoded.dtype == np.uint8
    assert np.array_equal(decoded[..., 0], decoded[..., 1]) and np.array_equal(decoded[..., 0], decoded[..., 2])
    return decoded[..., 0].astype(np.int64)


def test_16bit_grayscale_png_is_scaled_not_white(tmp_path):
    path = _save(Image.fromarray(np.round(RAMP * 65535).astype(np.uint16)), tmp_path / "g16.png")
    assert Image.open(path).mode == "I;16"
    np.testing.assert_array_equal(_gray(load_image(path, CIFAR)), np.round(RAMP * 255))


def test_32bit_integer_image_is_read_as_16bit_data(tmp_path):
    img = Image.fromarray(np.round(RAMP * 65535).astype(np.int32), "I")
    path = _save(img, tmp_path / "i32.tif")
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(_gray(load_image(path, CIFAR)), np.round(RAMP * 255))


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_image_in_unit_or_byte_scale(tmp_path, scale):
    path = _save(Image.fromarray((RAMP * scale).astype(np.float32), "F"), tmp_path / "f.tif")
    assert Image.open(path).mode == "F"
    got = _gray(load_image(path, CIFAR))
    assert np.abs(got - np.round(RAMP * 255)).max() <= 1


def test_gray_alpha_drops_alpha_keeping_the_gray(tmp_path):
    la = np.stack([np.round(RAMP * 255).astype(np.uint8), np.full((32, 32), 7, np.uint8)], -1)
    path = _save(Image.fromarray(la, "LA"), tmp_path / "la.png")
    np.testing.assert_array_equal(_gray(load_image(path, CIFAR)), np.round(RAMP * 255))


def test_cmyk_is_converted_as_pillow_does(tmp_path):
    rng = np.random.default_rng(0)
    cmyk = Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), "CMYK")
    path = _save(cmyk, tmp_path / "c.jpg", quality=100)
    with Image.open(path) as img:
        expected = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(load_image(path, CIFAR), expected)


def test_palette_with_transparency_keeps_its_colours_without_a_warning(tmp_path, recwarn):
    img = Image.new("P", (32, 32))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(1, (0, 0, 16, 32))
    img.info["transparency"] = 0
    path = _save(img, tmp_path / "p.png", transparency=0)
    got = load_image(path, CIFAR)
    assert (got[:, :16] == [0, 255, 0]).all() and (got[:, 16:] == [255, 0, 0]).all()
    assert not [w for w in recwarn if "Transparency" in str(w.message)]


def test_rgba_and_bilevel(tmp_path):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0
    assert (load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"), CIFAR) == [200, 0, 0]).all()
    bits = Image.fromarray(RAMP > 0.5)
    np.testing.assert_array_equal(_gray(load_image(_save(bits, tmp_path / "b.png"), CIFAR)), (RAMP > 0.5) * 255)


def _folder(tmp_path, files: dict[str, bytes | Image.Image]) -> str:
    for rel, content in files.items():
        path = tmp_path / "root" / "test" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Image.Image):
            content.save(path)
        else:
            path.write_bytes(content)
    return str(tmp_path / "root")


def test_corrupt_files_are_skipped_and_counted(tmp_path):
    good = Image.fromarray(np.zeros((32, 32, 3), np.uint8))
    png = (tmp_path / "x.png")
    good.save(png)
    root = _folder(tmp_path, {"a/ok.png": good, "a/empty.png": b"", "b/text.png": b"not an image",
                              "b/cut.png": png.read_bytes()[:40]})  # fmt: skip
    folder = ImageFolder(root, "test", CIFAR, num_workers=1)
    with pytest.warns(UserWarning, match="3 file"):
        batches = list(folder.batches(4))
    assert len(batches) == 1 and len(batches[0][0]) == 1 and len(folder.skipped) == 3


@pytest.mark.parametrize("layout,match", [
    ({}, "does not exist"),
    ({"a/.hidden": b""}, "holds no images"),
])  # fmt: skip
def test_missing_or_empty_folder(tmp_path, layout, match):
    root = _folder(tmp_path, layout) if layout else str(tmp_path / "nothing")
    with pytest.raises(DataError, match=match):
        ImageFolder(root, "test", CIFAR)


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        store.atomic_write_text(str(tmp_path / "r.json"), "{}")
        hbjax.models.save(hbjax.models.load("vgg19_cifar"), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    for name in ("r.json", "m.safetensors"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def _parts(tmp_path, texts: list[str]) -> str:
    for b, text in enumerate(texts):
        store.atomic_write_text(store.part_path(str(tmp_path), b), text)
    return str(tmp_path)


@pytest.mark.parametrize("bad", [
    "id,batch,label\n",                       # a header of other columns
    "id,batch\nx,0,1\n",                      # a row longer than the header
    "\x00\x01garbage",                        # binary garbage
    "id,batch\nx\n",                          # a truncated row
])  # fmt: skip
def test_a_corrupt_part_is_named_with_the_way_out(tmp_path, bad):
    run = _parts(tmp_path, ["id,batch\na,0\n", bad, "id,batch\nc,2\n"])
    with pytest.raises(RunDirError) as info:
        store.merge_parts(run, [0, 1, 2], ["id", "batch"])
    text = str(info.value)
    assert store.part_path(run, 1) in text and "delete" in text and "batch 1" in text
    assert store.part_path(run, 0) not in text.split(";")[1]


def test_a_corrupt_first_part_is_the_one_named(tmp_path):
    run = _parts(tmp_path, ["id,xx\na,0\n", "id,batch\nb,1\n"])
    with pytest.raises(RunDirError, match="batch_000000.csv"):
        store.merge_parts(run, [0, 1], ["id", "batch"])


def test_foreign_files_in_parts_are_ignored(tmp_path):
    run = _parts(tmp_path, ["id,batch\na,0\n"])
    for name in ("batch_abc.csv", "notes.txt", "batch_000001.csv.bak"):
        (tmp_path / "parts" / name).write_text("x")
    assert store.finished_batches(run) == {0}


@pytest.mark.parametrize("make,match", [
    (lambda p: p.write_text("x"), "is a file, not a directory"),
    (lambda p: (p.mkdir(), (p / "parts").write_text("x")), "parts is a file"),
    (lambda p: (p.parent / "f").write_text("x"), "is a file, not a directory"),
])  # fmt: skip
def test_unusable_run_directories(tmp_path, make, match):
    run = tmp_path / "run"
    make(run)
    target = run if match != "is a file, not a directory" or run.exists() else tmp_path / "f" / "run"
    with pytest.raises(RunDirError, match=match):
        store.check_run_dir(str(target))


def test_unwritable_run_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(RunDirError, match="not writable"):
        store.check_run_dir(str(tmp_path))


def test_offline_tfds_fails_in_seconds_naming_the_offline_choices(tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        hbjax.data.load_tfds("cifar10", "test", data_dir=str(tmp_path / "tfds"))
    assert time.monotonic() - start < 60  # the tensorflow import; no download retries
    text = str(info.value)
    assert "data=folder" in text and "data=cifar10_sample" in text and "no network" in text
    assert isinstance(info.value, HbjaxError)
    assert not any((tmp_path / "tfds").rglob("*.tfrecord*"))
