"""Models for the attack tests: a small CNN trained for about a minute on the shared CIFAR-10 folder
(cached for the whole test session), its torch twin, and tiny random networks.

A random network has logit margins so small that every attack succeeds; parity between attack
implementations is only meaningful on a trained network.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hbjax
import hbjax.data
from hbjax.models import LayerSpec, Model, Normalization
from hbjax.models.model import CIFAR10_CLASSES, init_params
from hbjax.models.vgg import CIFAR10_MEAN, CIFAR10_STD


def small_cnn_layers(widths=(16, 32, 64), num_classes: int = 10) -> tuple[LayerSpec, ...]:
    """conv3x3-ReLU-maxpool blocks of the given widths, flatten, one dense output layer."""
    layers: list[LayerSpec] = []
    for i, w in enumerate(widths, start=1):
        layers += [
            LayerSpec("conv", f"conv{i}_1", features=w),
            LayerSpec("relu", f"relu{i}_1"),
            LayerSpec("maxpool", f"pool{i}"),
        ]
    layers += [LayerSpec("flatten", "flatten"), LayerSpec("dense", "fc1", features=num_classes)]
    return tuple(layers)


def small_cnn(key: jax.Array, widths=(16, 32, 64), size: int = 32) -> Model:
    layers = small_cnn_layers(widths)
    normalization = Normalization(CIFAR10_MEAN, CIFAR10_STD)
    params = init_params(layers, normalization, key, (size, size))
    meta = {
        "arch": "small_cnn", "num_classes": 10, "input_size": [size, size], "source": "random",
        "class_names": list(CIFAR10_CLASSES),
    }  # fmt: skip
    return Model(layers, normalization, params, meta)


@functools.lru_cache(maxsize=None)
def cifar_arrays(root: str, split: str, limit_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    data = hbjax.data.ImageFolder(root, split, limit_per_class=limit_per_class)
    return data.load_uint8()


@functools.lru_cache(maxsize=None)
def trained_cnn(root: str, epochs: int = 10, seed: int = 0) -> tuple[Model, float]:
    """A small CNN trained with Adam for ``epochs`` epochs over 10,000 training images with random
    flips (about 40 s on two idle CPU cores); returns the model and its accuracy on 1,000 test
    images. A fixed number of steps, so every machine trains the same network up to float
    round-off. Cached per process, so every test module shares one training."""
    x_train, y_train = cifar_arrays(root, "train", 1000)
    model = small_cnn(jax.random.key(seed))
    tx = optax.adam(2e-3)
    params = model.params
    opt_state = tx.init(params)
    module = model.module

    @jax.jit
    def step(params, opt_state, xb, yb, key):
        x = xb.astype(jnp.float32) / 255.0
        flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
        x = jnp.where(flip, x[:, :, ::-1], x)

        def loss_fn(p):
            logits = module.apply(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        loss, g = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    batch = 128
    for epoch in range(epochs):
        perm = rng.permutation(len(x_train))
        for i in range(len(x_train) // batch):
            idx = perm[i * batch : (i + 1) * batch]
            key = jax.random.fold_in(jax.random.key(seed), epoch * 1000 + i)
            params, opt_state, _ = step(params, opt_state, x_train[idx], y_train[idx], key)
    params = jax.tree.map(np.asarray, params)
    model = model.replace(params=params, meta=dict(model.meta, source="trained in tests"))
    x_test, y_test = cifar_arrays(root, "test", 100)
    pred = np.asarray(jnp.argmax(jax.jit(model.apply)(params, x_test.astype(np.float32) / 255.0), -1))
    return model, float(np.mean(pred == y_test))


def torch_twin(model: Model):
    """The same network in torch (:func:`hbjax.models.to_torch`)."""
    return hbjax.models.to_torch(model)


def tiny_mlp(key: jax.Array, shape=(4, 4, 3), hidden: int = 16, classes: int = 5, scale: float = 3.0):
    """A random two-layer network on inputs of ``shape`` (a logits function of x in [0, 1]) with
    weights scaled so the logits have margins of order one."""
    d = int(np.prod(shape))
    k1, k2 = jax.random.split(key)
    w1 = jax.random.normal(k1, (d, hidden)) * scale / np.sqrt(d)
    w2 = jax.random.normal(k2, (hidden, classes)) * scale / np.sqrt(hidden)
    return jax.tree_util.Partial(_mlp, (w1, w2))


def _mlp(weights, x):
    w1, w2 = weights
    h = jnp.tanh((x.reshape(x.shape[0], -1) - 0.5) @ w1.astype(x.dtype))
    return h @ w2.astype(x.dtype)

