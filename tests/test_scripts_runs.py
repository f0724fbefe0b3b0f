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


def test_in_turn_runs_a_chain_one_after_another_and_stops_it_at_a_failure(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hbjax-evaluate").write_text(
        '#!/usr/bin/env bash\necho "start $2" >> "$RECORD"; sleep 1; echo "end $2" >> "$RECORD"\n[[ "$1" != fail ]]\n'
    )
    (bin_dir / "hbjax-evaluate").chmod(0o755)
    script = (f'out="{tmp_path}/out"; source "{REPO}/scripts/runs.sh"; '
              "chain() { run_now first ok a && run_now second ok b; }; "
              "broken() { run_now third fail c && run_now fourth ok d; }; "
              "in_turn chain; in_turn broken; run fifth ok e; finish_runs")  # fmt: skip
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", HBJAX_JOBS="3", RECORD=str(tmp_path / "record"))
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    record = (tmp_path / "record").read_text().splitlines()
    assert proc.returncode == 1 and "  third" in proc.stdout
    assert record.index("end a") < record.index("start b")  # in turn within the chain
    assert record.index("start e") < record.index("end a")  # beside the other runs
    assert "start d" not in record  # the run after a failed one does not start
