"""LRP invariants: gradient x input, conservation, batching, dtypes, the input normalisation,
CLRP/SGLRP on a hand-checked network, composites from configs, binarisation."""

from __future__ import annotations

import pathlib
import runpy
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import hbjax
from hbjax import lrp
from hbjax.models import LayerSpec, Model, Normalization

REPO = pathlib.Path(__file__).resolve().parents[1]


def small_vgg(*, biases: bool, seed: int = 0, batchnorm: bool = False, size: int = 32) -> Model:
    """A narrow VGG11 (ImageNet layout: adaptive pool to 7x7) with random weights; biases random
    in [-0.1, 0.1] or zero."""
    model = hbjax.models.vgg(
        "vgg11", key=jax.random.key(seed), num_classes=10, input_size=(size, size),
        classifier=(32, 32), width=0.25, batchnorm=batchnorm,
    )  # fmt: skip
    rng = np.random.default_rng(seed)

    def fill(path, value):
        name = jax.tree_util.keystr(path)
        if "'bias'" in name and "'params'" in name:
            return rng.uniform(-0.1, 0.1, value.shape).astype(value.dtype) if biases else 0 * value
        if "'mean'" in name:
            return rng.normal(0, 0.1, value.shape).astype(value.dtype)
        if "'var'" in name or "'scale'" in name:
            return rng.uniform(0.5, 1.5, value.shape).astype(value.dtype)
        return value

    return model.replace(params=jax.tree_util.tree_map_with_path(fill, model.params))


def images(n: int, size: int = 32, seed: int = 0, dtype=jnp.float32) -> jnp.ndarray:
    return jax.random.uniform(jax.random.key(seed), (n, size, size, 3), dtype)


@pytest.fixture(scope="module")
def biased():
    return small_vgg(biases=True)


@pytest.fixture(scope="module")
def unbiased():
    return small_vgg(biases=False, seed=1)


def test_logits_match_the_model(biased):
    x = images(3)
    for composite in ("dtd", "epsilon_plus_flat", "epsilon_gamma_box"):
        r, logits = lrp.relevance_and_logits(biased, x, None, composite=composite)
        np.testing.assert_allclose(logits, biased.apply(biased.params, x), rtol=1e-5, atol=1e-6)
        assert r.shape == x.shape and r.dtype == x.dtype


def test_lrp0_is_gradient_times_input_without_biases(unbiased):
    with jax.enable_x64(True):
        model = hbjax.models.cast(unbiased, jnp.float64)
        x = images(2, dtype=jnp.float64)
        targets = jnp.array([3, 7])
        # LRP-0 from R_top = the target's logit (one-hot times logit) is gradient x input
        r = lrp.relevance(model, x, targets, composite="lrp0", scale_by_logit=True)
        assert r.dtype == jnp.float64
        xn = model.normalization(x)
        # the model normalises inside; differentiate the network after its normalisation
        net = hbjax.models.Sequential(model.layers, Normalization((0.0,) * 3, (1.0,) * 3))
        grads = jax.grad(lambda a: jnp.sum(net.apply(model.params, a)[jnp.arange(2), targets]))(xn)
        np.testing.assert_allclose(r, xn * grads, rtol=1e-9, atol=1e-12 * float(jnp.abs(r).max()))


def test_zplus_conserves_relevance_layer_by_layer(unbiased):
    x = images(2, seed=3)
    layers = lrp.layer_relevances(unbiased, x, jnp.array([1, 4]), composite="dtd")
    totals = np.array([np.asarray(r, np.float64).reshape(2, -1).sum(1) for _, r in layers])
    np.testing.assert_allclose(totals[-1], 1.0)
    for (name, _), total, upper in zip(layers, totals[:-1], totals[1:]):
        np.testing.assert_allclose(total, upper, rtol=1e-4, err_msg=f"relevance lost at {name}")
    assert [name for name, _ in layers][:3] == ["input", "conv1_1", "relu1_1"]


def test_batch_equals_single_images(biased):
    with jax.enable_x64(True):
        model = hbjax.models.cast(biased, jnp.float64)
        x = images(3, seed=5, dtype=jnp.float64)
        targets = jnp.array([0, 5, 9])
        for method in ("lrp", "clrp"):
            h = lrp.heatmap(model, x, targets, composite="epsilon_gamma_box", method=method)
            for i in range(3):
                single = lrp.heatmap(model, x[i : i + 1], targets[i : i + 1], composite="epsilon_gamma_box", method=method)
                np.testing.assert_allclose(h[i], single[0], rtol=1e-9, atol=1e-13)


def test_follows_the_input_dtype(biased):
    x = images(1)
    assert lrp.relevance(biased, x, [0]).dtype == jnp.float32
    with jax.enable_x64(True):
        r64 = lrp.relevance(biased, jnp.asarray(x, jnp.float64), [0])
        assert r64.dtype == jnp.float64
        r64 = np.asarray(r64)
    r32 = np.asarray(lrp.relevance(biased, x, [0]))
    np.testing.assert_allclose(r32, r64, rtol=2e-3, atol=2e-3 * np.abs(r64).max())


def test_relevance_per_pixel_does_not_depend_on_channel_order(biased):
    """A BGR twin (first conv's input channels reversed, normalisation in BGR order) computes the
    same function; its relevance per RGB pixel must be the same."""
    norm = biased.normalization
    bgr_norm = Normalization(norm.mean[::-1], norm.std[::-1], "BGR")
    params = jax.tree.map(np.asarray, biased.params)
    params["params"]["conv1_1"] = dict(params["params"]["conv1_1"])
    params["params"]["conv1_1"]["kernel"] = params["params"]["conv1_1"]["kernel"][:, :, ::-1, :]
    twin = biased.replace(normalization=bgr_norm, params=params)
    x = images(2, seed=2)
    np.testing.assert_allclose(twin.apply(twin.params, x), biased.apply(biased.params, x), rtol=1e-5, atol=1e-6)
    for composite in ("dtd", "epsilon_plus_flat"):
        r = lrp.relevance(biased, x, [1, 2], composite=composite)
        r_twin = lrp.relevance(twin, x, [1, 2], composite=composite)
        np.testing.assert_allclose(r_twin, r, rtol=1e-4, atol=1e-5 * float(jnp.abs(r).max()))


def test_batchnorm_models_are_explained_through_their_folded_twin():
    model = small_vgg(biases=True, batchnorm=True, seed=4)
    folded = hbjax.models.fold_batchnorm(model)
    x = images(2, seed=4)
    r, logits = lrp.relevance_and_logits(model, x, [2, 3], composite="epsilon_gamma_box")
    r_f, logits_f = lrp.relevance_and_logits(folded, x, [2, 3], composite="epsilon_gamma_box")
    np.testing.assert_allclose(logits, model.apply(model.params, x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r, r_f, rtol=1e-3, atol=1e-4 * float(jnp.abs(r_f).max()))


def test_scale_by_logit_multiplies_by_the_target_logit(biased):
    x = images(2, seed=6)
    r, logits = lrp.relevance_and_logits(biased, x, [4, 6], composite="dtd")
    r_scaled = lrp.relevance(biased, x, [4, 6], composite="dtd", scale_by_logit=True)
    scale = np.asarray(logits)[[0, 1], [4, 6]][:, None, None, None]
    np.testing.assert_allclose(r_scaled, r * scale, rtol=1e-5, atol=1e-7)


def test_targets_default_to_the_prediction(biased):
    x = images(3, seed=7)
    h, logits = lrp.heatmap_and_logits(biased, x)
    np.testing.assert_array_equal(h, lrp.heatmap(biased, x, jnp.argmax(logits, -1)))
    # one int explains the same class in every image
    np.testing.assert_array_equal(lrp.heatmap(biased, x, 2), lrp.heatmap(biased, x, [2, 2, 2]))


def test_relevance_fn_composes_with_jit(biased):
    fn = lrp.relevance_fn(biased, composite="epsilon_plus_flat", output="heatmap")

    @jax.jit
    def masks(params, x):
        h, logits = fn(params, x)
        return lrp.binarize(h), logits

    x = images(2, seed=8)
    m, logits = masks(biased.params, x)
    assert m.shape == (2, 32, 32) and m.dtype == jnp.bool_
    h = lrp.heatmap(biased, x, jnp.argmax(logits, -1), composite="epsilon_plus_flat")
    np.testing.assert_array_equal(m, lrp.binarize(h))
    # the wrappers accept traced images and targets too
    traced = jax.jit(lambda x, t: lrp.heatmap(biased, x, t, composite="epsilon_plus_flat"))(x, jnp.argmax(logits, -1))
    np.testing.assert_allclose(traced, h, rtol=1e-6, atol=1e-9)


def test_outputs_carry_no_gradient(biased):
    x = images(1, seed=9)
    g = jax.grad(lambda x: jnp.sum(lrp.relevance(biased, x, [0]) ** 2))(x)
    np.testing.assert_array_equal(g, 0)


# --- CLRP and SGLRP -------------------------------------------------------------------------------


def tiny_model() -> Model:
    """A one-layer network on 1x2x3 images: logits = flatten(x) @ W + b (3 classes)."""
    layers = (LayerSpec("flatten", "flatten"), LayerSpec("dense", "fc1", features=3))
    w = np.array(
        [[1.0, -2.0, 0.5], [0.5, 1.0, -1.0], [-1.0, 0.5, 2.0], [2.0, 0.0, 1.0], [0.0, 1.5, -0.5], [1.0, 1.0, 1.0]],
        np.float32,
    )  # fmt: skip
    b = np.array([0.1, -0.2, 0.3], np.float32)
    norm = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    meta = {"arch": "tiny", "num_classes": 3, "input_size": [1, 2]}
    return Model(layers, norm, {"params": {"fc1": {"kernel": w, "bias": b}}}, meta)


def epsilon_lrp(x: np.ndarray, w: np.ndarray, b: np.ndarray, r_top: np.ndarray, eps: float = 1e-6):
    """R_i = x_i sum_j w_ij r_j / (z_j + eps sign0(z_j)), written out by hand."""
    z = x @ w + b
    s = r_top / (z + eps * np.where(z >= 0, 1.0, -1.0))
    return x * (w @ s)


def test_clrp_and_sglrp_on_a_hand_checked_network():
    model = tiny_model()
    x = np.array([[[[0.2, 0.9, 0.4], [0.7, 0.1, 0.6]]]], np.float32)
    xf = x.reshape(-1).astype(np.float64)
    w = model.params["params"]["fc1"]["kernel"].astype(np.float64)
    b = model.params["params"]["fc1"]["bias"].astype(np.float64)
    z = xf @ w + b
    t = 1
    e_t = np.eye(3)[t]

    lrp_map = epsilon_lrp(xf, w, b, e_t)
    np.testing.assert_allclose(lrp.relevance(model, x, [t], composite="epsilon").reshape(-1), lrp_map, rtol=1e-5)
    # by hand for pixel 0, channel 0: x_0 w_01 / z_1
    assert np.isclose(lrp_map[0], 0.2 * -2.0 / (z[1] + 1e-6))

    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    sglrp = epsilon_lrp(xf, w, b, p[t] * (e_t - p))
    target_part = epsilon_lrp(xf, w, b, p[t] * (1 - p[t]) * e_t)
    dual_part = epsilon_lrp(xf, w, b, p[t] * p * (1 - e_t))
    np.testing.assert_allclose(sglrp, target_part - dual_part, rtol=1e-12)
    got = lrp.relevance(model, x, [t], composite="epsilon", method="sglrp").reshape(-1)
    np.testing.assert_allclose(got, sglrp, rtol=1e-4, atol=1e-7)

    dual = epsilon_lrp(xf, w, b, (1 - e_t) / 2)
    clrp = lrp_map - dual * lrp_map.sum() / dual.sum()
    got = lrp.relevance(model, x, [t], composite="epsilon", method="clrp").reshape(-1)
    np.testing.assert_allclose(got, clrp, rtol=1e-4, atol=1e-6)
    h = lrp.heatmap(model, x, [t], composite="epsilon", method="clrp")
    np.testing.assert_allclose(h.reshape(-1), np.maximum(clrp.reshape(2, 3).sum(1), 0), rtol=1e-4, atol=1e-6)


def discriminative_model() -> Model:
    """Three pixels (shared, a, b) x 3 channels -> classes A, B, C: A sees the shared pixel (weight
    2) and pixel a (1), B the shared pixel (2) and pixel b (1), C the shared pixel only (1)."""
    per_pixel = np.array([[2.0, 2.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    w = np.repeat(per_pixel, 3, axis=0)  # rows: (pixel, channel) in NHWC flatten order
    layers = (LayerSpec("flatten", "flatten"), LayerSpec("dense", "fc1", features=3))
    norm = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    params = {"params": {"fc1": {"kernel": w, "bias": np.zeros(3, np.float32)}}}
    return Model(layers, norm, params, {"arch": "discriminative", "num_classes": 3})


def test_contrastive_maps_are_class_discriminative():
    """LRP gives the shared pixel most relevance for both A and B; CLRP and SGLRP point at the
    pixel that tells A from B."""
    model = discriminative_model()
    x = np.full((1, 1, 3, 3), 0.5, np.float32)
    for target, own in ((0, 1), (1, 2)):
        h = {m: np.asarray(lrp.heatmap(model, x, [target], composite="epsilon", method=m))[0, 0] for m in lrp.METHODS}
        want_lrp = [2 / 3, 1 / 3, 0] if own == 1 else [2 / 3, 0, 1 / 3]
        np.testing.assert_allclose(h["lrp"], want_lrp, rtol=1e-5, atol=1e-7)
        assert np.argmax(h["lrp"]) == 0
        assert np.argmax(h["clrp"]) == own and np.argmax(h["sglrp"]) == own
        # CLRP for A: dual = (R_B + R_C) / 2 = (5/6, 0, 1/6); max(0, R_A - dual) = (0, 1/3, 0)
        want = np.zeros(3)
        want[own] = 1 / 3
        np.testing.assert_allclose(h["clrp"], want, atol=1e-6)


# --- composites from configs ----------------------------------------------------------------------


def test_composites_from_names_and_configs(biased):
    x = images(1, seed=12)
    by_name = lrp.relevance(biased, x, [3], composite="epsilon_gamma_box")
    spelled_out = {"first": "zbox", "kinds": {"conv": {"rule": "gamma", "gamma": 0.25}, "dense": "epsilon"}}
    np.testing.assert_array_equal(lrp.relevance(biased, x, [3], composite=spelled_out), by_name)
    custom = lrp.get_composite({"base": "epsilon_gamma_box", "gamma": 0.5, "names": {"fc3": "lrp0"}})
    assert dict(custom.names)["fc3"] == lrp.lrp0()
    assert dict(custom.kinds)["conv"] == lrp.gamma(0.5)
    assert not np.allclose(lrp.relevance(biased, x, [3], composite=custom), by_name)
    # a rule per layer name wins over the input-layer rule
    named_first = {"base": "dtd", "names": {"conv1_1": "flat"}}
    np.testing.assert_array_equal(
        lrp.relevance(biased, x, [3], composite=named_first),
        lrp.relevance(biased, x, [3], composite={"base": "dtd", "first": "flat"}),
    )


# --- binarisation (eq. 2) -------------------------------------------------------------------------


def test_binarize_std_rule_matches_the_formula():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 20, 30)) ** 3
    for signed in (False, True):
        a = h if signed else np.abs(h)
        want = a > a.mean((1, 2), keepdims=True) + 2.0 * a.std((1, 2), keepdims=True)
        np.testing.assert_array_equal(lrp.binarize(jnp.asarray(h, jnp.float32), signed=signed), want)
    a = np.abs(h)
    want = a > a.mean((1, 2), keepdims=True) + 1.0 * a.std((1, 2), keepdims=True)
    np.testing.assert_array_equal(jax.jit(lambda h: lrp.binarize(h, k=1.0))(h.astype(np.float32)), want)


def test_binarize_top_fraction():
    rng = np.random.default_rng(1)
    h = rng.normal(size=(2, 20, 20)).astype(np.float32)
    m = lrp.binarize(h, rule="top", fraction=0.05)
    assert m.shape == h.shape
    np.testing.assert_array_equal(m.sum((1, 2)), [20, 20])
    for i in range(2):
        kept = np.abs(h[i])[np.asarray(m[i])]
        dropped = np.abs(h[i])[~np.asarray(m[i])]
        assert kept.min() >= dropped.max()
    signed = lrp.binarize(h, rule="top", fraction=0.05, signed=True)
    assert np.all(h[np.asarray(signed)] > 0)
    assert not lrp.binarize(h[0], rule="top", fraction=0.0).any()
    assert lrp.binarize(h[0], rule="top", fraction=1.0).all()


def test_explain_figure(biased, tmp_path):
    x = images(2, seed=13)
    fig = lrp.explain_figure(biased, x, composite="dtd", other_rank=3, title="random weights")
    assert len(fig.axes) == 8
    assert fig.axes[1].get_title().startswith("LRP ") and "(top-3)" in fig.axes[2].get_title()
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="other_rank"):
        lrp.explain_figure(biased, x, other_rank=6)


def test_methods_figure(biased, tmp_path):
    """One figure per image: a row per method, a column per class (the prediction, then ranks)."""
    x = images(2, seed=13)
    figs = lrp.methods_figure(biased, x, composite="dtd", methods=("lrp", "sglrp"), other_ranks=(2, 4))
    assert len(figs) == 2
    titles = [ax.get_title() for ax in figs[1].axes]
    assert len(titles) == 2 * 4
    assert titles[0] == "LRP" and titles[1].startswith("LRP ") and "(top-1)" in titles[1]
    assert "(top-4)" in titles[3] and titles[4] == "SGLRP" and titles[6].startswith("SGLRP ")
    figs[0].savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="other_ranks"):
        lrp.methods_figure(biased, x, other_ranks=(1,))


def test_heatmaps_script(tmp_path, monkeypatch):
    """scripts/heatmaps.py renders a folder of images with the shipped CIFAR-10 model."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "out"
    argv = ["heatmaps.py", str(folder), "--model", "vgg19_cifar", "--per-figure", "2", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "scripts" / "heatmaps.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert sorted(p.name for p in out.iterdir()) == ["vgg19_cifar_dtd_lrp_00.png", "vgg19_cifar_dtd_lrp_01.png"]
    # --methods: one PNG per image, named after it
    monkeypatch.setattr(sys, "argv", [*argv[:4], "--methods", "lrp", "clrp", "--indices", "2", "--out", str(out / "m")])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "scripts" / "heatmaps.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert [p.name for p in (out / "m").iterdir()] == ["vgg19_cifar_dtd_lrp_clrp_2.png"]
