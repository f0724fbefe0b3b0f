"""The CIFAR-10 test sample shipped inside the package, so that evaluation, prediction and the tests
run offline anywhere after ``pip install``.

``cifar10_sample/test/<class>/NNNN.jpg``: images 0000-0099 of each class of the CIFAR-10 test split
(1,000 images, 100 a class, about 0.9 MB), the same JPEG files as the image-folder copy of CIFAR-10
that ``scripts/prepare_data.py`` describes. Read it with :class:`hbjax.data.ImageFolder`::

    ImageFolder(cifar10_sample_root(), "test", Preprocess("cifar"))
"""

from __future__ import annotations

from importlib import resources

CIFAR10_SAMPLE_SPLIT = "test"
CIFAR10_SAMPLE_PER_CLASS = 100


def cifar10_sample_root() -> str:
    """The root of the shipped sample (``root/test/<class>/<image>``), a folder inside the package."""
    return str(resources.files("hbjax.data") / "cifar10_sample")
