#!/usr/bin/env python
"""How much the LRP composite changes Heat and Blur's mask: ``dtd`` (z^B first, z+ with bias)
against ``deep_taylor`` (iNNvestigate's DeepTaylor, the paper's tool) on CIFAR-10 test images.

Takes the first ``--num`` test images (interleaved over the classes) that the shipped model
classifies correctly and their PGD-Linf adversarial examples (eps 8/255, 20 steps of 2/255); for
each image the mask of the predicted class under each composite (eq. 2, mean + 2 std of |h|);
reports the mean and median intersection over union of the two masks and the mean mask
fractions. The last line is a JSON object.

    python scripts/composite_masks.py --num 200
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vgg19_cifar")
    parser.add_argument("--data", default=os.environ.get("HBJAX_DATA", "../shared/data") + "/cifar10")
    parser.add_argument("--num", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    import hbjax
    import hbjax.data
    from hbjax import attacks, lrp

    model = hbjax.models.load(args.model)
    folder = hbjax.data.ImageFolder(args.data, "test", limit_per_class=100)
    images, labels = folder.load_uint8()
    order = np.argsort(np.arange(len(labels)) % 100, kind="stable")
    images, labels = images[order].astype(np.float32) / 255.0, labels[order].astype(np.int32)
    apply = hbjax.jit(model.apply)
    pred = np.asarray(jnp.argmax(apply(model.params, images[:1000]), -1))
    keep = np.flatnonzero(pred == labels[:1000])[: args.num]
    x_all, y_all = images[keep], labels[keep]
    fn = attacks.model_logits(model)
    masks = {("benign", c): [] for c in ("dtd", "deep_taylor")} | {("pgd", c): [] for c in ("dtd", "deep_taylor")}
    for b, start in enumerate(range(0, len(y_all), args.batch)):
        x, y = jnp.asarray(x_all[start : start + args.batch]), y_all[start : start + args.batch]
        r = attacks.pgd(fn, x, y, jax.random.key(b), eps=8 / 255, norm="linf", steps=20, step_size=2 / 255)
        for view, xv in (("benign", x), ("pgd", jnp.asarray(r.x_adv))):
            for comp in ("dtd", "deep_taylor"):
                h = lrp.heatmap(model, xv, None, composite=comp)
                masks[(view, comp)].append(np.asarray(lrp.binarize(h, rule="std", k=2.0)))
    out: dict = {"model": args.model, "num_images": int(len(y_all))}
    for view in ("benign", "pgd"):
        a = np.concatenate(masks[(view, "dtd")]).reshape(len(y_all), -1)
        b = np.concatenate(masks[(view, "deep_taylor")]).reshape(len(y_all), -1)
        inter, union = np.sum(a & b, axis=1), np.sum(a | b, axis=1)
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        out[view] = {
            "iou_mean": float(iou.mean()), "iou_median": float(np.median(iou)),
            "mask_fraction_dtd": float(a.mean()), "mask_fraction_deep_taylor": float(b.mean()),
        }  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
