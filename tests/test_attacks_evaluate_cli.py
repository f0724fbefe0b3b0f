"""The APGD and AutoAttack configs through hbjax-evaluate on the defended classifier (a few shared
CIFAR-10 images, short budgets; Square: tests/test_experiment_smoke.py), and the clear error for an
attack that cannot take it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hbjax.experiment import store


def _evaluate(args):
    return subprocess.run([sys.executable, "-m", "hbjax.evaluate", *args], capture_output=True, text=True,
                          env=dict(os.environ))  # fmt: skip


@pytest.mark.parametrize(
    "attack, overrides",
    [
        ("apgd_ce", ["attack.params.steps=3", "attack.params.eot=2"]),
        ("autoattack_rand", ["attack.params.steps=2", "attack.params.eot=2"]),
    ],
)
def test_attack_configs_run_on_the_defended_classifier(attack, overrides, cifar10_dir, tmp_path):
    out = _evaluate([
        "experiment=smoke", "progress=false", f"attack={attack}", f"data.root={cifar10_dir}",
        "num_examples=4", f"hydra.run.dir={tmp_path}", *overrides,
    ])  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["n_images"] == 4
    rows = store.read_csv(str(tmp_path / "examples.csv"))
    assert set(rows["attack_success"]) <= {"0", "1"}


def test_an_attack_that_cannot_take_the_defended_classifier_is_a_clear_error(cifar10_dir, tmp_path):
    out = _evaluate([
        "experiment=smoke", "progress=false", "attack=pgd_linf", "+attack.defended=true",
        f"data.root={cifar10_dir}", f"hydra.run.dir={tmp_path}",
    ])  # fmt: skip
    assert out.returncode != 0
    assert "cannot attack the defended classifier" in out.stdout + out.stderr
