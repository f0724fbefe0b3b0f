"""The CIFAR trainer: a fixed seed gives the same run, and an interrupted run resumes to the same
weights as an uninterrupted one."""

from __future__ import annotations

import jax
import pytest
import numpy as np

from hbjax.train import TrainConfig, train


def _cfg(cifar10_dir, out_dir, **kw) -> TrainConfig:
    base = dict(
        data_root=str(cifar10_dir), out_dir=str(out_dir), width=0.125, epochs=2, batch_size=40,
        limit_per_class=8, test_limit_per_class=4, eval_every=1, peak_lr=0.05,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _leaves(model):
    return [np.asarray(a) for a in jax.tree.leaves(model.params)]


@pytest.fixture(scope="module")
def full_run(cifar10_dir, tmp_path_factory):
    return train(_cfg(cifar10_dir, tmp_path_factory.mktemp("full")))


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(cifar10_dir, tmp_path, full_run):
    logs: list[str] = []
    full, summary = full_run
    part, _ = train(_cfg(cifar10_dir, tmp_path / "part", stop_after=1), log=logs.append)
    assert any("stopping after epoch 1" in line for line in logs)
    resumed, resumed_summary = train(_cfg(cifar10_dir, tmp_path / "part"), log=logs.append)
    assert any("resuming" in line for line in logs)
    for a, b in zip(_leaves(full), _leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    # the interrupted state differs from the finished one: the test can tell the two apart
    assert any(not np.array_equal(a, b) for a, b in zip(_leaves(full), _leaves(part)))
    assert summary["test_accuracy_folded"] == resumed_summary["test_accuracy_folded"]
    assert len(resumed_summary["history"]) == 2


def test_exported_model_is_folded_and_described(full_run):
    model, summary = full_run
    assert not model.has_batchnorm
    assert summary["test_accuracy_bn"] == summary["test_accuracy_folded"]
    assert model.meta["epochs"] == 2 and model.num_classes == 10
    assert model.meta["test_accuracy"] == summary["test_accuracy_folded"]
