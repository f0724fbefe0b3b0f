"""Shared test fixtures: the CIFAR-10 test sample shipped in the package, the full read-only data
under ../shared/data (or $HBJAX_DATA) and the small CNN that the attack tests train on it.

Tests that use the full data (the fixtures ``shared_data``, ``cifar10_dir``, ``imagenet_sample``,
``trained_model``) are marked ``shared_data`` when collected; when the data are missing they fail
with a message saying how to get them (never skip: CI runs everything)."""

from __future__ import annotations

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA_FIXTURES = {"shared_data", "cifar10_dir", "imagenet_sample", "trained_model"}


def shared_data_dir() -> pathlib.Path:
    """../shared/data beside the repository, or $HBJAX_DATA; a missing folder fails the test."""
    path = pathlib.Path(os.environ.get("HBJAX_DATA", REPO.parent / "shared" / "data"))
    missing = [d for d in ("cifar10/train", "cifar10/test", "imagenet-sample/val") if not (path / d).is_dir()]
    if missing:
        pytest.fail(
            f"this test needs the shared data, and {path} lacks {', '.join(missing)}. Get it with "
            f"`python scripts/prepare_data.py --out {path}` (CIFAR-10 from the internet; the ImageNet "
            "sample needs --imagenet-dir, see its --help) or point $HBJAX_DATA at a copy; "
            "`pytest -m 'not shared_data'` runs the tests that need only the shipped sample",
            pytrace=False,
        )
    return path


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if SHARED_DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared_data)


@pytest.fixture(scope="session")
def cifar10_sample() -> pathlib.Path:
    """The CIFAR-10 test sample shipped in the package: ``test/<class>/0000.jpg`` .. ``0099.jpg``."""
    from hbjax.data import cifar10_sample_root

    return pathlib.Path(cifar10_sample_root())


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


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drops JAX's compiled executables and tracing caches after each test module, so one pytest
    process running the whole suite does not keep every network it ever compiled in memory."""
    yield
    import gc
    import sys

    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    gc.collect()
