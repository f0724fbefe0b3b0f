"""Reading back the images an ``hbjax-evaluate`` run on an image folder reads first, independently of
the run's own code: the folder's files in the seeded order of ``seed`` (as ``data=folder`` orders them)."""

from __future__ import annotations

import numpy as np

import hbjax.data


def seeded_first_images(root, num: int, *, seed: int = 0, split: str = "val", preprocess: str = "imagenet"):
    """(x, labels): the first ``num`` images of the folder ``root/split`` in the order of ``seed``."""
    folder = hbjax.data.ImageFolder(str(root), split, hbjax.data.Preprocess(preprocess))
    order = np.random.default_rng(seed).permutation(len(folder))[:num]
    x, y, _ = next(folder.batches(num, indices=order))
    return x, np.asarray(y)
