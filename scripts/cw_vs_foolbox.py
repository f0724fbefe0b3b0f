#!/usr/bin/env python
"""hbjax's CW-L2 against foolbox 3's L2CarliniWagnerAttack on the shipped model, through foolbox's
JAX backend on the same logits function (5 x 100 steps, c0 = 1e-3, step size 1e-2, early abort), on
the first N correctly classified CIFAR-10 test images (interleaved over the classes).

Prints both success rates and median L2, how many of foolbox's results are its all-zero fallback
(nothing found), and the per-image agreement.

    python scripts/cw_vs_foolbox.py 64
"""
import os, sys, time, numpy as np, jax, jax.numpy as jnp
import hbjax, hbjax.data
from hbjax import attacks
import foolbox as fb
N = int(sys.argv[1]) if len(sys.argv) > 1 else 64
model = hbjax.models.load("vgg19_cifar")
folder = hbjax.data.ImageFolder(os.environ.get("HBJAX_DATA", "../shared/data") + "/cifar10", "test", limit_per_class=100)
images, labels = folder.load_uint8()
order = np.argsort(np.arange(len(labels)) % 100, kind="stable")
x_all, y_all = images[order].astype(np.float32) / 255.0, labels[order].astype(np.int32)
fn = attacks.model_logits(model)
apply = jax.jit(lambda x: model.apply(model.params, x))
pred = np.asarray(jnp.argmax(apply(x_all[:400]), -1))
keep = np.flatnonzero(pred == y_all[:400])[:N]
x, y = jnp.asarray(x_all[keep]), jnp.asarray(y_all[keep])
settings = dict(binary_search_steps=5, steps=100, initial_const=1e-3, confidence=0.0)
t = time.time()
r = attacks.carlini_wagner_l2(fn, x, y, jax.random.key(0), learning_rate=1e-2, abort_early=True, **settings)
print("hbjax", time.time() - t, "s success", float(np.mean(r.success)), "median L2", float(np.median(np.asarray(r.l2)[np.asarray(r.success)])), flush=True)
fmodel = fb.JAXModel(apply, bounds=(0, 1))
attack = fb.attacks.L2CarliniWagnerAttack(stepsize=1e-2, abort_early=True, **settings)
t = time.time()
xa = attack.run(fmodel, x, fb.criteria.Misclassification(y))
xa = np.asarray(xa)
print("foolbox", time.time() - t, "s", flush=True)
lf = np.asarray(apply(xa)); sf = lf.argmax(-1) != np.asarray(y)
zero = np.all(xa.reshape(N, -1) == 0, axis=1)
l2f = np.linalg.norm((xa - np.asarray(x)).reshape(N, -1), axis=1)
print("foolbox success", sf.mean(), "zeros (nothing found)", zero.sum(), "success among zeros", sf[zero].sum(),
      "median L2 of non-zero successes", np.median(l2f[sf & ~zero]), "median L2 all successes", np.median(l2f[sf]))
hs = np.asarray(r.success)
print("hbjax fail & foolbox found (non-zero)", np.sum(~hs & sf & ~zero), "hbjax success & foolbox zero", np.sum(hs & zero))
both = hs & sf & ~zero
print("paired L2 ratio hbjax/foolbox median", np.median(np.asarray(r.l2)[both] / l2f[both]))
# margins of foolbox's found points and of hbjax's
lh = np.asarray(apply(r.x_adv))
def margin(l, y):
    own = l[np.arange(len(y)), y]; l2 = l.copy(); l2[np.arange(len(y)), y] = -np.inf
    return l2.max(-1) - own
print("foolbox margins (found)", np.round(np.sort(margin(lf, np.asarray(y))[~zero])[:10], 6))
