"""Heat and Blur (Algorithm 1): the blur against scipy, restore, and the defense's invariants."""

from __future__ import annotations

import functools
import inspect

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from hbjax import defense, lrp, models


def scipy_blur(x: np.ndarray, sigma, mode: str, truncate: float = 4.0) -> np.ndarray:
    sigmas = np.broadcast_to(np.asarray(sigma, np.float64), (x.shape[0],))
    return np.stack(
        [ndi.gaussian_filter(img, (s, s, 0), mode=mode, truncate=truncate) for img, s in zip(x, sigmas)]
    )


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(size=(3, 21, 26, 3)).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# blur


def test_kernel_radius_follows_scipy():
    assert defense.kernel_radius(1.0) == 4
    assert defense.kernel_radius(1.2) == 5
    assert defense.kernel_radius(0.8) == 3
    assert defense.kernel_radius(0.1) == 0
    assert defense.kernel_radius(2.0, truncate=3.0) == 6


@pytest.mark.parametrize("mode", list(defense.BORDER_MODES))
@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.7, 3.0])
def test_blur_matches_scipy(images, mode, sigma):
    ours = np.asarray(defense.gaussian_blur(images, sigma, mode=mode))
    ref = scipy_blur(images, sigma, mode)
    r = defense.kernel_radius(sigma)
    np.testing.assert_allclose(ours[:, r:-r, r:-r], ref[:, r:-r, r:-r], atol=1e-5, rtol=0)
    # The padding reproduces scipy's border mode, so the border agrees as well.
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_blur_truncate(images):
    ours = np.asarray(defense.gaussian_blur(images, 1.5, truncate=2.5, mode="nearest"))
    np.testing.assert_allclose(ours, scipy_blur(images, 1.5, "nearest", truncate=2.5), atol=1e-5)


def test_blur_float64():
    x = np.random.default_rng(1).uniform(size=(2, 12, 10, 3))
    with jax.enable_x64(True):
        ours = defense.gaussian_blur(jnp.asarray(x), 1.3, mode="mirror")
        assert ours.dtype == jnp.float64
        np.testing.assert_allclose(ours, scipy_blur(x, 1.3, "mirror"), atol=1e-12)


def test_per_image_sigma_uses_the_largest_kernel(images):
    sigma = np.array([0.8, 1.0, 1.2], np.float32)
    ours = np.asarray(defense.gaussian_blur(images, sigma))
    r = defense.kernel_radius(1.2)
    for i, s in enumerate(sigma):
        ref = scipy_blur(images[i : i + 1], s, "reflect", truncate=r / float(s))
        np.testing.assert_allclose(ours[i : i + 1], ref, atol=1e-5)
        # and within the tail weight of scipy's default truncation
        np.testing.assert_allclose(ours[i : i + 1], scipy_blur(images[i : i + 1], s, "reflect"), atol=1e-4)


def test_traced_sigma_needs_sigma_max(images):
    x = jnp.asarray(images)
    blur = jax.jit(lambda x, s: defense.gaussian_blur(x, s, sigma_max=1.5))
    sigma = jnp.array([0.9, 1.1, 1.5], jnp.float32)
    np.testing.assert_allclose(blur(x, sigma), defense.gaussian_blur(x, sigma, sigma_max=1.5), atol=1e-6)
    with pytest.raises(ValueError, match="sigma_max"):
        jax.jit(lambda x, s: defense.gaussian_blur(x, s))(x, sigma)


def test_blur_under_vmap(images):
    x = jnp.asarray(images)
    sigma = jnp.array([0.8, 1.0, 1.2], jnp.float32)
    per_image = jax.vmap(lambda img, s: defense.gaussian_blur(img[None], s, sigma_max=1.2)[0])(x, sigma)
    np.testing.assert_allclose(per_image, defense.gaussian_blur(x, sigma, sigma_max=1.2), atol=1e-6)


@pytest.mark.parametrize("sigma", [1.0, np.array([0.8, 1.0, 1.2], np.float32)])
def test_shifted_blur_equals_dm_pix(images, sigma):
    """The CPU form of the blur computes dm_pix's sums, values and input gradients alike."""
    r = defense.kernel_radius(1.2)
    xp = jnp.pad(jnp.asarray(images), ((0, 0), (r, r), (r, r), (0, 0)), mode="symmetric")
    s = jnp.asarray(sigma, jnp.float32)
    pix = functools.partial(dm_pix.gaussian_blur, kernel_size=2 * r + 1, padding="VALID")

    def ours(xp):
        return defense._separable_shifted_blur(xp, s, r)

    def theirs(xp):
        return jax.vmap(pix)(xp, s) if s.ndim else pix(xp, s)

    np.testing.assert_allclose(ours(xp), theirs(xp), atol=1e-6, rtol=0)
    probe = jnp.asarray(np.random.default_rng(3).normal(size=images.shape), jnp.float32)
    g_ours = jax.grad(lambda v: jnp.sum(ours(v) * probe))(xp)
    g_theirs = jax.grad(lambda v: jnp.sum(theirs(v) * probe))(xp)
    np.testing.assert_allclose(g_ours, g_theirs, atol=1e-5, rtol=0)


def test_blur_keeps_constant_images_except_constant_mode():
    x = np.full((1, 9, 9, 3), 0.7, np.float32)
    for mode in ("reflect", "mirror", "nearest", "wrap"):
        np.testing.assert_allclose(defense.gaussian_blur(x, 1.0, mode=mode), x, atol=1e-6)
    dark = np.asarray(defense.gaussian_blur(x, 1.0, mode="constant"))
    assert dark[0, 0, 0, 0] < 0.5 and abs(dark[0, 4, 4, 0] - 0.7) < 1e-6


@pytest.mark.parametrize(
    "sigma, match",
    [(0.0, "positive"), (-1.0, "positive"), (float("nan"), "positive"), (np.array([1.0, 0.0, 1.0]), "positive"),
     (np.ones(2), "one value per image")],
)  # fmt: skip
def test_blur_bad_sigma(images, sigma, match):
    with pytest.raises(ValueError, match=match):
        defense.gaussian_blur(images, sigma)


def test_blur_bad_input(images):
    with pytest.raises(ValueError, match="border mode"):
        defense.gaussian_blur(images, 1.0, mode="edge")
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        defense.gaussian_blur(images[0], 1.0)
    with pytest.raises(ValueError, match="floating"):
        defense.gaussian_blur(images.astype(np.uint8), 1.0)


# --------------------------------------------------------------------------------------------------
# restore


def test_restore_takes_masked_pixels_from_the_input(images):
    blurred = np.asarray(defense.gaussian_blur(images, 1.0))
    mask = np.random.default_rng(2).uniform(size=images.shape[:3]) < 0.3
    out = np.asarray(defense.restore(images, blurred, mask))
    np.testing.assert_array_equal(out[mask], images[mask])
    np.testing.assert_array_equal(out[~mask], blurred[~mask])
    with pytest.raises(ValueError, match="mask must be bool"):
        defense.restore(images, blurred, mask.astype(np.float32))
    with pytest.raises(ValueError, match="mask must be bool"):
        defense.restore(images, blurred, mask[:, :-1])
    with pytest.raises(ValueError, match="one shape"):
        defense.restore(images, blurred[:, :-1], mask)


# --------------------------------------------------------------------------------------------------
# Heat and Blur on a small CIFAR VGG


@pytest.fixture(scope="module")
def model() -> models.Model:
    return models.vgg_cifar("vgg11", key=jax.random.key(3))


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    rng = np.random.default_rng(4)
    # smooth random images (a blur of noise) give heatmaps with structure
    x = rng.uniform(size=(4, 32, 32, 3)).astype(np.float32)
    return np.clip(scipy_blur(x, 1.5, "reflect") * 1.5 - 0.25, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def cleaned(model, batch) -> defense.Cleaned:
    return defense.clean(model, batch, jax.random.key(0), sigma=(0.8, 1.2))


def test_restored_pixels_equal_the_input_and_the_others_the_blur(batch, cleaned):
    mask = np.asarray(cleaned.mask)
    image, blurred = np.asarray(cleaned.image), np.asarray(cleaned.blurred)
    assert 0 < mask.mean() < 0.5
    np.testing.assert_array_equal(image[mask], batch[mask])
    np.testing.assert_array_equal(image[~mask], blurred[~mask])
    reblur = np.asarray(defense.gaussian_blur(batch, cleaned.sigma, sigma_max=1.2))
    np.testing.assert_allclose(blurred, reblur, atol=1e-6)
    r = defense.kernel_radius(1.2)
    for i, s in enumerate(np.asarray(cleaned.sigma)):
        ref = scipy_blur(batch[i : i + 1], s, "reflect", truncate=r / float(s))[0]
        np.testing.assert_allclose(image[i][~mask[i]], ref[~mask[i]], atol=1e-5)


def test_sigma_drawn_per_image_in_range(cleaned):
    s = np.asarray(cleaned.sigma)
    assert s.shape == (4,) and np.all((s >= 0.8) & (s <= 1.2)) and len(set(s.tolist())) == 4


def test_mask_comes_from_the_prediction_not_the_label(model, batch, cleaned):
    pred = np.asarray(jnp.argmax(model.apply(model.params, jnp.asarray(batch)), -1))
    np.testing.assert_array_equal(np.asarray(jnp.argmax(cleaned.logits, -1)), pred)
    h_pred = lrp.heatmap(model, batch, pred)
    np.testing.assert_allclose(cleaned.heatmap, h_pred, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(cleaned.mask, lrp.binarize(h_pred, rule="std", k=2.0))
    # Another class's heatmap differs; the defense never sees a label, only its own prediction.
    h_other = np.asarray(lrp.heatmap(model, batch, (pred + 1) % model.num_classes))
    assert np.abs(h_other - np.asarray(h_pred)).max() > 1e-3 * np.abs(h_pred).max()
    assert "labels" not in inspect.signature(defense.heat_and_blur).parameters


def test_same_key_same_result_other_key_other_sigma(model, batch, cleaned):
    again = defense.clean(model, batch, jax.random.key(0), sigma=(0.8, 1.2))
    for a, b in zip(again, cleaned):
        np.testing.assert_array_equal(a, b)
    other = defense.clean(model, batch, jax.random.key(1), sigma=(0.8, 1.2))
    assert np.all(np.asarray(other.sigma) != np.asarray(cleaned.sigma))
    np.testing.assert_array_equal(other.mask, cleaned.mask)  # the mask does not depend on the key


def test_heat_and_blur_returns(model, batch, cleaned):
    x_c = defense.heat_and_blur(model, batch, jax.random.key(0), sigma=(0.8, 1.2))
    np.testing.assert_array_equal(x_c, cleaned.image)
    x_c, mask, h = defense.heat_and_blur(
        model, batch, jax.random.key(0), sigma=(0.8, 1.2), return_mask=True, return_heatmap=True
    )
    np.testing.assert_array_equal(mask, cleaned.mask)
    np.testing.assert_array_equal(h, cleaned.heatmap)
    x_c, h = defense.heat_and_blur(model, batch, jax.random.key(0), sigma=(0.8, 1.2), return_heatmap=True)
    assert h.shape == (4, 32, 32)


def test_fixed_sigma_needs_no_key(model, batch):
    out = defense.clean(model, batch, sigma=1.0, binarize={"rule": "top", "fraction": 0.05})
    np.testing.assert_array_equal(out.sigma, 1.0)
    assert int(out.mask.sum()) == 4 * round(0.05 * 32 * 32)
    np.testing.assert_allclose(out.blurred, scipy_blur(batch, 1.0, "reflect"), atol=1e-5)


def test_defended_logits(model, batch, cleaned):
    logits_fn = defense.defended(model, sigma=(0.8, 1.2))
    logits = jax.jit(logits_fn)(model.params, jnp.asarray(batch), jax.random.key(0))
    np.testing.assert_allclose(logits, model.apply(model.params, cleaned.image), rtol=1e-5, atol=1e-5)
    grad = jax.grad(lambda x: logits_fn(model.params, x, jax.random.key(0))[:, 0].sum())(jnp.asarray(batch))
    assert grad.shape == batch.shape and bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0


def _count(jaxpr_text: str, name: str) -> int:
    return jaxpr_text.count(name + "[")


def test_defended_prediction_shares_the_first_forward(model, batch):
    """convs(defended) = convs(one LRP pass: forward and backward) + convs(one forward) + blur."""
    x = jnp.asarray(batch)
    explain = lrp.relevance_fn(model, composite="dtd", output="heatmap")
    n_lrp = _count(str(jax.make_jaxpr(explain)(model.params, x, None)), "conv_general_dilated")
    n_fwd = _count(str(jax.make_jaxpr(model.apply)(model.params, x)), "conv_general_dilated")
    n_blur = _count(str(jax.make_jaxpr(lambda x: defense.gaussian_blur(x, 1.0))(x)), "conv_general_dilated")
    logits_fn = defense.defended(model, sigma=1.0)
    n_def = _count(str(jax.make_jaxpr(logits_fn)(model.params, x, None)), "conv_general_dilated")
    # VGG11: 8 conv layers; the blur: 2 separable depthwise convs (dm_pix), or shifted sums on the CPU
    assert n_fwd == 8 and n_blur == (0 if jax.default_backend() == "cpu" else 2)
    assert n_def == n_lrp + n_fwd + n_blur


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sigma=0.0), "positive"),
        (dict(sigma=-0.5), "positive"),
        (dict(sigma=(1.2, 0.8)), "low <= high"),
        (dict(sigma=(0.0, 1.0)), "positive"),
        (dict(sigma=(0.8, 1.0, 1.2)), "range"),
        (dict(sigma="big"), "float"),
        (dict(mode="edge"), "border mode"),
        (dict(method="gradcam"), "method"),
        (dict(binarize={"rule": "otsu"}), "binarisation rule"),
    ],
)
def test_bad_options_are_errors(model, batch, kwargs, match):
    with pytest.raises(ValueError, match=match):
        defense.heat_and_blur(model, batch, jax.random.key(0), **kwargs)


def test_bad_input_is_an_error(model, batch):
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        defense.heat_and_blur(model, batch[0], key)
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        defense.heat_and_blur(model, batch[..., :2], key)
    with pytest.raises(ValueError, match="floating"):
        defense.heat_and_blur(model, (batch * 255).astype(np.uint8), key)
    bad = batch.copy()
    bad[1, 3, 4, 0] = np.nan
    with pytest.raises(ValueError, match="nan"):
        defense.heat_and_blur(model, bad, key)
    with pytest.raises(ValueError, match="key"):
        defense.heat_and_blur(model, batch, None, sigma=(0.8, 1.2))


def test_hyper_parameters_are_keyword_only():
    for fn in (defense.heat_and_blur, defense.clean, defense.defended, defense.gaussian_blur):
        params = inspect.signature(fn).parameters.values()
        positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert positional in (["model", "x", "key"], ["model"], ["x", "sigma"]), (fn.__name__, positional)
