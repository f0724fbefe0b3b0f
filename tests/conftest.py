"""Shared test fixtures: the read-only data under ../shared/data (or $HBJAX_DATA) and the small CNN
that the attack tests train on it."""

from __future__ import annotations

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def shared_data_dir() -> pathlib.Path:
    """../shared/data beside the repository, or $HBJAX_DATA; a missing folder fails the test run."""
    path = pathlib.Path(os.environ.get("HBJAX_DATA", REPO.parent / "shared" / "data"))
    if not (path / "cifar10").is_dir() or not (path / "imagenet-sample").is_dir():
        pytest.fail(f"shared test data not found at {path} (set HBJAX_DATA)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    return shared_data_dir()


@pytest.fixture(scope="session")
def imagenet_sample(shared_data) -> pathlib.Path:
    return shared_data / "imagenet-sample"


@pytest.fixture(scope="session")
def cifar10_dir(shared_data) -> pathlib.Path:
    return shared_data / "cifar10"


@pytest.fixture(scope="session")
def trained_model(cifar10_dir):
    """The small CNN of ``tests._attack_models.trained_cnn`` (trained once a session), checked to
    have learned something: attack comparisons on an untrained network prove nothing."""
    from tests._attack_models import trained_cnn

    model, accuracy = trained_cnn(str(cifar10_dir))
    assert accuracy >= 0.4, f"the test CNN reached only {accuracy:.3f} test accuracy"
    return model
