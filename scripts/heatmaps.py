#!/usr/bin/env python
"""Render LRP heatmaps for the images of a folder (the paper's Figures 1-2) as PNG.

For each image: the image, its heatmap for the predicted class, its heatmap for another top-5 class
and the predicted class's binarised mask, side by side; ``--per-figure`` images per PNG.

    python scripts/heatmaps.py ../shared/data/imagenet-sample --split val --limit 4 \\
        --model vgg19-random --out docs/heatmaps
    python scripts/heatmaps.py my_images/ --model vgg19_cifar --composite epsilon_gamma_box

``--methods lrp clrp sglrp`` makes one PNG per image instead: a row per method, a column per
class (the predicted one and those ranked ``--other-ranks``), as for EfficientNet-Lite0 in docs/lrp.md:

    python scripts/heatmaps.py ../shared/data/imagenet-sample --split val --indices 1 340 510 954 \
        --model efficientnet_lite0 --composite dtd --methods lrp clrp sglrp --dpi 80 --out docs/heatmaps

``--model``: a shipped model name or a checkpoint path (:func:`hbjax.models.load`), or
``<arch>-random`` (e.g. ``vgg19-random``): an ImageNet-layout VGG with random weights, to show the
mechanics without trained weights. The folder holds images directly, or class sub-folders
(optionally under ``--split``); a ``classes.tsv`` (index, wnid, name) beside them names the classes.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import jax
import numpy as np
from PIL import Image

import hbjax
import hbjax.data
from hbjax import lrp
from hbjax.lrp.plot import explain_figure, methods_figure


def model_from_spec(spec: str, seed: int):
    """A shipped name or checkpoint path, or ``ARCH-random`` for random weights (``seed``)."""
    if spec.endswith("-random"):
        arch = spec[: -len("-random")]
        return hbjax.models.vgg(arch, key=jax.random.key(seed))
    return hbjax.models.load(spec)


def load_images(
    folder: str, split: str | None, size: int, kind: str, limit: int, every: int, indices=None
):
    """(images (N, H, W, 3) float32 in [0, 1], file names); ``indices`` (positions in sorted order)
    replace ``every`` and ``limit``."""
    pre = hbjax.data.Preprocess(kind, size=size)
    base = os.path.join(folder, split) if split else folder
    direct = sorted(
        f for f in os.listdir(base) if f.lower().endswith(hbjax.data.IMAGE_EXTENSIONS)
    )
    if direct:
        paths = [os.path.join(base, f) for f in direct]
        paths = [paths[i] for i in indices] if indices else paths[::every][:limit]
        arrays = []
        for path in paths:
            with Image.open(path) as img:
                arrays.append(hbjax.data.preprocess_image(img.convert("RGB"), pre))
        return np.stack(arrays).astype(np.float32) / 255.0, paths
    data = hbjax.data.ImageFolder(folder, split, pre)
    indices = list(indices) if indices else list(range(0, len(data), every))[:limit]
    x, _, paths = next(data.batches(len(indices), indices=indices))
    return x, paths


def class_names_from(folder: str, num_classes: int) -> list[str] | None:
    path = os.path.join(folder, "classes.tsv")
    if not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if len(rows) != num_classes:
        return None
    return [r["name"] for r in sorted(rows, key=lambda r: int(r["index"]))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("--split", default=None, help="sub-folder of FOLDER holding the images (e.g. val)")
    p.add_argument("--model", default="vgg19-random")
    p.add_argument("--composite", default="dtd", help=f"one of {sorted(lrp.COMPOSITES)}")
    p.add_argument("--method", default="lrp", choices=lrp.METHODS)
    p.add_argument("--methods", nargs="+", choices=lrp.METHODS, default=None,
                   help="one PNG per image: a row per method, a column per class (see --other-ranks)")
    p.add_argument("--other-ranks", nargs="+", type=int, default=[2, 3],
                   help="with --methods: ranks of the classes explained beside the prediction")
    p.add_argument("--other-rank", type=int, default=2, help="rank (2..5) of the second explained class")
    p.add_argument("--rule", default="std", choices=("std", "top"), help="binarisation rule (eq. 2)")
    p.add_argument("--k", type=float, default=2.0)
    p.add_argument("--fraction", type=float, default=0.05)
    p.add_argument("--limit", type=int, default=4, help="number of images")
    p.add_argument("--every", type=int, default=1, help="take every n-th image")
    p.add_argument("--indices", nargs="+", type=int, default=None,
                   help="positions of the images in sorted order (instead of --every/--limit)")
    p.add_argument("--per-figure", type=int, default=4, help="images per PNG")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (<arch>-random)")
    p.add_argument("--out", default="heatmaps", help="output folder")
    p.add_argument("--dpi", type=int, default=100)
    p.add_argument("--prefix", default=None, help="file name prefix (default: model_composite_method)")
    args = p.parse_args(argv)

    model = model_from_spec(args.model, args.seed)
    size = int(model.meta.get("input_size", [224])[0])
    kind = "imagenet" if size >= 64 else "cifar"
    x, paths = load_images(args.folder, args.split, size, kind, args.limit, args.every, args.indices)
    names = model.meta.get("class_names") or class_names_from(args.folder, model.num_classes)
    os.makedirs(args.out, exist_ok=True)
    methods = args.methods or [args.method]
    prefix = args.prefix or f"{os.path.basename(args.model)}_{args.composite}_{'_'.join(methods)}"
    composite = args.composite
    title = f"{model.meta.get('arch', args.model)}, composite {composite}, method {', '.join(methods)}"
    if model.meta.get("source") == "random":
        title += " - RANDOM WEIGHTS (untrained: the pictures show the mechanics, not a trained model)"
    written = []
    if args.methods:
        figures = methods_figure(
            model, x, composite=composite, methods=methods, other_ranks=args.other_ranks,
            class_names=names, title=title,
        )  # fmt: skip
        for fig, src in zip(figures, paths):
            stem = os.path.splitext(os.path.basename(src))[0]
            path = os.path.join(args.out, f"{prefix}_{stem}.png")
            fig.savefig(path, dpi=args.dpi)
            written.append(path)
    for start in range(0, len(x) if not args.methods else 0, args.per_figure):
        chunk = x[start : start + args.per_figure]
        fig = explain_figure(
            model, chunk, composite=args.composite, method=args.method, other_rank=args.other_rank,
            rule=args.rule, k=args.k, fraction=args.fraction, class_names=names, title=title,
        )  # fmt: skip
        path = os.path.join(args.out, f"{prefix}_{start // args.per_figure:02d}.png")
        fig.savefig(path, dpi=args.dpi)
        written.append(path)
    for path in written:
        print(path)
    print(f"{len(x)} images: {', '.join(os.path.basename(q) for q in paths)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
