"""hbjax-evaluate end to end through the real CLI on a few images of the shipped CIFAR-10 sample: a run and its
files, a two-value sigma sweep and its report, resume after an interruption, sharding over four
host devices, and one-line errors on bad input before any work starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hbjax.experiment import store

SMOKE = ["experiment=smoke", "progress=false"]


def _evaluate(args, *, env=None, check=True):
    full_env = dict(os.environ, **(env or {}))
    out = subprocess.run(
        [sys.executable, "-m", "hbjax.evaluate", *args], capture_output=True, text=True, env=full_env
    )
    if check and out.returncode != 0:
        raise AssertionError(f"hbjax-evaluate failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def _data_override(cifar10_sample):
    return [f"data.root={cifar10_sample}"]


@pytest.fixture(scope="module")
def full_run(cifar10_sample, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    _evaluate([*SMOKE, *_data_override(cifar10_sample), f"hydra.run.dir={run_dir}"])
    return run_dir


def test_a_run_writes_its_files(full_run):
    for name in ("examples.csv", "results.json", "panels.npz", "experiment.json", ".hydra/config.yaml"):
        assert (full_run / name).exists(), name
    rows = store.read_csv(str(full_run / "examples.csv"))
    assert len(rows["label"]) == 8
    summary = json.loads((full_run / "results.json").read_text())
    assert summary["n_images"] == 8
    assert 0.0 <= summary["cleaned"]["top1"] <= 1.0
    assert summary["n_attack_success"] + summary["n_attack_failed"] == summary["n_correct"]
    with np.load(full_run / "panels.npz", allow_pickle=False) as z:
        assert z["x"].shape == (2, 32, 32, 3) and z["mask"].shape == (2, 32, 32)
        shown_labels = z["labels"].tolist()
    # the panels show batch 0's first correctly classified, successfully attacked images
    first = [i for i, b in enumerate(rows["batch"]) if b == "0"]
    chosen = [i for i in first if rows["benign_correct"][i] == "1" and rows["attack_success"][i] == "1"]
    chosen += [i for i in first if i not in chosen]
    assert shown_labels == [int(rows["label"][i]) for i in chosen[:2]]


def test_panel_positions_prefer_successful_attacks_on_correct_images():
    from hbjax.evaluate import panel_positions

    rows = {
        "batch": ["0"] * 5 + ["1"] * 3,
        "benign_correct": ["1", "1", "0", "1", "1", "1", "1", "1"],
        "attack_success": ["1", "0", "1", "1", "0", "1", "1", "1"],
    }
    assert panel_positions(rows, 2) == [0, 3]
    assert panel_positions(rows, 4) == [0, 3, 1, 2]  # too few: the others fill up, in order
    assert panel_positions(rows, 9) == [0, 3, 1, 2, 4]  # never beyond batch 0


def test_resume_after_an_interruption_gives_the_same_results(full_run, cifar10_sample, tmp_path):
    args = [*SMOKE, *_data_override(cifar10_sample), f"hydra.run.dir={tmp_path}"]
    first = _evaluate([*args, "stop_after_batches=1"])
    assert "stopped after 1 batches" in first.stderr
    assert store.finished_batches(str(tmp_path)) == {0}
    assert not (tmp_path / "results.json").exists()
    _evaluate(args)
    a = store.read_csv(str(full_run / "examples.csv"))
    b = store.read_csv(str(tmp_path / "examples.csv"))
    assert a == b


def test_sharding_over_four_devices_gives_the_same_results(full_run, cifar10_sample, tmp_path):
    # four host devices share two cores here: a device that reaches a collective late (starved of
    # CPU, not deadlocked) must not hit XLA's 40 s rendezvous limit on a busy machine
    flags = [
        "--xla_force_host_platform_device_count=4",
        "--xla_cpu_collective_timeout_seconds=1200",
        "--xla_cpu_collective_call_terminate_timeout_seconds=1200",
    ]
    env = {"XLA_FLAGS": " ".join(flags)}
    _evaluate([*SMOKE, *_data_override(cifar10_sample), f"hydra.run.dir={tmp_path}"], env=env)
    summary = json.loads((tmp_path / "results.json").read_text())
    assert len(summary["devices"]) == 4
    a = store.read_csv(str(full_run / "examples.csv"))
    b = store.read_csv(str(tmp_path / "examples.csv"))
    assert a.keys() == b.keys()
    for name in a:
        if name.startswith(("ndcg", "l2", "linf")):
            np.testing.assert_allclose(np.asarray(a[name], float), np.asarray(b[name], float), atol=1e-5)
        else:
            assert a[name] == b[name], name


def test_full_float32_products_are_recorded_and_change_nothing_on_the_cpu(full_run, cifar10_sample, tmp_path):
    import jax
    from omegaconf import OmegaConf

    from hbjax.evaluate import matmul_precision

    cfg = OmegaConf.create({"matmul_precision": "highest"})
    with matmul_precision(cfg):
        assert jax.config.jax_default_matmul_precision == "highest"
    assert jax.config.jax_default_matmul_precision is None  # a scope, not a global setting
    _evaluate([*SMOKE, *_data_override(cifar10_sample), "matmul_precision=highest", f"hydra.run.dir={tmp_path}"])
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["matmul_precision"] == "highest" and summary["config"]["matmul_precision"] == "highest"
    assert "matmul_precision" not in json.loads((full_run / "results.json").read_text())["config"]
    assert json.loads((full_run / "results.json").read_text())["matmul_precision"] == "default"
    assert store.read_csv(str(full_run / "examples.csv")) == store.read_csv(str(tmp_path / "examples.csv"))


def test_sigma_sweep_and_report(cifar10_sample, tmp_path):
    sweep = tmp_path / "sweep"
    _evaluate(["-m", *SMOKE, *_data_override(cifar10_sample), "num_examples=4", "defense.sigma=0.8,1.5",
               f"hydra.sweep.dir={sweep}"])  # fmt: skip
    runs = sorted(p for p in os.listdir(sweep) if (sweep / p / "results.json").exists())
    assert len(runs) == 2
    out = subprocess.run([sys.executable, "-m", "hbjax.report", str(sweep)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    table = (sweep / "table.md").read_text()
    assert "| 0.8 |" in table and "| 1.5 |" in table
    for name in ("fig4_sigma.png", "fig5_ndcg.png", "fig3_0.png"):
        with Image.open(sweep / name) as img:
            assert img.format == "PNG"


@pytest.mark.parametrize("args,message", [
    (["data.root=/no/such/folder"], "does not exist"),
    (["defense.sigma=-1"], "defense.sigma=-1: expected a number > 0"),
    (["attack.target=nobody"], "attack.target"),
])  # fmt: skip
def test_bad_input_is_a_one_line_error_before_any_work(args, message, cifar10_sample, tmp_path):
    out = _evaluate([*SMOKE, *_data_override(cifar10_sample), *args, f"hydra.run.dir={tmp_path}"], check=False)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len([ln for ln in out.stderr.splitlines() if "error" in ln]) == 1
    assert not (tmp_path / "parts").exists()


def test_empty_data_folder_and_wrong_checkpoint_are_clear_errors(cifar10_sample, tmp_path):
    import hbjax

    (tmp_path / "empty" / "test" / "cat").mkdir(parents=True)
    out = _evaluate([*SMOKE, f"data.root={tmp_path / 'empty'}", f"hydra.run.dir={tmp_path / 'r1'}"], check=False)
    assert out.returncode == 2 and "holds no images" in out.stderr
    ckpt = tmp_path / "five_classes.safetensors"
    hbjax.models.save(hbjax.models.vgg_cifar(width=0.0625, num_classes=5), ckpt)
    out = _evaluate([*SMOKE, *_data_override(cifar10_sample), "model=checkpoint", f"model.name={ckpt}",
                     f"hydra.run.dir={tmp_path / 'r2'}"], check=False)  # fmt: skip
    assert out.returncode == 2 and "5 classes" in out.stderr and "10" in out.stderr


def test_unknown_config_key_fails(cifar10_sample, tmp_path):
    out = _evaluate([*SMOKE, "no_such_key=1", f"hydra.run.dir={tmp_path}"], check=False)
    assert out.returncode != 0
    assert "no_such_key" in out.stderr


def test_unknown_attack_option_is_a_config_error(cifar10_sample, tmp_path):
    out = _evaluate([*SMOKE, *_data_override(cifar10_sample), "attack=fgsm", "+attack.params.steps=5",
                     f"hydra.run.dir={tmp_path}"], check=False)  # fmt: skip
    assert out.returncode == 2
    assert "fgsm takes no option 'steps'" in out.stderr
