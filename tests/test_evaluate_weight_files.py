"""hbjax-evaluate end to end on ImageNet-sized input with weight files: ``model=torchvision`` (a .pth
and a .safetensors of a random torchvision VGG11, a .pth of a random ResNet-18) and ``model=keras`` (a legacy .h5 of a random
Keras VGG16), on two images of the shared ImageNet sample through ``data=folder``.

Random weights classify nothing correctly, so the output layer's bias is raised for the first
image's class until that image is classified correctly by a small margin (0.05): the run then has
one correct image to attack (PGD, 2 steps) and to clean. Each run compiles a
224x224 VGG (forward, LRP, attack); about a minute each on two CPU cores, the reason these
tests take longer than most.
"""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import jax
import numpy as np
import pytest
import torch
import torchvision

import hbjax
import hbjax.data
from hbjax.experiment import store

from tests._images import seeded_first_images

NUM = 2


def _evaluate(args):
    out = subprocess.run([sys.executable, "-m", "hbjax.evaluate", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"hbjax-evaluate failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def _first_images(imagenet_sample):
    """The images the run reads first (the folder's order under seed 0) and their labels."""
    return seeded_first_images(imagenet_sample, NUM)


def _bias_shift(logits: np.ndarray, label: int) -> float:
    """How much to add to the output bias of ``label`` so that image 0 is classified as ``label``
    with a margin of 0.05."""
    others = np.delete(logits[0], label)
    return float(others.max() - logits[0, label] + 0.05)


def _run_args(imagenet_sample, run_dir):
    return [
        "experiment=smoke", "progress=false", "attack.params.steps=2", f"num_examples={NUM}", f"batch_size={NUM}",
        "num_panels=1", f"data.root={imagenet_sample}", "data.split=val", "data.preprocess=imagenet",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip


def _check_run(run_dir, label):
    summary = json.loads((run_dir / "results.json").read_text())
    assert summary["n_images"] == NUM
    assert summary["n_correct"] >= 1  # image 0, by construction
    assert summary["n_attack_success"] + summary["n_attack_failed"] == summary["n_correct"]
    assert 0.0 <= summary["control"]["top1"] <= 1.0
    rows = store.read_csv(str(run_dir / "examples.csv"))
    assert int(rows["label"][0]) == label


@pytest.fixture(scope="module")
def torchvision_files(imagenet_sample, tmp_path_factory):
    """(.pth path, .safetensors path, label of image 0) for a random VGG11 biased toward image 0."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = torchvision.models.vgg11(weights=None).eval()
    x, y = _first_images(imagenet_sample)
    model = hbjax.models.from_torchvision("vgg11", net.state_dict())
    logits = np.asarray(jax.jit(model.apply)(model.params, x))
    with torch.no_grad():
        net.classifier[6].bias[int(y[0])] += _bias_shift(logits, int(y[0]))
    tmp = tmp_path_factory.mktemp("torchvision")
    pth, st = tmp / "vgg11.pth", tmp / "vgg11.safetensors"
    torch.save(net.state_dict(), pth)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(st))
    del net, model
    return pth, st, int(y[0])


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_torchvision_weights_end_to_end(kind, torchvision_files, imagenet_sample, tmp_path):
    pth, st, label = torchvision_files
    path = pth if kind == "pth" else st
    _evaluate([*_run_args(imagenet_sample, tmp_path), "model=torchvision", f"model.name={path}", "model.arch=vgg11"])
    _check_run(tmp_path, label)


def test_torchvision_resnet_weights_end_to_end(imagenet_sample, tmp_path):
    """model=torchvision with a ResNet-18 .pth (random weights and batch-norm statistics, biased
    toward image 0 through the fc bias as above)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x, y = _first_images(imagenet_sample)
    model = hbjax.models.from_torchvision("resnet18", net.state_dict())
    logits = np.asarray(jax.jit(model.apply)(model.params, x))
    with torch.no_grad():
        net.fc.bias[int(y[0])] += _bias_shift(logits, int(y[0]))
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    del net, model
    run_dir = tmp_path / "run"
    _evaluate([*_run_args(imagenet_sample, run_dir), "model=torchvision", f"model.name={path}", "model.arch=resnet18"])
    _check_run(run_dir, int(y[0]))


VGG16_CONVS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _write_keras_vgg16_legacy(path, seed: int) -> None:
    """Random VGG16 weights in the legacy layout of Keras's distributed files (Keras 2
    ``save_weights`` to HDF5): a group per layer with ``weight_names``; kernels HWIO / (in, out)."""
    rng = np.random.default_rng(seed)
    layers = []
    c_in = 3
    for b, block in enumerate(VGG16_CONVS, start=1):
        for i, c_out in enumerate(block, start=1):
            layers.append((f"block{b}_conv{i}", (3, 3, c_in, c_out)))
            c_in = c_out
    layers += [("fc1", (7 * 7 * 512, 4096)), ("fc2", (4096, 4096)), ("predictions", (4096, 1000))]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([name.encode() for name, _ in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.5"
        for name, shape in layers:
            group = f.create_group(name)
            names = [f"{name}/kernel:0", f"{name}/bias:0"]
            group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            fan_in = int(np.prod(shape[:-1]))
            kernel = rng.standard_normal(shape, np.float32) * np.float32(np.sqrt(2.0 / fan_in))
            group.create_dataset(names[0], data=kernel)
            group.create_dataset(names[1], data=rng.normal(0.0, 0.1, shape[-1]).astype(np.float32))


def test_keras_weights_end_to_end(imagenet_sample, tmp_path):
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    _write_keras_vgg16_legacy(path, seed=0)
    x, y = _first_images(imagenet_sample)
    model = hbjax.models.from_weight_file(str(path), "vgg16")
    logits = np.asarray(jax.jit(model.apply)(model.params, x))
    del model
    with h5py.File(path, "r+") as f:
        f["predictions/predictions/bias:0"][int(y[0])] += _bias_shift(logits, int(y[0]))
    run_dir = tmp_path / "run"
    _evaluate([*_run_args(imagenet_sample, run_dir), "model=keras", f"model.name={path}", "model.arch=vgg16"])
    _check_run(run_dir, int(y[0]))


def test_a_weight_file_of_the_other_kind_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"")
    with pytest.raises(hbjax.models.WeightFileError, match="a keras weight file, but the model source is 'torchvision'"):
        hbjax.models.from_weight_file(str(path), "vgg11", source="torchvision")
    notes = tmp_path / "weights.txt"
    notes.write_text("no weights")
    with pytest.raises(hbjax.models.WeightFileError, match="unknown weight file type"):
        hbjax.models.from_weight_file(str(notes), "vgg11")
    with pytest.raises(hbjax.models.WeightFileError, match="no such file"):
        hbjax.models.from_weight_file(str(tmp_path / "missing.pth"), "vgg11")
