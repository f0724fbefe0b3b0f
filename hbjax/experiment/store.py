"""Run-directory files: per-batch CSV parts written atomically, so an interrupted run resumes from
its last finished batch, then merged into ``examples.csv`` and summarised in ``results.json``."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

PARTS = "parts"


def atomic_write_text(path: str, text: str) -> None:
    """Writes text to path through a temporary file and ``os.replace`` (never a half-written file)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def rows_to_csv(rows: Mapping[str, Sequence[Any]]) -> str:
    """Columns (name -> equal-length sequence) as CSV text with a header."""
    names = list(rows)
    n = len(rows[names[0]]) if names else 0
    for name in names:
        if len(rows[name]) != n:
            raise ValueError(f"column {name!r} has {len(rows[name])} values, expected {n}")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(names)
    for i in range(n):
        writer.writerow([_cell(rows[name][i]) for name in names])
    return buf.getvalue()


def _cell(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))  # round-trips exactly
    if isinstance(v, (np.bool_, bool)):
        return int(v)
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_csv(path: str) -> dict[str, list[str]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        cols: dict[str, list[str]] = {name: [] for name in header}
        for row in reader:
            for name, value in zip(header, row):
                cols[name].append(value)
    return cols


def part_path(run_dir: str, batch_index: int) -> str:
    return os.path.join(run_dir, PARTS, f"batch_{batch_index:06d}.csv")


def finished_batches(run_dir: str) -> set[int]:
    """Indices of the batches whose part file exists (written atomically, so complete)."""
    directory = os.path.join(run_dir, PARTS)
    if not os.path.isdir(directory):
        return set()
    done = set()
    for name in os.listdir(directory):
        if name.startswith("batch_") and name.endswith(".csv"):
            done.add(int(name[len("batch_") : -len(".csv")]))
    return done


def merge_parts(run_dir: str, batch_indices: Iterable[int]) -> dict[str, list[str]]:
    """Concatenates the part files of the given batches, in order."""
    merged: dict[str, list[str]] = {}
    for b in sorted(batch_indices):
        cols = read_csv(part_path(run_dir, b))
        if not merged:
            merged = {k: [] for k in cols}
        if list(cols) != list(merged):
            raise ValueError(f"{part_path(run_dir, b)}: columns differ from the other batches")
        for k, v in cols.items():
            merged[k].extend(v)
    return merged
