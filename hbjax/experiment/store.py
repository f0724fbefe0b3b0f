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

from hbjax.errors import RunDirError

PARTS = "parts"


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` less the process's umask: the permissions ``open`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def atomic_write_text(path: str, text: str) -> None:
    """Writes text to path through a temporary file and ``os.replace`` (never a half-written file).
    The file gets the permissions of an ordinary new file (0666 less the umask), not mkstemp's 0600."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_npz(path: str, arrays: Mapping[str, Any], *, compressed: bool = False) -> None:
    """Writes numpy arrays as ``.npz`` to path through a temporary file and ``os.replace``, with
    the permissions of an ordinary new file (as :func:`atomic_write_text`)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, "wb") as f:
            (np.savez_compressed if compressed else np.savez)(f, **arrays)
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
    """Columns of a CSV file with a header; a row of another length than the header is an error."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        cols: dict[str, list[str]] = {name: [] for name in header}
        for row in reader:
            if len(row) != len(header):
                raise csv.Error(f"line {reader.line_num} has {len(row)} values, the header {len(header)}")
            for name, value in zip(header, row):
                cols[name].append(value)
    return cols


def part_path(run_dir: str, batch_index: int) -> str:
    return os.path.join(run_dir, PARTS, f"batch_{batch_index:06d}.csv")


def finished_batches(run_dir: str) -> set[int]:
    """Indices of the batches whose part file exists (written atomically, so complete); files of
    other names in ``parts/`` are ignored."""
    directory = os.path.join(run_dir, PARTS)
    if not os.path.isdir(directory):
        return set()
    done = set()
    for name in os.listdir(directory):
        digits = name[len("batch_") : -len(".csv")]
        if name.startswith("batch_") and name.endswith(".csv") and digits.isdigit():
            done.add(int(digits))
    return done


def check_run_dir(run_dir: str) -> None:
    """Fails with one line, before any work, when results cannot be written to ``run_dir``: a file
    in its place or in place of ``parts/``, or a directory that is not writable."""
    for path in (run_dir, os.path.join(run_dir, PARTS)):
        if os.path.exists(path) and not os.path.isdir(path):
            raise RunDirError(f"{path} is a file, not a directory; choose another hydra.run.dir or move the file")
    existing = run_dir
    while not os.path.exists(existing):
        parent = os.path.dirname(os.path.abspath(existing))
        if parent == os.path.abspath(existing):
            break
        existing = parent
    if not os.path.isdir(existing):
        raise RunDirError(f"cannot create {run_dir}: {existing} is a file, not a directory")
    for path in (existing, os.path.join(run_dir, PARTS)):
        if os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
            raise RunDirError(f"{path} is not writable; choose another hydra.run.dir or fix its permissions")


def merge_parts(
    run_dir: str, batch_indices: Iterable[int], columns: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """Concatenates the part files of the given batches, in order.

    Every part must hold ``columns`` (default: the first part's) with the same number of values in
    each; a part that does not is named with the way out (delete it: the batch is recomputed).
    """
    merged: dict[str, list[str]] = {}
    expected = list(columns) if columns is not None else None
    for b in sorted(batch_indices):
        path = part_path(run_dir, b)
        fix = f"delete {path} and run the same command again to recompute batch {b}"
        try:
            cols = read_csv(path)
        except (OSError, UnicodeDecodeError, csv.Error, StopIteration) as e:
            raise RunDirError(f"{path}: unreadable part file ({type(e).__name__}: {e}); {fix}") from None
        if expected is None:
            expected = list(cols)
        lengths = {len(v) for v in cols.values()}
        if list(cols) != expected or len(lengths) > 1:
            raise RunDirError(f"{path}: corrupt part file (its columns or row lengths differ from a run's); {fix}")
        if not merged:
            merged = {k: [] for k in cols}
        for k, v in cols.items():
            merged[k].extend(v)
    return merged
