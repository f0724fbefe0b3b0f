"""experiment=smoke with every attack config: each composes and passes the schema without further
overrides, on a small budget (conf/attack_budget/smoke/); Square runs for real on 2 images."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hbjax.errors import ConfigError
from hbjax.evaluate import config_dir
from hbjax.experiment import schema, store

CONF = config_dir()
ATTACKS = sorted(f[:-5] for f in os.listdir(os.path.join(CONF, "attack")) if f.endswith(".yaml"))
# the most each budget key may be under experiment=smoke, wherever it sits in attack.params
SMOKE_LIMITS = {"steps": 5, "queries": 20, "square_queries": 20, "eot": 2, "eot_samples": 2, "iterations": 2,
                "search_steps": 2, "binary_search_steps": 2, "num_target_classes": 3, "unroll": 1}  # fmt: skip


def _compose(overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return OmegaConf.to_container(compose("evaluate", overrides=list(overrides)), resolve=True)


def _budget(params, path="attack.params"):
    for k, v in params.items():
        if isinstance(v, dict):
            yield from _budget(v, f"{path}.{k}")
        elif k in SMOKE_LIMITS:
            yield f"{path}.{k}", k, v


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_composes_under_smoke_on_a_small_budget(attack):
    cfg = _compose(["experiment=smoke", f"attack={attack}"])
    assert schema.problems(cfg) == []
    full = _compose([f"attack={attack}"])["attack"]["params"]
    too_big = [f"{where}={v}" for where, k, v in _budget(cfg["attack"]["params"]) if v > SMOKE_LIMITS[k]]
    assert not too_big, f"attack={attack} under experiment=smoke keeps a large budget: {too_big}"

    def without_budget(params):  # only budget keys change: eps, norm, losses, ... stay the attack config's
        return {k: without_budget(v) if isinstance(v, dict) else v for k, v in params.items() if k not in SMOKE_LIMITS}

    assert without_budget(cfg["attack"]["params"]) == without_budget(full)


def test_the_budget_applies_under_smoke_only_and_the_command_line_wins():
    assert _compose(["attack=square"])["attack"]["params"]["queries"] == 5000
    assert _compose(["experiment=smoke", "attack=square"])["attack"]["params"]["queries"] == 20
    assert _compose(["experiment=smoke", "attack=square", "attack.params.queries=7"])["attack"]["params"]["queries"] == 7
    assert _compose(["experiment=smoke"])["attack"]["params"]["steps"] == 5  # the default attack, pgd_linf


def test_an_option_the_attack_lacks_is_still_a_config_error():
    with pytest.raises(ConfigError, match="square takes no option 'steps'"):
        schema.validate(_compose(["experiment=smoke", "attack=square", "+attack.params.steps=5"]))


def test_square_runs_under_smoke_on_two_images(cifar10_sample, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "hbjax.evaluate", "experiment=smoke", "attack=square", "progress=false",
         f"data.root={cifar10_sample}", "num_examples=2", "batch_size=2", "num_panels=1",
         f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["n_images"] == 2
    rows = store.read_csv(str(tmp_path / "examples.csv"))
    assert set(rows["attack_success"]) <= {"0", "1"}
    config = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert config.attack.name == "square" and config.attack.params.queries == 20
