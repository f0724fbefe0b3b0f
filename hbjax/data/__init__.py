"""Input pipelines: image folders (Pillow) and tensorflow-datasets builders, with preprocessing."""

from hbjax.data.folder import IMAGE_EXTENSIONS, DataError, ImageFolder
from hbjax.data.preprocess import Preprocess, preprocess_image

__all__ = ["IMAGE_EXTENSIONS", "DataError", "ImageFolder", "Preprocess", "preprocess_image"]
