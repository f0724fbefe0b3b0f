"""The Figure 3 panel and the ``hbjax-clean`` command line."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from PIL import Image

from hbjax import defense, models
from hbjax.cli import clean as clean_cli
from hbjax.defense_plots import figure3, panel, top_classes


@pytest.fixture(scope="module")
def model() -> models.Model:
    return models.vgg_cifar("vgg11", key=jax.random.key(3))


def test_top_classes():
    tops = top_classes(np.array([[0.0, 2.0, 1.0]]), ["a", "b", "c"], k=2)
    assert [(c, i) for c, i, _ in tops[0]] == [("b", 1), ("c", 2)]
    assert abs(sum(p for _, _, p in top_classes(np.zeros((1, 4)), list("abcd"), k=4)[0]) - 1) < 1e-6


def test_figure3_draws_one_row_per_image(model, cifar10_sample):
    x = np.stack([
        np.asarray(Image.open(cifar10_sample / "test" / c / "0000.jpg").convert("RGB"), np.float32) / 255
        for c in ("cat", "ship")
    ])  # fmt: skip
    fig = figure3(model, x, jax.random.key(0), sigma=(0.8, 1.2), labels=[3, 8], names=["cat", "ship"])
    axes = fig.get_axes()
    assert len(axes) == 2 * 5
    titles = [ax.get_title() for ax in axes]
    assert titles[0].startswith("input: ") and "label: cat" in titles[0]
    assert titles[2].startswith("blurred, sigma ") and titles[4].startswith("cleaned: ")
    assert titles[3].startswith("restored pixels: ")
    out = defense.clean(model, x, jax.random.key(0), sigma=(0.8, 1.2))
    fig = panel(x, out, cleaned_logits=model.apply(model.params, out.image), heatmap=False)
    assert len(fig.get_axes()) == 2 * 4


def test_clean_cli_writes_images_masks_panels(tmp_path, cifar10_sample, capsys):
    files = [str(cifar10_sample / "test" / "cat" / "0000.jpg"), str(cifar10_sample / "test" / "dog" / "0000.jpg")]
    out = tmp_path / "out"
    rc = clean_cli.main(
        [*files, "--model", "random:vgg11_cifar", "--sigma", "0.8", "1.2", "--out", str(out), "--batch-size", "2"]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.count("->") == 2 * 5 and "cleaned 2 image(s)" in printed
    record = json.loads((out / "predictions.json").read_text())
    assert len(record["images"]) == 2
    for item, stem in zip(record["images"], ["0000", "0000_2"]):
        assert 0.8 <= item["sigma"] <= 1.2 and len(item["before"]) == 5 and len(item["after"]) == 5
        cleaned = np.asarray(Image.open(out / f"{stem}_cleaned.png"))
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        assert cleaned.shape == (32, 32, 3) and mask.shape == (32, 32)
        assert set(np.unique(mask)) <= {0, 255}
        assert abs((mask > 0).mean() - item["restored_fraction"]) < 1e-6
        assert (out / f"{stem}_panel.png").stat().st_size > 1000
    # restored pixels are the input's pixels
    src = np.asarray(Image.open(files[0]).convert("RGB"))
    mask = np.asarray(Image.open(out / "0000_mask.png")) > 0
    np.testing.assert_array_equal(np.asarray(Image.open(out / "0000_cleaned.png"))[mask], src[mask])


def test_clean_cli_errors(tmp_path, capsys):
    assert clean_cli.main(["missing.png", "--model", "random:vgg11_cifar", "--out", str(tmp_path)]) == 1
    assert "no such file" in capsys.readouterr().err
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    assert clean_cli.main([str(img), "--model", "random:vgg11_cifar", "--sigma", "1", "2", "3", "--out", str(tmp_path)]) == 2
    assert clean_cli.main([str(img), "--model", "random:vgg11_cifar", "--sigma", "1.2", "0.8", "--out", str(tmp_path)]) == 1
    assert "low <= high" in capsys.readouterr().err
    assert clean_cli.main([str(img), "--model", "random:resnet", "--out", str(tmp_path)]) == 1


def test_clean_cli_class_names(tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(img)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class_{i}" for i in range(10)) + "\n")
    rc = clean_cli.main([str(img), "--model", "random:vgg11_cifar", "--class-names", str(names), "--out", str(tmp_path / "o")])
    assert rc == 0 and "class_" in capsys.readouterr().out
    names.write_text("a\nb\n")
    rc = clean_cli.main([str(img), "--model", "random:vgg11_cifar", "--class-names", str(names), "--out", str(tmp_path / "o")])
    assert rc == 1 and "names 2 classes" in capsys.readouterr().err
