"""``hbjax-port`` run as a program (``python -m hbjax.cli.port``) on small temporary inputs."""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file

import hbjax
from hbjax.cli.port import PortError, port, read_class_names
from tests._porting import randomize, torch_logits


def run_port(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hbjax.cli.port", *map(str, args)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def vgg11(tmp_path_factory):
    """A random torchvision vgg11 (non-zero biases) and its state dict saved with torch.save."""
    torch.manual_seed(0)
    model = randomize(torchvision.models.vgg11(weights=None), seed=3)
    path = tmp_path_factory.mktemp("port") / "vgg11.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_port_pth_with_class_names(vgg11, tmp_path, imagenet_sample):
    model, pth = vgg11
    out = tmp_path / "vgg11.safetensors"
    result = run_port(pth, "--arch", "vgg11", "--out", out, "--class-names", imagenet_sample / "classes.tsv")
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: vgg11, 1000 classes" in result.stdout
    ported = hbjax.models.load(out)
    assert ported.meta["source"] == "torchvision" and ported.meta["source_file"] == "vgg11.pth"
    assert ported.class_names[:2] == ["tench", "goldfish"]
    assert ported.meta["class_ids"][0] == "n01440764" and len(ported.class_names) == 1000
    x = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    ref = torch_logits(model, x)
    ours = np.asarray(jax.jit(ported.apply)(ported.params, x))
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()


def test_port_safetensors_state_dict(vgg11, tmp_path):
    model, _ = vgg11
    src = tmp_path / "vgg11_state.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(src))
    out = tmp_path / "out.safetensors"
    result = run_port(src, "--arch", "vgg11", "--out", out)
    assert result.returncode == 0, result.stderr
    ported = hbjax.models.load(out)
    direct = hbjax.models.from_torchvision("vgg11", model.state_dict())
    for a, b in zip(jax.tree.leaves(ported.params), jax.tree.leaves(direct.params)):
        np.testing.assert_array_equal(a, b)
    again = run_port(out, "--arch", "vgg11", "--out", tmp_path / "again.safetensors")
    assert again.returncode == 1 and "already an hbjax checkpoint" in again.stderr


def test_port_wrong_arch_names_the_tensor(vgg11, tmp_path):
    _, pth = vgg11
    result = run_port(pth, "--arch", "vgg13", "--out", tmp_path / "x.safetensors")
    assert result.returncode == 1
    assert result.stderr.startswith("hbjax-port: error:") and "vgg13" in result.stderr
    assert "features." in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.safetensors").exists()


class Payload:
    """Stands for an arbitrary object in a .pth; weights_only loading must refuse it."""


def test_port_refuses_pickled_objects_and_bad_inputs(tmp_path):
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"features.0.weight": torch.zeros(1), "x": Payload()}, unsafe)
    result = run_port(unsafe, "--arch", "vgg11", "--out", tmp_path / "o.safetensors")
    assert result.returncode == 1 and "weights_only=True" in result.stderr
    assert "Traceback" not in result.stderr
    text = tmp_path / "weights.txt"
    text.write_text("hello")
    result = run_port(text, "--arch", "vgg11", "--out", tmp_path / "o.safetensors")
    assert result.returncode == 1 and "unknown weight file type '.txt'" in result.stderr
    result = run_port(tmp_path / "absent.pth", "--arch", "vgg11", "--out", tmp_path / "o.safetensors")
    assert result.returncode == 1 and "no such file" in result.stderr
    fake = tmp_path / "fake.pth"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    result = run_port(fake, "--arch", "vgg11", "--out", tmp_path / "o.safetensors")
    assert result.returncode == 1 and "fake.pth" in result.stderr
    result = run_port(fake, "--out", tmp_path / "o.safetensors")
    assert result.returncode == 2 and "--arch" in result.stderr  # argparse usage error


def test_read_class_names(tmp_path, imagenet_sample):
    names, ids = read_class_names(str(imagenet_sample / "classes.tsv"))
    assert len(names) == 1000 and names[0] == "tench" and ids[999] == "n15075141"
    shuffled = tmp_path / "classes.tsv"
    shuffled.write_text("1\tn2\tdog\n0\tn1\tcat\n")
    assert read_class_names(str(shuffled)) == (["cat", "dog"], ["n1", "n2"])
    plain = tmp_path / "names.txt"
    plain.write_text("cat\ndog\n\n")
    assert read_class_names(str(plain)) == (["cat", "dog"], None)
    gap = tmp_path / "gap.tsv"
    gap.write_text("0\tn1\tcat\n2\tn2\tdog\n")
    with pytest.raises(PortError, match="indices must be 0..1"):
        read_class_names(str(gap))


def test_class_name_count_must_match(vgg11):
    _, pth = vgg11
    with pytest.raises(PortError, match="2 class names for a model with 1000 outputs"):
        port(str(pth), "vgg11", class_names=["a", "b"])
