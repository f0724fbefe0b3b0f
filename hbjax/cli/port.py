"""``hbjax-port``: turns torchvision or Keras VGG weights into an hbjax checkpoint.

    hbjax-port SRC --arch vgg19 --out model.safetensors [--class-names classes.tsv]
    hbjax-port resnet50-0676ba61.pth --arch resnet50 --out resnet50.safetensors

SRC is a torchvision state dict (``.pth``/``.pt``, read only with
``torch.load(weights_only=True)``: no arbitrary objects are unpickled), a state dict in safetensors
(``.safetensors``) or a Keras weight file (``.h5``: the legacy layout Keras distributes, or a Keras 3
``*.weights.h5``). Class names come from an ILSVRC ``classes.tsv`` (index, wnid, name) or a text
file with one name a line.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from typing import Sequence

from hbjax.errors import HbjaxError
from hbjax.models.checkpoint import describe, load, save
from hbjax.models.weight_files import WeightFileError, from_weight_file

PortError = WeightFileError  # the source file cannot be read as weights (an HbjaxError)


def read_class_names(path: str) -> tuple[list[str], list[str] | None]:
    """(names, wnids or None) from an ILSVRC ``classes.tsv`` (index, wnid, name, with or without a
    header; rows may come in any order, indices must be 0..N-1) or a file of one name a line."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f, delimiter="\t") if row and any(row)]
    except OSError as e:
        raise PortError(f"cannot read class names from {path}: {e}") from None
    if rows and rows[0][:1] == ["index"]:
        rows = rows[1:]
    if not rows:
        raise PortError(f"{path}: no class names in the file")
    if all(len(row) == 1 for row in rows):
        return [row[0].strip() for row in rows], None
    if not all(len(row) >= 3 and row[0].strip().isdigit() for row in rows):
        raise PortError(f"{path}: expected rows 'index<TAB>wnid<TAB>name' or one name a line")
    rows = sorted(rows, key=lambda row: int(row[0]))
    indices = [int(row[0]) for row in rows]
    if indices != list(range(len(rows))):
        raise PortError(f"{path}: class indices must be 0..{len(rows) - 1} with none missing")
    return [row[2].strip() for row in rows], [row[1].strip() for row in rows]


def port(
    src: str,
    arch: str,
    *,
    class_names: Sequence[str] | None = None,
    class_ids: Sequence[str] | None = None,
    input_size: int = 224,
):
    """The hbjax Model for the weights in ``src`` (format chosen by the file suffix)."""
    model = from_weight_file(src, arch, input_size=input_size)
    meta = dict(model.meta)
    if class_names is not None:
        if len(class_names) != model.num_classes:
            raise PortError(
                f"{len(class_names)} class names for a model with {model.num_classes} outputs"
            )
        meta["class_names"] = list(class_names)
        if class_ids is not None:
            meta["class_ids"] = list(class_ids)
    return model.replace(meta=meta)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hbjax-port",
        description="Convert torchvision (.pth, .safetensors) VGG or ResNet weights, or Keras (.h5) VGG "
        "weights, into an hbjax checkpoint.",
    )
    parser.add_argument("src", help="weight file: .pth/.pt (torchvision), .safetensors, .h5 (Keras)")
    parser.add_argument("--arch", required=True, help="vgg11, vgg13, vgg16, vgg19, vgg*_bn, or resnet18/34/50/101/152")
    parser.add_argument("--out", required=True, help="the hbjax checkpoint to write (.safetensors)")
    parser.add_argument("--class-names", help="ILSVRC classes.tsv (index, wnid, name) or names a line")
    parser.add_argument(
        "--input-size", type=int, default=224, help="input side recorded in the metadata (224)"
    )
    parser.add_argument(
        "--fold-batchnorm", action="store_true", help="fold batch norm into the convolutions"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    return parser


MIN_INPUT_SIZE = 32  # a VGG halves its input five times


def check_options(args: argparse.Namespace) -> None:
    """Every option checked before any weight is read: the input size, and an ``--out`` that would
    replace the source (refused always) or another existing file (refused without ``--force``)."""
    if args.input_size < MIN_INPUT_SIZE:
        raise PortError(f"--input-size {args.input_size}: expected an integer >= {MIN_INPUT_SIZE}")
    src, out = os.path.abspath(args.src), os.path.abspath(args.out)
    if os.path.isdir(out):
        raise PortError(f"--out {args.out} is a directory; name the checkpoint file to write")
    if os.path.exists(out) and (src == out or (os.path.exists(src) and os.path.samefile(src, out))):
        raise PortError(f"--out {args.out} is the source file; writing it would destroy the source")
    if os.path.exists(out) and not args.force:
        raise PortError(f"--out {args.out} exists; pass --force to replace it")
    directory = os.path.dirname(out)
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        raise PortError(f"--out {args.out}: {directory} is not a writable directory")


def write_checked(model, out: str) -> dict:
    """Writes the checkpoint through a temporary file that must load back and check out before it
    takes the name ``out``; on any failure nothing is left behind. Returns its description."""
    directory = os.path.dirname(os.path.abspath(out))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(out)}.", suffix=".safetensors")
    os.close(fd)
    try:
        save(model, tmp)
        summary = describe(load(tmp))  # read back: the written file loads and checks out
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_options(args)
        names, ids = read_class_names(args.class_names) if args.class_names else (None, None)
        model = port(args.src, args.arch, class_names=names, class_ids=ids, input_size=args.input_size)
        if args.fold_batchnorm:
            from hbjax.models.model import fold_batchnorm

            model = fold_batchnorm(model)
        summary = write_checked(model, args.out)
    except (HbjaxError, OSError) as e:  # PortError, PortingError, CheckpointError, ...
        print(f"hbjax-port: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hbjax-port: interrupted; {args.out} was not written", file=sys.stderr)
        return 130
    print(
        f"wrote {args.out}: {summary['arch']}, {summary['num_classes']} classes, "
        f"{summary['parameters']:,} parameters, from {summary['source']} ({args.src})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
