"""Porting bar for Keras VGG16/VGG19: ported probabilities equal Keras's within 1e-4.

Both file layouts: what Keras 3 writes with ``save_weights("*.weights.h5")`` and the legacy HDF5
layout of the file Keras distributes (``vgg19_weights_tf_dim_ordering_tf_kernels.h5``: a root
``layer_names`` attribute, one group per layer with a ``weight_names`` attribute). Keras takes BGR
0-255 minus the ImageNet means (``keras.applications.vgg19.preprocess_input(rgb * 255)``); the ported
model takes RGB in [0, 1].
"""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import h5py  # noqa: E402
import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from tests._porting import imagenet_images  # noqa: E402

import hbjax  # noqa: E402
from hbjax.models import PortingError  # noqa: E402

APPS = {"vgg16": keras.applications.vgg16, "vgg19": keras.applications.vgg19}
CONSTRUCTORS = {"vgg16": keras.applications.VGG16, "vgg19": keras.applications.VGG19}


def randomize(model: keras.Model, images: np.ndarray, preprocess, seed: int) -> None:
    """He-normal kernels and non-zero biases; the output layer is scaled so that the logits on
    ``images`` have a standard deviation of 3 (probabilities neither uniform nor one-hot)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not layer.weights:
            continue
        kernel, bias = layer.get_weights()
        fan_in = int(np.prod(kernel.shape[:-1]))
        kernel = rng.standard_normal(kernel.shape, np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        layer.set_weights([kernel, rng.normal(0.0, 0.1, bias.shape).astype(np.float32)])
    features = keras.Model(model.input, model.get_layer("fc2").output)
    f = np.asarray(features(preprocess(images * 255.0)))
    head = model.get_layer("predictions")
    kernel, bias = head.get_weights()
    scale = 3.0 / float(np.std(f @ kernel + bias))
    head.set_weights([kernel * scale, bias * scale])


def write_legacy_h5(model: keras.Model, path: str) -> None:
    """The layout of Keras's distributed VGG weight files (Keras 2 ``save_weights`` to HDF5)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.name.encode() for layer in model.layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.5"
        for layer in model.layers:
            group = f.create_group(layer.name)
            values = layer.get_weights()
            names = [f"{layer.name}/{n}:0" for n in ("kernel", "bias")][: len(values)]
            group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for name, value in zip(names, values):
                group.create_dataset(name, data=value)


@pytest.fixture(scope="module")
def images(imagenet_sample) -> np.ndarray:
    return imagenet_images(imagenet_sample, 224)


@pytest.fixture(scope="module", params=["vgg16", "vgg19"])
def keras_files(request, images, tmp_path_factory):
    """(arch, Keras probabilities, Keras 3 file, legacy file) for a random Keras VGG."""
    arch = request.param
    keras.utils.set_random_seed(0)
    model = CONSTRUCTORS[arch](weights=None)
    randomize(model, images, APPS[arch].preprocess_input, seed=1)
    probs = np.asarray(model(APPS[arch].preprocess_input(images * 255.0)))
    tmp = tmp_path_factory.mktemp(arch)
    keras3 = str(tmp / f"{arch}.weights.h5")
    legacy = str(tmp / f"{arch}_weights_tf_dim_ordering_tf_kernels.h5")
    model.save_weights(keras3)
    write_legacy_h5(model, legacy)
    del model
    return arch, probs, keras3, legacy


def strip_layer_names(keras3: str, path: str) -> None:
    """A Keras 3 file as versions before the ``vars`` "name" attribute wrote it."""
    with h5py.File(keras3) as src, h5py.File(path, "w") as dst:
        for key in src["layers"]:
            vars_src = src["layers"][key]["vars"]
            vars_dst = dst.create_group(f"layers/{key}/vars")
            for i in vars_src:
                vars_dst.create_dataset(i, data=np.asarray(vars_src[i]))


@pytest.mark.parametrize("layout", ["keras3", "legacy", "keras3_unnamed"])
def test_keras_probabilities_match(keras_files, layout, images, tmp_path):
    arch, probs, keras3, legacy = keras_files
    path = {"keras3": keras3, "legacy": legacy}.get(layout, str(tmp_path / "old.weights.h5"))
    if layout == "keras3_unnamed":  # layers keyed by class only: ported by their order
        strip_layer_names(keras3, path)
    if layout == "legacy":
        with h5py.File(path) as f:  # the layout we mean to reproduce
            assert b"block1_conv1" in list(f.attrs["layer_names"])
            assert list(f["block1_conv1"].attrs["weight_names"]) == [
                b"block1_conv1/kernel:0", b"block1_conv1/bias:0",
            ]  # fmt: skip
    model = hbjax.models.from_keras(arch, path)
    assert model.meta["source"] == "keras" and model.num_classes == 1000
    logits = jax.jit(model.apply)(model.params, images)
    ours = np.asarray(jax.nn.softmax(logits, axis=-1))
    assert probs.max() > 0.05 and np.abs(probs[0] - probs[1]).max() > 0.05  # a check that can fail
    np.testing.assert_allclose(ours, probs, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(ours.argmax(-1), probs.argmax(-1))


def test_keras_errors(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(PortingError, match="notes.h5.*not a readable HDF5 file"):
        hbjax.models.from_keras("vgg19", text)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_group("something")
    with pytest.raises(PortingError, match="neither a legacy Keras weight file"):
        hbjax.models.from_keras("vgg19", empty)
    with pytest.raises(PortingError, match="no batch norm"):
        hbjax.models.from_keras("vgg19_bn", empty)


def test_port_cli_keras_file(keras_files, tmp_path):
    """``hbjax-port`` on the legacy Keras file gives the weights from_keras gives."""
    arch, _, _, legacy = keras_files
    out = tmp_path / f"{arch}.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "hbjax.cli.port", legacy, "--arch", arch, "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ported, direct = hbjax.models.load(out), hbjax.models.from_keras(arch, legacy)
    assert ported.normalization == direct.normalization and ported.meta["source"] == "keras"
    for a, b in zip(jax.tree.leaves(ported.params), jax.tree.leaves(direct.params)):
        np.testing.assert_array_equal(a, b)
