#!/usr/bin/env python
"""The paper's Figure 3 (input, heatmap, blurred, restored pixels, cleaned) for the docs.

- CIFAR-10: the shipped ``vgg19_cifar`` model on test images of four classes, attacked with
  untargeted PGD-Linf (eps 8/255, 20 steps), then cleaned by Heat and Blur (sigma ~ U[0.8, 1.2]).
- ImageNet sample: VGG19 with random weights (no pretrained ImageNet weights can be downloaded
  here), benign images: shows the mechanics only; its predictions mean nothing.

    python scripts/figure3.py --out docs/heat_and_blur
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("HBJAX_DATA", os.path.join(REPO, "..", "shared", "data")))
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "heat_and_blur"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    import hbjax
    from hbjax import xla
    from hbjax.cli.port import read_class_names
    from hbjax.data.preprocess import Preprocess, preprocess_image
    from hbjax.defense_plots import figure3

    os.makedirs(args.out, exist_ok=True)
    key = jax.random.key(args.seed)

    # CIFAR-10, adversarial inputs
    model = hbjax.models.load("vgg19_cifar")
    classes = ["cat", "ship", "horse", "airplane"]
    files = [os.path.join(args.data, "cifar10", "test", c, "0003.jpg") for c in classes]
    x = np.stack([np.asarray(Image.open(f).convert("RGB"), np.float32) / 255 for f in files])
    labels = np.asarray([model.class_names.index(c) for c in classes])
    logits_fn = xla.jit(lambda x: model.apply(model.params, x))
    adv = hbjax.attacks.pgd(logits_fn, jnp.asarray(x), jnp.asarray(labels), key, eps=8 / 255, steps=20)
    fig = figure3(
        model, adv.x_adv, jax.random.fold_in(key, 1), sigma=(0.8, 1.2), labels=labels,
        names=[f"{c} 0003 (PGD)" for c in classes],
        title="Heat and Blur on PGD-Linf (eps 8/255) examples, shipped CIFAR-10 VGG19",
    )  # fmt: skip
    path = os.path.join(args.out, "cifar10_vgg19_cifar_pgd_panel.png")
    fig.savefig(path)
    print(path, "adversarial success:", np.asarray(adv.success).tolist())

    # ImageNet sample, random VGG19
    names, _ = read_class_names(os.path.join(args.data, "imagenet-sample", "classes.tsv"))
    net = hbjax.models.vgg("vgg19", key=jax.random.key(args.seed), class_names=names)
    wnids = ["n02123045", "n01443537"]
    pre = Preprocess("imagenet")
    images = []
    for wnid in wnids:
        folder = os.path.join(args.data, "imagenet-sample", "val", wnid)
        with Image.open(os.path.join(folder, sorted(os.listdir(folder))[0])) as img:
            images.append(preprocess_image(img.convert("RGB"), pre).astype(np.float32) / 255)
    fig = figure3(
        net, np.stack(images), jax.random.fold_in(key, 2), sigma=(0.8, 1.2), names=wnids,
        title="Heat and Blur on ImageNet-sample images, VGG19 with random weights (mechanics only)",
    )  # fmt: skip
    path = os.path.join(args.out, "imagenet_vgg19-random_panel.png")
    fig.savefig(path)
    print(path)


if __name__ == "__main__":
    main()
