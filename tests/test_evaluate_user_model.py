"""hbjax-evaluate on a user's Flax model (``model=flax model.factory=...``) and on a ResNet
checkpoint, through the real CLI on a few shared CIFAR-10 images."""

from __future__ import annotations

import json

import jax

import hbjax
from tests.test_evaluate_cli import SMOKE, _data_override, _evaluate

FAST = ["num_examples=4", "batch_size=4", "attack.params.steps=2"]


def test_evaluate_runs_a_from_flax_model(cifar10_dir, tmp_path):
    _evaluate([*SMOKE, *FAST, *_data_override(cifar10_dir), "model=flax",
               "model.factory=tests._user_models:small_residual_net", "+model.kwargs.seed=1",
               f"hydra.run.dir={tmp_path}"])  # fmt: skip
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["n_images"] == 4


def test_evaluate_runs_a_resnet_checkpoint(cifar10_dir, tmp_path):
    ckpt = tmp_path / "resnet18_cifar.safetensors"
    hbjax.models.save(hbjax.models.resnet("resnet18", key=jax.random.key(0), num_classes=10), ckpt)
    _evaluate([*SMOKE, *FAST, *_data_override(cifar10_dir), "model=checkpoint", f"model.name={ckpt}",
               f"hydra.run.dir={tmp_path / 'run'}"])  # fmt: skip
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    assert summary["n_images"] == 4


def test_a_factory_that_returns_no_model_is_a_config_error(cifar10_dir, tmp_path):
    out = _evaluate([*SMOKE, *_data_override(cifar10_dir), "model=flax", "model.factory=tests._user_models:not_a_model",
                     f"hydra.run.dir={tmp_path}"], check=False)  # fmt: skip
    assert out.returncode == 2 and "not an hbjax Model" in out.stderr
