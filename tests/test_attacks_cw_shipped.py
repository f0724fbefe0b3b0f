"""CW-L2 against foolbox 3's ``L2CarliniWagnerAttack`` on the shipped model (the network the
experiment attacks), through foolbox's JAX backend on the very same hbjax logits function: 5 binary
search steps x 100 Adam steps, initial constant 1e-3, step size 1e-2, early abort.

Where foolbox finds no adversarial example it returns its initial ``best_advs``, an all-zero
(black) image, which the model misclassifies, so foolbox's own success rate counts those images as
successes (100% on these images, against hbjax's 92-95%). hbjax returns x itself there and counts a
failure. On the images where foolbox found a point, the two agree: same images, same distances.
The test checks that, and that foolbox's extra successes are exactly its zero images.

Cost: 32 images; about a minute of CW per implementation on two idle CPU cores plus the compilation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hbjax
import hbjax.data
from hbjax import attacks

NUM = 32
SETTINGS = dict(binary_search_steps=5, steps=100, initial_const=1e-3, confidence=0.0)


@pytest.fixture(scope="module")
def shipped(cifar10_dir):
    """(model, jitted logits function, 32 correctly classified test images, labels)."""
    model = hbjax.models.load("vgg19_cifar")
    folder = hbjax.data.ImageFolder(str(cifar10_dir), "test", limit_per_class=10)
    images, labels = folder.load_uint8()
    order = np.argsort(np.arange(len(labels)) % 10, kind="stable")  # interleave the classes
    x, y = images[order].astype(np.float32) / 255.0, labels[order].astype(np.int32)
    apply = jax.jit(lambda a: model.apply(model.params, a))
    keep = np.flatnonzero(np.asarray(jnp.argmax(apply(x), -1)) == y)[:NUM]
    assert len(keep) == NUM
    return model, apply, x[keep], y[keep]


def test_carlini_wagner_matches_foolbox_on_the_shipped_model(shipped):
    import foolbox as fb

    model, apply, x, y = shipped
    ours = attacks.carlini_wagner_l2(
        attacks.model_logits(model), jnp.asarray(x), jnp.asarray(y), jax.random.key(0),
        learning_rate=1e-2, abort_early=True, **SETTINGS,
    )  # fmt: skip
    fmodel = fb.JAXModel(apply, bounds=(0, 1))
    attack = fb.attacks.L2CarliniWagnerAttack(stepsize=1e-2, abort_early=True, **SETTINGS)
    theirs = np.asarray(attack.run(fmodel, jnp.asarray(x), fb.criteria.Misclassification(jnp.asarray(y))))

    their_success = np.asarray(jnp.argmax(apply(theirs), -1)) != y
    fallback = np.all(theirs.reshape(NUM, -1) == 0, axis=1)  # foolbox found nothing
    found = their_success & ~fallback
    success = np.asarray(ours.success)
    # foolbox's own rate counts its black fallback images; they are all of its extra successes
    assert np.all(their_success[fallback])
    assert abs(success.mean() - found.mean()) <= 0.02 + 1e-9, (success.mean(), found.mean())
    assert not np.any(success & fallback)
    both = success & found
    ours_l2 = np.median(np.asarray(ours.l2)[success])
    their_l2 = np.median(np.linalg.norm((theirs - x).reshape(NUM, -1), axis=1)[found])
    assert abs(ours_l2 / their_l2 - 1) <= 0.05, (ours_l2, their_l2)
    assert both.sum() >= NUM // 2  # the comparison rests on enough images
