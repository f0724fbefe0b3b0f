"""``hbjax-predict``: classify image files with an hbjax model and print the top-5 classes.

    hbjax-predict ../shared/data/imagenet-sample/val --model vgg19.safetensors --batch-size 16
    hbjax-predict ../shared/data/cifar10/test/cat          # the shipped CIFAR-10 model

PATHS are image files or folders (searched recursively for image files). The preprocessing follows
the model's ``meta["input_size"]``: 32x32 models take CIFAR images as they are; larger ones take the
ImageNet pipeline (shorter side scaled to 256/224 of the input size, then a centre crop). Files that
cannot be decoded are skipped and counted at the end, never a crash mid-run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterator, Sequence

import numpy as np

from hbjax import xla
from hbjax.errors import HbjaxError
from hbjax.data.folder import IMAGE_EXTENSIONS, load_image
from hbjax.data.preprocess import Preprocess


class PredictError(HbjaxError):
    """Bad command-line input: no such path, no images, an unusable model."""


def preprocess_for(meta: dict) -> Preprocess:
    """CIFAR preprocessing for 32x32 models, ImageNet's (resize then centre crop) otherwise."""
    size = meta.get("input_size") or [224, 224]
    if len(size) != 2 or size[0] != size[1]:
        raise PredictError(f"the model's input_size {size} is not square")
    side = int(size[0])
    if side <= 32:
        return Preprocess("cifar", size=side)
    return Preprocess("imagenet", size=side, resize=round(side * 256 / 224))


def collect_files(paths: Sequence[str]) -> list[str]:
    """Image files named directly, and image files (by suffix) found under folders, sorted."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = []
            for dirpath, dirnames, names in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found += [
                    os.path.join(dirpath, n)
                    for n in names
                    if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")
                ]
            files += sorted(found)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise PredictError(f"{path}: no such file or folder")
    if not files:
        raise PredictError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {list(paths)}")
    return files


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def format_top(path: str, top: list[tuple[str, int, float]], as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {"path": path, "top": [{"class": c, "index": i, "prob": round(p, 6)} for c, i, p in top]}
        )
    width = max(len(c) for c, _, _ in top)
    lines = [path] + [f"  {r}. {c:<{width}}  {p:.4f}" for r, (c, _, p) in enumerate(top, 1)]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hbjax-predict", description="Classify images with an hbjax model (top-k classes)."
    )
    parser.add_argument("paths", nargs="+", help="image files or folders of images")
    parser.add_argument(
        "--model", default="vgg19_cifar", help="a shipped model name or a checkpoint (vgg19_cifar)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images a forward pass (32)")
    parser.add_argument("--top-k", type=int, default=5, help="classes printed an image (5)")
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size <= 0 or args.top_k <= 0:
        print("hbjax-predict: error: --batch-size and --top-k must be positive", file=sys.stderr)
        return 2
    try:
        return run(args)
    except HbjaxError as e:  # PredictError and every library error on bad input
        print(f"hbjax-predict: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hbjax-predict: interrupted", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    import jax
    from tqdm.auto import tqdm

    from hbjax.models.checkpoint import CheckpointError, load

    try:
        model = load(args.model)
    except CheckpointError as e:
        raise PredictError(str(e)) from None
    preprocess = preprocess_for(model.meta)
    files = collect_files(args.paths)
    names = model.class_names
    k = min(args.top_k, model.num_classes)
    forward = xla.jit(lambda params, x: jax.nn.softmax(model.apply(params, x), axis=-1))
    skipped: list[tuple[str, str]] = []
    done = 0
    out = sys.stdout
    bar = tqdm(total=len(files), unit="image", file=sys.stderr, disable=args.no_progress or None)
    with bar:
        for batch in chunks(files, args.batch_size):
            images, kept = [], []
            for path in batch:
                try:
                    images.append(load_image(path, preprocess))
                    kept.append(path)
                except Exception as e:  # a bad file is reported at the end, not fatal
                    skipped.append((path, f"{type(e).__name__}: {e}"))
            bar.update(len(batch))
            if not kept:
                continue
            x = np.zeros((args.batch_size, preprocess.size, preprocess.size, 3), np.float32)
            x[: len(kept)] = np.stack(images).astype(np.float32) / 255.0  # padded: one compile
            probs = np.asarray(forward(model.params, x))[: len(kept)]
            for path, p in zip(kept, probs):
                order = np.argsort(-p, kind="stable")[:k]
                top = [(names[i], int(i), float(p[i])) for i in order]
                bar.write(format_top(path, top, args.json), file=out)
            done += len(kept)
    summary = out if not args.json else sys.stderr
    print(f"classified {done} image(s); skipped {len(skipped)} file(s)", file=summary)
    for path, why in skipped:
        print(f"  skipped {path}: {why}", file=sys.stderr)
    return 0 if done else 1


if __name__ == "__main__":
    raise SystemExit(main())
