"""hbjax.data.correctly_classified: the held-fixed benign images of the attack tests and
scripts/robustness.py (on the shipped sample and the shipped model)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hbjax
from hbjax.data import DataError, ImageFolder, correctly_classified, interleave_classes


def test_interleave_takes_the_classes_in_turn():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    order = interleave_classes(labels)
    assert labels[order].tolist() == [0, 1, 2, 0, 1, 2, 0, 2, 2]
    assert order.tolist() == [0, 3, 5, 1, 4, 6, 2, 7, 8]  # within a class, file order is kept
    equal = np.repeat(np.arange(10), 100)  # equal classes: the index modulo the class size
    np.testing.assert_array_equal(interleave_classes(equal), np.argsort(np.arange(1000) % 100, kind="stable"))


@pytest.fixture(scope="module")
def shipped():
    return hbjax.models.load("vgg19_cifar")


def test_the_first_correctly_classified_images_in_class_turn(shipped, cifar10_sample):
    x, y = correctly_classified(shipped, str(cifar10_sample), 30, batch_size=300)
    assert x.shape == (30, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
    images, labels = ImageFolder(str(cifar10_sample), "test", limit_per_class=100).load_uint8()
    order = interleave_classes(labels)
    x_all, y_all = images[order].astype(np.float32) / 255.0, labels[order]
    pred = np.asarray(jnp.argmax(jax.jit(shipped.apply)(shipped.params, x_all), -1))
    keep = np.flatnonzero(pred == y_all)
    assert len(keep) < len(y_all)  # the model misses some, so the selection has something to skip
    np.testing.assert_array_equal(x, x_all[keep[:30]])
    np.testing.assert_array_equal(y, y_all[keep[:30]])
    x_off, y_off = correctly_classified(shipped, str(cifar10_sample), 5, offset=25)
    np.testing.assert_array_equal(x_off, x[25:])
    np.testing.assert_array_equal(y_off, y[25:])


def test_asking_for_more_than_are_correct_is_a_data_error(shipped, cifar10_sample):
    with pytest.raises(DataError, match=r"classified correctly; 11 needed"):
        correctly_classified(shipped, str(cifar10_sample), 11, per_class=1)


def test_a_shuffle_seed_takes_the_evaluation_order(shipped, cifar10_sample):
    """shuffle_seed: the folder's files in hbjax-evaluate's seeded order, the correct ones kept."""
    x, y = correctly_classified(shipped, str(cifar10_sample), 12, shuffle_seed=5)
    images, labels = ImageFolder(str(cifar10_sample), "test", limit_per_class=100).load_uint8()
    order = np.random.default_rng(5).permutation(len(labels))
    x_all, y_all = images[order].astype(np.float32) / 255.0, labels[order]
    pred = np.asarray(jnp.argmax(jax.jit(shipped.apply)(shipped.params, x_all), -1))
    keep = np.flatnonzero(pred == y_all)[:12]
    np.testing.assert_array_equal(x, x_all[keep])
    np.testing.assert_array_equal(y, y_all[keep])
    x_classes, _ = correctly_classified(shipped, str(cifar10_sample), 12)
    assert not np.array_equal(x, x_classes)  # a different order from the class-by-class one
