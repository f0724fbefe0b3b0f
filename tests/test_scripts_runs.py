"""scripts/runs.sh (sourced by scripts/paper_cifar.sh and paper_imagenet.sh): runs one after another
or several at a time, a failed run reported at the end, and no GPU memory preallocation when several
runs share a machine (on a fake ``hbjax-evaluate``)."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import REPO

FAKE_EVALUATE = """#!/usr/bin/env bash
echo "${XLA_PYTHON_CLIENT_PREALLOCATE:-unset} $*" >> "$RECORD"
[[ "$1" != fail ]]
"""


def _run(tmp_path, jobs: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hbjax-evaluate").write_text(FAKE_EVALUATE)
    (bin_dir / "hbjax-evaluate").chmod(0o755)
    script = (f'out="{tmp_path}/out"; source "{REPO}/scripts/runs.sh"; '
              "run one ok a=1; run two fail b=2; run three ok c=3; finish_runs")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", HBJAX_JOBS=jobs, RECORD=str(tmp_path / "record"))
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    return proc, sorted((tmp_path / "record").read_text().splitlines())


def test_one_at_a_time_leaves_the_allocator_alone_and_reports_the_failure(tmp_path):
    proc, record = _run(tmp_path, "1")
    assert proc.returncode == 1 and "failed runs" in proc.stdout and "  two" in proc.stdout
    assert record == ["unset fail b=2 progress=false", "unset ok a=1 progress=false", "unset ok c=3 progress=false"]


def test_several_at_a_time_turn_preallocation_off(tmp_path):
    proc, record = _run(tmp_path, "3")
    assert proc.returncode == 1 and "  two" in proc.stdout
    assert record == ["false fail b=2 progress=false", "false ok a=1 progress=false", "false ok c=3 progress=false"]
    assert (tmp_path / "out" / "logs" / "one.log").exists()
