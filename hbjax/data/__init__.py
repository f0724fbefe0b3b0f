"""Input pipelines: image folders (Pillow) and tensorflow-datasets builders, with preprocessing."""

from hbjax.data.folder import IMAGE_EXTENSIONS, DataError, ImageFolder, load_image
from hbjax.data.preprocess import Preprocess, preprocess_image
from hbjax.data.tfds_data import TfdsData, load_tfds, tfds_image_folder

__all__ = [
    "IMAGE_EXTENSIONS", "DataError", "ImageFolder", "Preprocess", "TfdsData", "load_image",
    "load_tfds", "preprocess_image", "tfds_image_folder",
]  # fmt: skip
