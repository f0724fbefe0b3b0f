"""Heat and Blur (Brama and Grinshpoun, Algorithm 1): blur the image except its most relevant pixels.

1. logits = f(i); y = argmax(logits).
2. h = LRP heatmap of y (composite ``dtd`` by default: z^B on the input layer, z+ elsewhere).
3. mask = binarize(h) (eq. 2: |h| > mean + 2 std over the image).
4. i_b = Gaussian blur of i with sigma, each channel.
5. i_c = where(mask, i, i_b): the relevant pixels are restored from the input.

The defended prediction is f(i_c). Steps 1 and 2 share one forward pass (the LRP pass's logits give
y), so the defended prediction costs two forward passes and one backward pass.

**Blur.** :func:`gaussian_blur` convolves each channel with a separable Gaussian (``dm_pix``) of
radius r = int(truncate * sigma + 0.5) pixels (kernel size 2r + 1; ``truncate=4`` as scipy), after
padding the image by r pixels with the border ``mode`` (scipy's names: ``"reflect"`` (default,
d c b a | a b c d | d c b a), ``"mirror"``, ``"nearest"``, ``"wrap"``, ``"constant"`` (zeros)). The
result equals ``scipy.ndimage.gaussian_filter(image, (sigma, sigma, 0), mode=mode, truncate=truncate)``.
On the CPU the two separable passes run as 2r + 1 shifted multiply-adds each (the same sums in
another order; XLA's CPU depthwise convolution, vmapped over per-image sigmas, took as long as a
forward pass of EfficientNet-Lite0 at 224x224). A per-image sigma (a random draw, or an array)
needs one static kernel for the batch: its radius comes from the largest possible sigma,
r = int(truncate * sigma_max + 0.5), so an image blurred with a smaller sigma equals scipy's result
with ``truncate = r / sigma`` (the weights past ``truncate * sigma`` are below 4e-5 of the centre
weight).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from hbjax import lrp, xla
from hbjax import validation
from hbjax.models.model import Model

__all__ = [
    "BORDER_MODES",
    "Cleaned",
    "HeatAndBlur",
    "blur_and_restore",
    "clean",
    "defended",
    "gaussian_blur",
    "heat_and_blur",
    "heat_and_blur_fn",
    "kernel_radius",
    "restore",
]

# scipy.ndimage border modes and the jnp.pad modes that extend an image the same way.
BORDER_MODES = {
    "reflect": "symmetric",
    "mirror": "reflect",
    "nearest": "edge",
    "wrap": "wrap",
    "constant": "constant",
}

Sigma = float | tuple[float, float] | Sequence[float] | jnp.ndarray


# --------------------------------------------------------------------------------------------------
# blur and restore


def kernel_radius(sigma_max: float, *, truncate: float = 4.0) -> int:
    """The blur kernel's radius r = int(truncate * sigma_max + 0.5) (scipy's rule); size 2r + 1."""
    return int(truncate * float(sigma_max) + 0.5)


def _check_mode(mode: str) -> str:
    if mode not in BORDER_MODES:
        raise ValueError(f"unknown border mode {mode!r}; expected one of {tuple(BORDER_MODES)}")
    return BORDER_MODES[mode]


def _check_finite_images(x: Any, name: str = "x") -> None:
    validation.check_images(x, name=name, where="hbjax.defense")


def gaussian_blur(
    x: jnp.ndarray,
    sigma: float | jnp.ndarray,
    *,
    truncate: float = 4.0,
    mode: str = "reflect",
    sigma_max: float | None = None,
) -> jnp.ndarray:
    """Gaussian blur of each channel of a batch (step 4 of Algorithm 1), with ``dm_pix``.

    Args:
      x: images (B, H, W, C).
      sigma: the standard deviation in pixels, > 0: one float for the batch or one per image (B,).
      truncate: the kernel reaches ``truncate`` standard deviations (of ``sigma_max``).
      mode: the border mode, scipy's names (see the module docstring); default ``"reflect"``.
      sigma_max: an upper bound of a per-image sigma that fixes the kernel size; needed when sigma
        is traced (inside ``jit``), taken from the values otherwise.

    Returns:
      The blurred batch, x's shape and dtype; equal to ``scipy.ndimage.gaussian_filter`` with
      ``sigma=(s, s, 0)``, the same mode and ``truncate = r / s`` with r = :func:`kernel_radius`.
    """
    pad_mode = _check_mode(mode)
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (B, H, W, C); got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be floating point; got dtype {x.dtype}")
    per_image = jnp.ndim(sigma) > 0
    if per_image and jnp.shape(sigma) != (x.shape[0],):
        raise ValueError(f"sigma must be a float or one value per image ({x.shape[0]},); got shape {jnp.shape(sigma)}")
    if validation.is_concrete(sigma):
        s = np.asarray(sigma, np.float64)
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError(f"sigma must be positive and finite; got {sigma}")
        if sigma_max is None:
            sigma_max = float(s.max())
        elif float(s.max()) > sigma_max * (1 + 1e-6):  # float32 draws may round up
            raise ValueError(f"sigma {float(s.max())} exceeds sigma_max {sigma_max}")
    elif sigma_max is None:
        raise ValueError("a traced sigma needs sigma_max (the kernel size is static)")
    if not (math.isfinite(sigma_max) and sigma_max > 0):
        raise ValueError(f"sigma_max must be positive and finite; got {sigma_max}")
    if truncate <= 0:
        raise ValueError(f"truncate must be positive; got {truncate}")
    r = kernel_radius(sigma_max, truncate=truncate)
    if r == 0:
        return x
    xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode=pad_mode)
    sigma = jnp.asarray(sigma, x.dtype)
    if jax.default_backend() == "cpu":
        return _separable_shifted_blur(xp, sigma, r)
    blur = functools.partial(dm_pix.gaussian_blur, kernel_size=2 * r + 1, padding="VALID")
    if per_image:
        return jax.vmap(blur)(xp, sigma)
    return blur(xp, sigma)


def _gaussian_taps(sigma: jnp.ndarray, radius: int, dtype) -> jnp.ndarray:
    """The normalised 1-D Gaussian g_t = exp(-t^2 / (2 sigma^2)) / sum_t exp(...), t = -r..r, as
    ``dm_pix`` builds it: (2r + 1,) for a scalar sigma, (B, 2r + 1) for one sigma per image."""
    t = jnp.arange(-radius, radius + 1, dtype=dtype)
    s = jnp.asarray(sigma, dtype)[..., None]
    g = jnp.exp(-(t * t) / (2 * s * s))
    return g / jnp.sum(g, axis=-1, keepdims=True)


def _separable_shifted_blur(xp: jnp.ndarray, sigma: jnp.ndarray, radius: int) -> jnp.ndarray:
    """The blur of the padded batch xp (VALID): along the width, then along the height, each pass
    2r + 1 shifted multiply-adds. The same sums as ``dm_pix.gaussian_blur`` (two depthwise convs),
    in another order; on the CPU, XLA's depthwise (grouped) convolution, vmapped over a per-image
    sigma, is several times slower than the rest of the defence's elementwise work."""
    taps = _gaussian_taps(sigma, radius, xp.dtype)
    size = 2 * radius + 1
    out = xp
    for axis in (2, 1):
        n = out.shape[axis] - size + 1
        acc = None
        for k in range(size):
            weight = taps[..., k]  # a scalar, or one per image
            if weight.ndim == 1:
                weight = weight[:, None, None, None]
            term = jax.lax.slice_in_dim(out, k, k + n, axis=axis) * weight
            acc = term if acc is None else acc + term
        out = acc
    return out


def restore(x: jnp.ndarray, x_blurred: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Step 5 of Algorithm 1: the pixels where ``mask`` (B, H, W) is True come from x, the others
    from x_blurred (both (B, H, W, C)); every channel of a pixel follows its mask entry."""
    x, x_blurred, mask = jnp.asarray(x), jnp.asarray(x_blurred), jnp.asarray(mask)
    if x.shape != x_blurred.shape or x.ndim != 4:
        raise ValueError(f"x and x_blurred must be (B, H, W, C) batches of one shape; got {x.shape} and {x_blurred.shape}")
    if mask.shape != x.shape[:3] or mask.dtype != jnp.bool_:
        raise ValueError(f"mask must be bool of shape {x.shape[:3]}; got {mask.dtype} {mask.shape}")
    return jnp.where(mask[..., None], x, x_blurred)


def blur_and_restore(
    x: jnp.ndarray, mask: jnp.ndarray, sigma: float | jnp.ndarray, *, config: "HeatAndBlur | None" = None
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Steps 4 and 5 of Algorithm 1: i_b = blur(i, sigma) and i_c = where(mask, i, i_b); returns
    (i_c, i_b). ``sigma``: a float, or (B,) one per image; the border mode, the truncation and the
    kernel radius (from the largest sigma of the config's range) come from ``config`` (default
    :class:`HeatAndBlur`'s)."""
    config = HeatAndBlur() if config is None else config
    x_b = gaussian_blur(x, sigma, truncate=config.truncate, mode=config.mode, sigma_max=config.sigma_max)
    return restore(x, x_b, mask), x_b


# --------------------------------------------------------------------------------------------------
# Heat and Blur


class Cleaned(NamedTuple):
    """Everything :func:`clean` computes for a batch (B images)."""

    image: jnp.ndarray  # (B, H, W, 3) the cleaned image i_c
    blurred: jnp.ndarray  # (B, H, W, 3) the blurred image i_b
    mask: jnp.ndarray  # (B, H, W) bool, the restored pixels
    heatmap: jnp.ndarray  # (B, H, W) the LRP heatmap of the predicted class
    sigma: jnp.ndarray  # (B,) the blur's sigma for each image
    logits: jnp.ndarray  # (B, N) the logits of the input (its prediction chose the heatmap's class)


@dataclasses.dataclass(frozen=True)
class HeatAndBlur:
    """The hyper-parameters of Algorithm 1 (hashable: one compiled function each)."""

    sigma: float | tuple[float, float] = 1.0
    composite: Any = "dtd"
    method: str = "lrp"
    binarize: tuple[tuple[str, Any], ...] = (("rule", "std"), ("k", 2.0))
    mode: str = "reflect"
    truncate: float = 4.0

    @property
    def sigma_max(self) -> float:
        return float(self.sigma[1]) if isinstance(self.sigma, tuple) else float(self.sigma)

    @classmethod
    def of(cls, options: Mapping[str, Any] | None = None) -> "HeatAndBlur":
        """The checked config of ``options``, keyword arguments of :func:`heat_and_blur` (a Hydra
        ``defense`` group works too: its ``name`` is ignored); missing ones take the defaults above;
        a ValueError names a bad or unknown one."""
        options = dict(options or {})
        options.pop("name", None)
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise ValueError(f"unknown Heat and Blur options {unknown}; expected some of {fields}")
        return _config(**{f: options.get(f, getattr(cls, f)) for f in fields})

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`heat_and_blur` that give this config."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**options, "binarize": dict(self.binarize)}

    def draw_sigma(self, key: jax.Array | None, batch: int, dtype: Any) -> jnp.ndarray:
        """(B,) sigma: the fixed value, or U[low, high] draws from key."""
        if isinstance(self.sigma, tuple):
            low, high = self.sigma
            return jax.random.uniform(key, (batch,), dtype, minval=low, maxval=high)
        return jnp.full((batch,), self.sigma, dtype)


def _check_sigma(sigma: Any) -> float | tuple[float, float]:
    if isinstance(sigma, (tuple, list)):
        if len(sigma) != 2:
            raise ValueError(f"sigma must be a float or a range (low, high); got {sigma!r}")
        low, high = (float(s) for s in sigma)
        if not (math.isfinite(low) and math.isfinite(high)) or low <= 0:
            raise ValueError(f"the sigma range must hold positive finite values; got ({low}, {high})")
        if low > high:
            raise ValueError(f"the sigma range needs low <= high; got ({low}, {high})")
        return (low, high) if low < high else low
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise ValueError(f"sigma must be a float or a range (low, high); got {sigma!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"sigma must be positive and finite; got {sigma!r}")
    return s


def _config(
    sigma: Any, composite: Any, method: str, binarize: Mapping[str, Any] | Sequence | None, mode: str,
    truncate: float,
) -> HeatAndBlur:
    _check_mode(mode)
    if method not in lrp.METHODS:
        raise ValueError(f"unknown heatmap method {method!r}; expected one of {lrp.METHODS}")
    if not (math.isfinite(truncate) and truncate > 0):
        raise ValueError(f"truncate must be positive; got {truncate}")
    binarize = dict(HeatAndBlur.binarize) if binarize is None else dict(binarize)
    lrp.binarize(jnp.zeros((1, 2, 2)), **binarize)  # fails early on a bad binarisation config
    comp = lrp.get_composite(composite)
    return HeatAndBlur(_check_sigma(sigma), comp, method, tuple(sorted(binarize.items())), mode, float(truncate))


@functools.lru_cache(maxsize=32)
def _compiled_defense(layers: tuple, network: Any, normalization: Any, num_classes: int, cfg: HeatAndBlur) -> Callable:
    explain = lrp.relevance_fn(
        Model(layers, normalization, None, {"num_classes": num_classes}, network),
        composite=cfg.composite,
        method=cfg.method,
        output="heatmap",
    )
    bin_kwargs = dict(cfg.binarize)

    def run(params: Any, x: jnp.ndarray, key: jax.Array | None) -> Cleaned:
        h, logits = explain(params, x, None)  # one forward: the prediction and the LRP pass
        mask = lrp.binarize(h, **bin_kwargs)
        sigma = cfg.draw_sigma(key, x.shape[0], x.dtype)
        per_image = isinstance(cfg.sigma, tuple)
        x_c, x_b = blur_and_restore(x, mask, sigma if per_image else cfg.sigma, config=cfg)
        return Cleaned(x_c, x_b, mask, h, sigma, logits)

    return run


def heat_and_blur_fn(
    model: Model,
    *,
    sigma: float | tuple[float, float] = HeatAndBlur.sigma,
    composite: Any = HeatAndBlur.composite,
    method: str = HeatAndBlur.method,
    binarize: Mapping[str, Any] | None = None,
    mode: str = HeatAndBlur.mode,
    truncate: float = HeatAndBlur.truncate,
) -> Callable[[Any, jnp.ndarray, "jax.Array | None"], Cleaned]:
    """The pure function ``fn(params, x, key) -> Cleaned`` behind :func:`clean` (Algorithm 1), for
    use inside your own ``jit``/``vmap``. It does not check its arguments; ``key`` may be None when
    sigma is fixed. Arguments as :func:`heat_and_blur`."""
    cfg = _config(sigma, composite, method, binarize, mode, truncate)
    return _compiled_defense(tuple(model.layers), model.network, model.normalization, model.num_classes, cfg)


@functools.lru_cache(maxsize=32)
def _jitted(fn: Callable) -> Callable:
    return xla.jit(fn)


def _check_call(x: Any, key: Any, sigma: Any) -> jnp.ndarray:
    _check_finite_images(x)
    if isinstance(sigma, (tuple, list)) and key is None:
        raise ValueError("a random sigma (low, high) needs a jax.random key")
    return jnp.asarray(x)


def clean(
    model: Model,
    x: jnp.ndarray,
    key: jax.Array | None = None,
    *,
    sigma: float | tuple[float, float] = HeatAndBlur.sigma,
    composite: Any = HeatAndBlur.composite,
    method: str = HeatAndBlur.method,
    binarize: Mapping[str, Any] | None = None,
    mode: str = HeatAndBlur.mode,
    truncate: float = HeatAndBlur.truncate,
) -> Cleaned:
    """Algorithm 1 with every intermediate result: the cleaned and blurred images, the mask, the
    heatmap, each image's sigma and the input's logits (a :class:`Cleaned`). Arguments as
    :func:`heat_and_blur`."""
    fn = heat_and_blur_fn(
        model, sigma=sigma, composite=composite, method=method, binarize=binarize, mode=mode,
        truncate=truncate,
    )  # fmt: skip
    x = _check_call(x, key, sigma)
    return _jitted(fn)(model.params, x, key)


def heat_and_blur(
    model: Model,
    x: jnp.ndarray,
    key: jax.Array | None = None,
    *,
    sigma: float | tuple[float, float] = HeatAndBlur.sigma,
    composite: Any = HeatAndBlur.composite,
    method: str = HeatAndBlur.method,
    binarize: Mapping[str, Any] | None = None,
    mode: str = HeatAndBlur.mode,
    truncate: float = HeatAndBlur.truncate,
    return_mask: bool = False,
    return_heatmap: bool = False,
) -> jnp.ndarray | tuple[jnp.ndarray, ...]:
    """Heat and Blur (Algorithm 1): the cleaned images i_c, one jitted batched call.

    Args:
      model: the classifier f (an :class:`hbjax.models.Model`); its params are used.
      x: images (B, H, W, 3) in [0, 1], finite.
      key: a ``jax.random`` key; needed when sigma is a range (the same key gives the same result).
      sigma: the blur's standard deviation in pixels: a float > 0, or a range (low, high) from which
        each image draws its own sigma uniformly (the paper's experiments: (0.8, 1.2)).
      composite: the LRP composite of the heatmap (default ``"dtd"``, the paper's).
      method: the heatmap: ``"lrp"`` (the paper), ``"clrp"`` or ``"sglrp"``.
      binarize: keyword arguments of :func:`hbjax.lrp.binarize`; default
        ``{"rule": "std", "k": 2.0}`` (eq. 2); e.g. ``{"rule": "top", "fraction": 0.05}``.
      mode: the blur's border mode (scipy's names; see the module docstring).
      truncate: the blur kernel's reach in standard deviations.
      return_mask: also return the restored pixels, bool (B, H, W).
      return_heatmap: also return the heatmap (B, H, W).

    Returns:
      i_c (B, H, W, 3); or the tuple (i_c, mask?, heatmap?) of those asked for. The heatmap and the
      mask follow the model's prediction on x, never a label.
    """
    out = clean(
        model, x, key, sigma=sigma, composite=composite, method=method, binarize=binarize,
        mode=mode, truncate=truncate,
    )  # fmt: skip
    extra = ((out.mask,) if return_mask else ()) + ((out.heatmap,) if return_heatmap else ())
    return (out.image, *extra) if extra else out.image


def defended(
    model: Model,
    *,
    sigma: float | tuple[float, float] = HeatAndBlur.sigma,
    composite: Any = HeatAndBlur.composite,
    method: str = HeatAndBlur.method,
    binarize: Mapping[str, Any] | None = None,
    mode: str = HeatAndBlur.mode,
    truncate: float = HeatAndBlur.truncate,
) -> Callable[[Any, jnp.ndarray, "jax.Array | None"], jnp.ndarray]:
    """The defended classifier: ``logits_fn(params, x, key) = f(heat_and_blur(x))``, pure and
    jit-able, so attacks can target the defense. Two forward passes and one backward pass.

    Gradients flow through the blur and the restore step; the mask and the heatmap are constants
    (the LRP pass stops gradients: a BPDA-style straight path through the pixel selection).
    Arguments as :func:`heat_and_blur`; ``key`` may be None when sigma is fixed.
    """
    fn = heat_and_blur_fn(
        model, sigma=sigma, composite=composite, method=method, binarize=binarize, mode=mode,
        truncate=truncate,
    )  # fmt: skip

    def logits_fn(params: Any, x: jnp.ndarray, key: jax.Array | None = None) -> jnp.ndarray:
        return model.apply(params, fn(params, x, key).image)

    return logits_fn
