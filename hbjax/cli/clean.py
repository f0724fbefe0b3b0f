"""``hbjax-clean``: run Heat and Blur (Algorithm 1) on image files and show what it did.

    hbjax-clean ../shared/data/cifar10/test/cat/0000.jpg --out cleaned/      # the shipped CIFAR model
    hbjax-clean photo.jpg --model vgg19.safetensors --sigma 0.8 1.2 --seed 1 --out cleaned/
    hbjax-clean img.png --model random:vgg19 --out demo/      # random weights (a demonstration)

IMAGES are image files or folders (searched recursively). Each image is preprocessed for the model
(as ``hbjax-predict`` does), cleaned, and written to OUT as ``<name>_cleaned.png`` (the cleaned
image at the model's resolution), ``<name>_mask.png`` (white: the restored pixels) and
``<name>_panel.png`` (the paper's Figure 3: input, heatmap, blurred, restored pixels, cleaned);
``predictions.json`` holds the top-5 classes before and after and each image's sigma. The top-5
classes before and after are printed.

``--sigma`` takes one value or a range LOW HIGH from which each image draws its sigma (with
``--seed``; image i of batch j uses the key fold_in(key(seed), j)).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

import numpy as np

from hbjax import xla
from hbjax.errors import HbjaxError
from hbjax.cli.predict import PredictError, chunks, collect_files, preprocess_for


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hbjax-clean",
        description="Clean images with Heat and Blur; write cleaned images, masks and panels.",
    )
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument(
        "--model", default="vgg19_cifar",
        help="a shipped model name, a checkpoint, or random:ARCH (vgg11..vgg19, vgg19_cifar) (vgg19_cifar)",
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument(
        "--class-names", help="class names for the model: ILSVRC classes.tsv (index, wnid, name) or names a line"
    )
    parser.add_argument("--sigma", type=float, nargs="+", default=[1.0], help="SIGMA or LOW HIGH (1.0)")
    parser.add_argument("--seed", type=int, default=0, help="random key for a sigma range (0)")
    parser.add_argument("--composite", default="dtd", help="LRP composite (dtd)")
    parser.add_argument("--method", default="lrp", choices=["lrp", "clrp", "sglrp"], help="heatmap (lrp)")
    parser.add_argument("--rule", default="std", choices=["std", "top"], help="binarisation rule (std)")
    parser.add_argument("--k", type=float, default=2.0, help="standard deviations of rule std (2)")
    parser.add_argument("--fraction", type=float, default=0.05, help="kept fraction of rule top (0.05)")
    parser.add_argument("--mode", default="reflect", help="blur border mode, scipy's names (reflect)")
    parser.add_argument("--batch-size", type=int, default=8, help="images a call (8)")
    parser.add_argument("--top-k", type=int, default=5, help="classes printed before and after (5)")
    return parser


def model_from_spec(spec: str):
    """A shipped name or checkpoint path, or ``random:ARCH`` for random weights."""
    import jax

    from hbjax import models
    from hbjax.models.checkpoint import CheckpointError

    if spec.startswith("random:"):
        arch = spec.split(":", 1)[1]
        if arch.endswith("_cifar"):
            return models.vgg_cifar(arch.removesuffix("_cifar"), key=jax.random.key(0))
        if arch not in models.VGG_CONFIGS:
            raise PredictError(f"unknown architecture {arch!r} in {spec!r}")
        return models.vgg(arch, key=jax.random.key(0))
    try:
        return models.load(spec)
    except CheckpointError as e:
        raise PredictError(str(e)) from None


def unique_stems(files: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


def format_tops(path: str, before, after) -> str:
    width = max(len(c) for c, _, _ in before + after)
    lines = [path]
    for r, ((cb, _, pb), (ca, _, pa)) in enumerate(zip(before, after), 1):
        lines.append(f"  {r}. {cb:<{width}}  {pb:.4f}    ->  {ca:<{width}}  {pa:.4f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size <= 0 or args.top_k <= 0:
        print("hbjax-clean: error: --batch-size and --top-k must be positive", file=sys.stderr)
        return 2
    if len(args.sigma) not in (1, 2):
        print("hbjax-clean: error: --sigma takes SIGMA or LOW HIGH", file=sys.stderr)
        return 2
    try:
        return run(args)
    except (HbjaxError, ValueError) as e:  # PredictError, library errors on bad input
        print(f"hbjax-clean: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hbjax-clean: interrupted", file=sys.stderr)
        return 130


def _model_for(args: argparse.Namespace):
    """The model of ``--model``, with the class names of ``--class-names`` when given."""
    model = model_from_spec(args.model)
    if args.class_names:
        from hbjax.cli.port import read_class_names

        names, _ = read_class_names(args.class_names)
        if len(names) != model.num_classes:
            raise PredictError(f"{args.class_names} names {len(names)} classes; the model has {model.num_classes}")
        model = model.replace(meta=dict(model.meta, class_names=list(names)))
    return model


def _read_batch(files: Sequence[str], batch: Sequence[int], preprocess, batch_size: int, skipped: list):
    """The images of ``batch`` as one (batch_size, S, S, 3) float32 array, zero-padded (one compile),
    and the indices read; unreadable files go to ``skipped`` with the reason."""
    from hbjax.data.folder import load_image

    images, kept = [], []
    for i in batch:
        try:
            images.append(load_image(files[i], preprocess))
            kept.append(i)
        except Exception as e:  # a bad file is reported at the end, not fatal
            skipped.append((files[i], f"{type(e).__name__}: {e}"))
    x = np.zeros((batch_size, preprocess.size, preprocess.size, 3), np.float32)
    if kept:
        x[: len(kept)] = np.stack(images).astype(np.float32) / 255.0
    return x, kept


def _save_one(
    stem: str, label: str, title: str, x1: np.ndarray, one, logits_clean1, logits_blur1, names
) -> None:
    """The cleaned image, its mask and its Figure 3 panel (a row named ``label``) of one image:
    ``stem``_{cleaned,mask,panel}.png."""
    from PIL import Image

    from hbjax.defense_plots import panel

    cleaned_u8 = np.round(np.clip(np.asarray(one.image[0]), 0, 1) * 255).astype(np.uint8)
    Image.fromarray(cleaned_u8).save(stem + "_cleaned.png")
    Image.fromarray(np.asarray(one.mask[0]).astype(np.uint8) * 255).save(stem + "_mask.png")
    fig = panel(
        x1, one, cleaned_logits=logits_clean1, blurred_logits=logits_blur1, class_names=names,
        names=[label], title=title,
    )  # fmt: skip
    fig.savefig(stem + "_panel.png")


def _record(path: str, stem: str, sigma: float, mask, before, after) -> dict:
    return {
        "path": path, "sigma": sigma, "restored_fraction": float(np.asarray(mask).mean()),
        "before": [{"class": c, "index": k, "prob": round(p, 6)} for c, k, p in before],
        "after": [{"class": c, "index": k, "prob": round(p, 6)} for c, k, p in after],
        "outputs": {s: f"{stem}_{s}.png" for s in ("cleaned", "mask", "panel")},
    }  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import jax

    from hbjax import defense
    from hbjax.defense_plots import top_classes

    model = _model_for(args)
    sigma = args.sigma[0] if len(args.sigma) == 1 else tuple(args.sigma)
    binarize = {"rule": args.rule, "k": args.k} if args.rule == "std" else {"rule": "top", "fraction": args.fraction}
    fn = defense.heat_and_blur_fn(
        model, sigma=sigma, composite=args.composite, method=args.method, binarize=binarize, mode=args.mode
    )
    clean = xla.jit(fn)
    apply = xla.jit(model.apply)
    preprocess = preprocess_for(model.meta)
    files = collect_files(args.images)
    stems = unique_stems(files)
    os.makedirs(args.out, exist_ok=True)
    names = model.class_names
    key = jax.random.key(args.seed)
    records, skipped = [], []
    for j, batch in enumerate(chunks(list(range(len(files))), args.batch_size)):
        x, kept = _read_batch(files, batch, preprocess, args.batch_size, skipped)
        if not kept:
            continue
        out = clean(model.params, x, jax.random.fold_in(key, j))
        logits_clean = apply(model.params, out.image)
        logits_blur = apply(model.params, out.blurred)
        before = top_classes(out.logits, names, args.top_k)
        after = top_classes(logits_clean, names, args.top_k)
        for n, i in enumerate(kept):
            one = defense.Cleaned(*(a[n : n + 1] for a in out))
            _save_one(
                os.path.join(args.out, stems[i]), stems[i], f"Heat and Blur: {os.path.basename(files[i])}",
                x[n : n + 1], one, logits_clean[n : n + 1], logits_blur[n : n + 1], names,
            )  # fmt: skip
            print(format_tops(files[i], before[n], after[n]), flush=True)
            records.append(_record(files[i], stems[i], float(out.sigma[n]), out.mask[n], before[n], after[n]))
    with open(os.path.join(args.out, "predictions.json"), "w") as f:
        json.dump({"model": args.model, "sigma": args.sigma, "images": records}, f, indent=1)
    print(f"cleaned {len(records)} image(s) into {args.out}; skipped {len(skipped)} file(s)")
    for path, why in skipped:
        print(f"  skipped {path}: {why}", file=sys.stderr)
    return 0 if records else 1


if __name__ == "__main__":
    raise SystemExit(main())
