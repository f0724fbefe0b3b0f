"""tensorflow-datasets pipelines: the ``cifar10`` and ``imagenet2012`` builders and tfds'
``ImageFolder``, with the preprocessing of :mod:`hbjax.data.preprocess` done in ``tf.data``.

Batches are numpy ``(images float32 (B, H, W, 3) in [0, 1], labels int32 (B,))``, the same as
:class:`hbjax.data.ImageFolder` gives. TensorFlow is an optional dependency (``pip install
hbjax[tf]``); it is imported only when one of these functions runs.

- ``imagenet``: shorter side to 256 (bilinear with antialiasing, rounded to uint8 as Pillow's
  resize), centre crop 224, the offsets rounded as in :func:`hbjax.data.preprocess_image`.
- ``cifar``: 32x32 images are kept as they are; other sizes are resized (bilinear) to 32x32.

References: tensorflow-datasets, https://www.tensorflow.org/datasets (``cifar10``,
``imagenet2012`` with a manual directory, ``tfds.folder_dataset.ImageFolder``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator

import numpy as np

from hbjax.data.folder import DataError
from hbjax.data.preprocess import Preprocess

CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
DEFAULT_PREPROCESS = {"cifar10": Preprocess("cifar"), "imagenet2012": Preprocess("imagenet")}


def _import_tf() -> tuple[Any, Any]:
    """(tensorflow, tensorflow_datasets), or a DataError that says how to install them."""
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            f"the tfds data pipelines need tensorflow and tensorflow-datasets ({e}); "
            "install them with `pip install hbjax[tf]`, or read image folders with "
            "hbjax.data.ImageFolder instead"
        ) from None
    return tf, tfds


@dataclasses.dataclass
class TfdsData:
    """A batched ``tf.data`` pipeline and its class names; iterating yields numpy batches.

    Attributes:
      dataset: ``tf.data.Dataset`` of ``(images float32 (B, H, W, 3), labels int32 (B,))``.
      class_names: names in label order (for ``imagenet2012``: the WordNet ids, whose sorted order
        is the ILSVRC-2012 class index).
      num_examples: examples in the split (before any limit), if known.
      limit: at most this many examples are read (None: all).
      skipped: files that could not be decoded in the last full pass (counted, not raised).
    """

    dataset: Any
    class_names: list[str]
    num_examples: int | None
    limit: int | None = None
    skipped: int = 0

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        seen = 0
        for images, labels in self.dataset.as_numpy_iterator():
            seen += len(labels)
            yield images, labels
        expected = self.num_examples if self.limit is None else self.limit
        if self.num_examples is not None and self.limit is not None:
            expected = min(self.limit, self.num_examples)
        self.skipped = max(0, expected - seen) if expected is not None else 0


def _skip_decoding(tfds: Any) -> dict:
    """tfds decoders that keep the encoded image bytes (decoded in :func:`_preprocess_fn`)."""
    return {"image": tfds.decode.SkipDecoding()}


def _preprocess_fn(tf: Any, p: Preprocess):
    """The tf.data version of :func:`hbjax.data.load_image`: encoded bytes -> float32 (S, S, 3).

    JPEGs are decoded with libjpeg's accurate integer DCT, as Pillow does, so both loaders give the
    same pixels; PNG, GIF (first frame) and BMP through ``tf.io.decode_image``.
    """

    def to_uint8(x):
        return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)

    def fn(data, label):
        image = tf.cond(
            tf.io.is_jpeg(data),
            lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
        )
        image = tf.ensure_shape(image, [None, None, 3])
        shape = tf.shape(image)
        h, w = shape[0], shape[1]
        if p.kind == "cifar":
            same = tf.logical_and(tf.equal(h, p.size), tf.equal(w, p.size))
            image = tf.cond(
                same,
                lambda: image,
                lambda: to_uint8(
                    tf.image.resize(image, [p.size, p.size], method="bilinear", antialias=True)
                ),
            )
        else:
            hf, wf = tf.cast(h, tf.float64), tf.cast(w, tf.float64)
            scale = p.resize / tf.minimum(hf, wf)
            new_h = tf.maximum(p.resize, tf.cast(tf.round(hf * scale), tf.int32))
            new_w = tf.maximum(p.resize, tf.cast(tf.round(wf * scale), tf.int32))
            same = tf.logical_and(tf.equal(h, new_h), tf.equal(w, new_w))
            image = tf.cond(
                same,
                lambda: image,
                lambda: to_uint8(
                    tf.image.resize(image, [new_h, new_w], method="bilinear", antialias=True)
                ),
            )
            top = tf.cast(tf.round(tf.cast(new_h - p.size, tf.float64) / 2.0), tf.int32)
            left = tf.cast(tf.round(tf.cast(new_w - p.size, tf.float64) / 2.0), tf.int32)
            image = image[top : top + p.size, left : left + p.size, :]
        image = tf.ensure_shape(image, [p.size, p.size, 3])
        return tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int32)

    return fn


def _batched(tf: Any, ds: Any, p: Preprocess, batch_size: int, limit: int | None) -> Any:
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if limit is not None:
        ds = ds.take(limit)
    ds = ds.map(_preprocess_fn(tf, p), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.ignore_errors()  # a corrupt image is dropped and counted (TfdsData.skipped)
    return ds.batch(batch_size).prefetch(1)


def load_tfds(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    download: bool = True,
    batch_size: int = 32,
    preprocess: Preprocess | None = None,
    limit: int | None = None,
    shuffle_files: bool = False,
) -> TfdsData:
    """A tfds dataset (``"cifar10"`` or ``"imagenet2012"``) as numpy batches and class names.

    Args:
      name: the tfds builder name.
      split: a tfds split ("train", "test", "validation", "train[:10%]", ...).
      data_dir: where tfds keeps prepared datasets (tfds' default: ``~/tensorflow_datasets``).
      manual_dir: for ``imagenet2012``, the folder holding ``ILSVRC2012_img_train.tar`` and
        ``ILSVRC2012_img_val.tar``, passed to tfds through ``DownloadConfig(manual_dir=...)``.
      download: prepare the dataset when it is not in ``data_dir`` yet (downloads cifar10).
      batch_size: images a batch; the last batch may be smaller.
      preprocess: defaults to ``Preprocess("cifar")`` for cifar10, ``Preprocess("imagenet")``
        for imagenet2012.
      limit: read at most this many examples.
      shuffle_files: shuffle tfds' files (the order is fixed otherwise).

    Raises:
      DataError: tensorflow is missing, or the dataset is not prepared and cannot be (no network,
        no manual directory), with what to do about it.
    """
    tf, tfds = _import_tf()
    if preprocess is None:
        if name not in DEFAULT_PREPROCESS:
            raise DataError(f"no default preprocessing for tfds dataset {name!r}; pass preprocess=")
        preprocess = DEFAULT_PREPROCESS[name]
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # tfds raises DatasetNotFoundError and friends
        raise DataError(f"tfds has no dataset {name!r}: {e}") from None
    if not builder.is_prepared():
        _prepare(tfds, builder, name, data_dir, manual_dir, download)
    try:
        ds = builder.as_dataset(
            split=split, as_supervised=True, shuffle_files=shuffle_files, decoders=_skip_decoding(tfds)
        )
        num_examples = builder.info.splits[split].num_examples
    except (KeyError, ValueError) as e:
        raise DataError(f"tfds dataset {name!r} has no split {split!r}: {e}") from None
    names = list(builder.info.features["label"].names)
    if name == "cifar10" and names == [str(i) for i in range(10)]:
        names = list(CIFAR10_NAMES)
    return TfdsData(_batched(tf, ds, preprocess, batch_size, limit), names, num_examples, limit)


# where tfds downloads a dataset from (the first host it contacts; "*": tfds' own bucket)
DOWNLOAD_HOSTS = {"cifar10": "www.cs.toronto.edu", "*": "storage.googleapis.com"}


def unreachable(host: str, *, port: int = 443, timeout: float = 3.0) -> str | None:
    """None when a TCP connection to host:port opens within ``timeout`` seconds, else the reason."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _prepare(tfds: Any, builder: Any, name: str, data_dir, manual_dir, download: bool) -> None:
    where = builder.data_dir
    if not download:
        raise DataError(
            f"tfds dataset {name!r} is not prepared in {where} and download=False; "
            "pass the data_dir where it was prepared"
        )
    if name == "imagenet2012":
        if manual_dir is None:
            raise DataError(
                "imagenet2012 cannot be downloaded: pass manual_dir=, a folder holding "
                "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from image-net.org)"
            )
        if not os.path.isdir(manual_dir) or not os.listdir(manual_dir):
            raise DataError(
                f"imagenet2012: manual_dir {os.fspath(manual_dir)!r} does not exist or is empty; "
                "it must hold ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar"
            )
    else:
        host = DOWNLOAD_HOSTS.get(name, DOWNLOAD_HOSTS["*"])
        reason = unreachable(host)
        if reason is not None:  # fail in seconds, not after tfds' minutes of retries
            raise DataError(
                f"tfds cannot download {name!r} into {where}: no network ({host}: {reason}). Offline, "
                "read an image folder (data=folder data.root=DIR), the packaged sample "
                "(data=cifar10_sample), or pass data.data_dir= where the dataset was prepared"
            )
    config = tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir) if manual_dir is not None else None
    )
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as e:  # network errors, missing archives, disk full, ...
        raise DataError(
            f"tfds could not prepare {name!r} in {where} ({type(e).__name__}: {e}). Without "
            "network access, prepare it on a machine that has one and pass its data_dir, or read "
            "an image folder (hbjax.data.ImageFolder or hbjax.data.tfds_image_folder)"
        ) from None


def tfds_image_folder(
    root: str | os.PathLike,
    split: str,
    *,
    batch_size: int = 32,
    preprocess: Preprocess | None = None,
    limit: int | None = None,
) -> TfdsData:
    """A ``root/split/<class>/<image>`` folder read through ``tfds.folder_dataset.ImageFolder``.

    tfds lists ``.jpg``, ``.jpeg`` and ``.png`` files, labels them by the sorted class folder
    names (the same indices as :class:`hbjax.data.ImageFolder`) and shuffles the file order
    deterministically. Grayscale and RGBA images are decoded to RGB; files that do not decode are
    dropped and counted in ``skipped`` after a full pass.
    """
    tf, tfds = _import_tf()
    root = os.fspath(root)
    if not os.path.isdir(os.path.join(root, split)):
        raise DataError(f"data folder {os.path.join(root, split)!r} does not exist")
    builder = tfds.folder_dataset.ImageFolder(root, shape=(None, None, 3))
    if split not in builder.info.splits:
        raise DataError(f"{root}: split {split!r} holds no .jpg/.jpeg/.png images")
    ds = builder.as_dataset(split=split, as_supervised=True, decoders=_skip_decoding(tfds))
    names = list(builder.info.features["label"].names)
    num_examples = builder.info.splits[split].num_examples
    preprocess = preprocess or Preprocess("cifar")
    return TfdsData(_batched(tf, ds, preprocess, batch_size, limit), names, num_examples, limit)
