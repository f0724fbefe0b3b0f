"""scripts/robustness.py: batches, L2 radii on both classifiers, AutoAttack on the defended one, the
JSON rewritten after every cell and ``--resume`` (on a small random CNN, 4 shipped sample images and
tiny budgets: these check the script's bookkeeping, not robustness figures)."""

from __future__ import annotations

import json
import runpy

import jax
import numpy as np
import pytest

import hbjax
from tests._attack_models import small_cnn
from tests.conftest import REPO

script = runpy.run_path(str(REPO / "scripts" / "robustness.py"))
main = script["main"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("model") / "small_cnn.safetensors"
    return hbjax.models.save(small_cnn(jax.random.key(0), widths=(8, 16)), path)


def common(model_path, cifar10_sample, out) -> list[str]:
    return ["--model", model_path, "--data", str(cifar10_sample), "--num", "4", "--steps", "2", "--eot", "2",
            "--queries", "5", "--convergence-steps", "--convergence-eot", "--seed", "3",
            "--out", str(out), "--figure", str(out.with_suffix(".png"))]  # fmt: skip


def read(path) -> dict:
    return json.loads(path.read_text())


def test_the_figure_goes_beside_the_json_unless_named():
    """A run writing its JSON elsewhere must not redraw the figure in docs/."""
    assert script["parse_args"](["--out", "runs/r.json"]).figure == "runs/r.png"
    assert script["parse_args"]([]).figure == "docs/results/robustness.png"
    assert script["parse_args"](["--out", "a.json", "--figure", "b.png"]).figure == "b.png"


def test_the_figure_has_a_panel_per_norm_with_cells(tmp_path):
    from PIL import Image

    def run(norm, eps):
        return {"model": "defended", "attack": "apgd_eot", "norm": norm, "eps": eps, "group": "curve",
                "robust_accuracy": 0.5}  # fmt: skip

    widths = {}
    for name, runs in {"linf": [run("linf", 1 / 255)], "both": [run("linf", 1 / 255), run("l2", 0.5)]}.items():
        path = str(tmp_path / f"{name}.png")
        script["plot"]({"runs": runs, "num_images": 4}, path)
        widths[name] = Image.open(path).size[0]
    assert widths["both"] == 2 * widths["linf"]


@pytest.mark.parametrize("n, batch", [(4, 3), (5, 3), (7, 7), (7, 100), (9, 2), (1, 1)])
def test_batches_are_equal_and_cover_every_image_once(n, batch):
    parts = script["batch_indices"](n, batch)
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) <= batch
    assert len(parts) == -(-n // batch)
    flat = np.concatenate(parts)
    np.testing.assert_array_equal(flat[:n], np.arange(n))
    assert set(flat[n:]) <= set(range(n))  # padding repeats real images
    x = np.arange(n, dtype=np.float32)[:, None] * 10
    y = np.arange(n)
    seen = []

    def fn(xb, yb, key):
        seen.append((len(yb), int(jax.random.key_data(key)[-1])))
        return xb[:, 0] + yb, yb

    values, labels = script["batched"](fn, x, y, jax.random.key(0), batch)
    np.testing.assert_array_equal(values, 11 * np.arange(n))
    np.testing.assert_array_equal(labels, y)
    assert len({s for s, _ in seen}) == 1 and len({k for _, k in seen}) == len(seen)  # one shape, a key a batch


def test_l2_radii_and_autoattack_on_the_defended_classifier(model_path, cifar10_sample, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.json"
    losses = []
    apgd = hbjax.attacks.apgd

    def recording_apgd(*args, **kwargs):
        losses.append(kwargs.get("loss", "ce"))
        return apgd(*args, **kwargs)

    monkeypatch.setattr(hbjax.attacks, "apgd", recording_apgd)
    main(common(model_path, cifar10_sample, out) + [
        "--batch", "3", "--eps-linf", "--eps-l2", "0.1",
        "--attacks", "undefended:pgd", "undefended:apgd_ce", "defended:bpda_eot", "defended:apgd_eot",
        "defended:apgd_dlr_eot", "--autoattack-full", "--autoattack-eps-linf", "8", "--autoattack-eps-l2",
        "--autoattack-steps", "2", "--autoattack-eot", "2", "--autoattack-queries", "5",
    ])  # fmt: skip
    results = read(out)
    assert results["complete"] and results["batch"] == 3 and results["num_images"] == 4
    assert {r["device"] for r in results["runs"]} == {script["device_name"]()}  # each cell says where it ran
    assert script["device_name"]().startswith(f"{jax.devices()[0].platform}: ")
    # the curve's APGD cells, two batches each: undefended CE, defended CE-EOT and DLR-EOT
    assert losses == ["ce"] * 4 + ["dlr"] * 2
    runs = {(r["model"], r["attack"], r["norm"]): r for r in results["runs"]}
    assert set(runs) == {
        ("undefended", "pgd", "l2"), ("defended", "pgd_transfer", "l2"), ("undefended", "apgd_ce", "l2"),
        ("defended", "bpda_eot", "l2"), ("defended", "apgd_eot", "l2"), ("defended", "apgd_dlr_eot", "l2"),
        ("defended", "autoattack_rand", "linf"), ("defended", "autoattack_standard", "linf"),
    }  # fmt: skip
    for r in results["runs"]:
        assert r["robust_accuracy"] == len(r["robust_images"]) / 4
        assert set(r["robust_images"]) <= set(range(4))
    rand, standard = runs["defended", "autoattack_rand", "linf"], runs["defended", "autoattack_standard", "linf"]
    assert rand["components"] == ["apgd_ce", "apgd_dlr"] and (rand["steps"], rand["eot"]) == (2, 2)
    assert standard["components"] == ["apgd_ce", "apgd_t", "square"] and standard["queries"] == 5
    for r in (rand, standard):
        assert r["eps"] == pytest.approx(8 / 255) and r["group"] == "autoattack"
        assert all(a >= b for a, b in zip(r["robust_after"], r["robust_after"][1:]))
        assert r["robust_after"][-1] == r["robust_accuracy"]
        assert sum(r["first_attack_counts"].values()) <= 4 * (1 - r["robust_accuracy"])
    assert any("randomised" in w for w in standard["warnings"])  # AutoAttack's own check fires
    assert (tmp_path / "r.png").stat().st_size > 0
    capsys.readouterr()
    main(["--markdown", "--out", str(out)])
    table = capsys.readouterr().out
    assert "| l2 | 0.1 |" in table and "| autoattack_rand | linf | 8/255 | 2 | 2 | - |" in table
    assert "| autoattack_standard | linf | 8/255 | 2 | - | 5 |" in table


def test_an_interrupted_run_keeps_its_cells_and_resumes_to_the_uninterrupted_result(
    model_path, cifar10_sample, tmp_path, monkeypatch, capsys
):
    grid = ["--batch", "2", "--eps-linf", "1", "--eps-l2",
            "--attacks", "undefended:pgd", "undefended:square", "defended:apgd_eot"]  # fmt: skip
    whole = tmp_path / "whole.json"
    main(common(model_path, cifar10_sample, whole) + grid)

    cut = tmp_path / "cut.json"
    square = hbjax.attacks.square

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hbjax.attacks, "square", interrupted)
    with pytest.raises(SystemExit) as stop:
        main(common(model_path, cifar10_sample, cut) + grid)
    assert stop.value.code == 130 and "--resume" in capsys.readouterr().err
    kept = read(cut)
    assert "complete" not in kept
    assert [r["attack"] for r in kept["runs"]] == ["pgd", "pgd_transfer"]

    monkeypatch.setattr(hbjax.attacks, "square", square)
    main(common(model_path, cifar10_sample, cut) + grid + ["--resume"])
    resumed = read(cut)
    assert resumed["complete"] and resumed["runs"][:2] == kept["runs"]  # finished cells not rerun

    def cells(results):
        return {(r["attack"], r["eps"]): (r["robust_accuracy"], r["robust_images"]) for r in results["runs"]}

    assert cells(resumed) == cells(read(whole))
    assert len(resumed["runs"]) == 4

    with pytest.raises(SystemExit, match="steps=2 in the file, 3 now"):
        main(common(model_path, cifar10_sample, cut) + grid + ["--resume", "--steps", "3"])


@pytest.mark.parametrize("bad, message", [
    (["--batch", "0"], "--batch must be at least 1"),
    (["--eps-l2", "-1"], "--eps-l2 values must be finite and >= 0"),
    (["--attacks", "defended:pgd"], "invalid choice"),
])  # fmt: skip
def test_bad_options_are_named(bad, message, capsys):
    with pytest.raises(SystemExit):
        main(bad)
    assert message in capsys.readouterr().err
