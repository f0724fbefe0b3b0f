"""Clean top-1 / top-5 accuracy of a model on an image folder (default: the shipped CIFAR-10 VGG19
on ../shared/data/cifar10/test). Last line: a JSON object.

    python scripts/eval_clean.py [--model vgg19_cifar] [--root ../shared/data/cifar10] [--split test]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from tqdm.auto import tqdm

import hbjax
from hbjax import xla
from hbjax.data import ImageFolder, Preprocess


def main() -> None:
    default_root = os.path.join(os.environ.get("HBJAX_DATA", "../shared/data"), "cifar10")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vgg19_cifar")
    parser.add_argument("--root", default=default_root)
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--limit-per-class", type=int, default=None)
    args = parser.parse_args()

    t0 = time.time()
    model = hbjax.models.load(args.model)
    size = tuple(model.meta.get("input_size", (32, 32)))
    preprocess = Preprocess("cifar" if size == (32, 32) else "imagenet")
    folder = ImageFolder(args.root, args.split, preprocess, limit_per_class=args.limit_per_class)
    apply = xla.jit(model.apply)
    top1 = top5 = n = 0
    for x, y, _ in tqdm(folder.batches(args.batch_size), total=-(-len(folder) // args.batch_size)):
        logits = np.asarray(apply(model.params, x))
        order = np.argsort(-logits, axis=1)
        top1 += int((order[:, 0] == y).sum())
        top5 += int((order[:, :5] == y[:, None]).any(axis=1).sum())
        n += len(y)
    print(json.dumps({
        "model": args.model, "data": os.path.join(args.root, args.split), "images": n,
        "skipped": len(folder.skipped), "top1": top1 / n, "top5": top5 / n,
        "seconds": round(time.time() - t0, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
