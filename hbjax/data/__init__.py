"""Input pipelines: image folders (Pillow), tensorflow-datasets builders and the shipped CIFAR-10
sample, with preprocessing."""

from hbjax.data.folder import IMAGE_EXTENSIONS, DataError, ImageFolder, load_image
from hbjax.data.preprocess import Preprocess, preprocess_image
from hbjax.data.sample import CIFAR10_SAMPLE_PER_CLASS, CIFAR10_SAMPLE_SPLIT, cifar10_sample_root
from hbjax.data.selection import correctly_classified, interleave_classes, seeded_order
from hbjax.data.tfds_data import TfdsData, load_tfds, tfds_image_folder

__all__ = [
    "CIFAR10_SAMPLE_PER_CLASS", "CIFAR10_SAMPLE_SPLIT", "IMAGE_EXTENSIONS", "DataError", "ImageFolder",
    "Preprocess", "TfdsData", "cifar10_sample_root", "correctly_classified", "interleave_classes", "load_image",
    "load_tfds", "preprocess_image", "seeded_order", "tfds_image_folder",
]  # fmt: skip
