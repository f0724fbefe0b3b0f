"""The benign images an attack evaluation starts from: the first test images of a folder, taken
across the classes in turn, that the model classifies correctly (the paper's section 5 keeps only
correctly classified benign images; taking the classes in turn keeps any prefix balanced)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hbjax.data.folder import DataError, ImageFolder
from hbjax.data.preprocess import Preprocess


def interleave_classes(labels: np.ndarray) -> np.ndarray:
    """The order that takes the classes in turn: every class's first image (by class index), then
    every class's second, ...; a class that runs out drops out."""
    labels = np.asarray(labels)
    rank = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(len(idx))
    return np.lexsort((labels, rank))


def seeded_order(count: int, seed: int) -> np.ndarray:
    """The order in which ``hbjax-evaluate`` reads a folder of ``count`` files with ``seed``
    (``data=folder``), and :func:`correctly_classified` with ``shuffle_seed``."""
    return np.random.default_rng(seed).permutation(count)


def correctly_classified(model, root: str, n: int, *, split: str = "test", per_class: int = 100,
                         offset: int = 0, batch_size: int = 1000, preprocess: str = "cifar",
                         shuffle_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The first ``n`` images (after skipping ``offset``) that ``model`` classifies correctly, among
    the first ``per_class`` images of each class in ``root/split/<class>/``, taken across the classes
    in turn (:func:`interleave_classes`), or in a seeded random order.

    Args:
      model: an :class:`hbjax.models.Model` (``model.apply(model.params, x)`` gives logits).
      root, split, per_class: the image folder (:class:`hbjax.data.ImageFolder`) and how many
        images of each class to consider.
      n: how many images to return; offset: how many correctly classified ones to skip first.
      batch_size: images a forward pass.
      preprocess: ``"cifar"`` or ``"imagenet"`` (:class:`hbjax.data.Preprocess`).
      shuffle_seed: when given, the images are taken in :func:`seeded_order` (``hbjax-evaluate``'s
        order with ``data=folder`` and ``seed=shuffle_seed``, when every file is readable), not class
        by class: with one image a class (the ImageNet sample) that would take the first classes only.

    Returns:
      float32 images (n, H, W, 3) in [0, 1] and their int32 labels (n,).

    Raises:
      DataError: fewer than ``offset + n`` of the images are classified correctly.
    """
    images, labels = ImageFolder(root, split, Preprocess(preprocess), limit_per_class=per_class).load_uint8()
    if shuffle_seed is None:
        order = interleave_classes(labels)
    else:
        order = seeded_order(len(labels), shuffle_seed)
    x_all = images[order].astype(np.float32) / 255.0
    y_all = labels[order].astype(np.int32)
    apply = jax.jit(model.apply)
    pred = np.concatenate([
        np.asarray(jnp.argmax(apply(model.params, x_all[i : i + batch_size]), -1))
        for i in range(0, len(y_all), batch_size)
    ])  # fmt: skip
    keep = np.flatnonzero(pred == y_all)[offset : offset + n]
    if len(keep) < n:
        found = int(np.sum(pred == y_all))
        raise DataError(
            f"only {found} of the {len(y_all)} images under {root}/{split} ({per_class} a class) are "
            f"classified correctly; {offset + n} needed (offset {offset} + n {n})"
        )
    return x_all[keep], y_all[keep]
