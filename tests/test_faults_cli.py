"""Fault injection through the real commands (hbjax-evaluate, hbjax-report, hbjax-port): each bad
input or fault gives one line on stderr, no traceback, and nothing lost or half-written.

The evaluation cases share one real run on a folder with unreadable images (whole batches of
them), interrupted with SIGINT and resumed; the config cases run the command on values that must
fail before the model or the data are touched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import hbjax
from hbjax.cli import port as port_cli
from hbjax import report as report_cli
from hbjax.data import ImageFolder, Preprocess
from hbjax.experiment import store

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["model=vgg19_cifar", "attack=fgsm", "progress=false", "num_panels=1"]


def _env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _evaluate(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hbjax.evaluate", *map(str, args)], capture_output=True,
                          text=True, env=_env(), timeout=900, **kw)  # fmt: skip


def _one_error_line(stderr: str, prog: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith(f"{prog}: error")]
    assert len(lines) == 1, stderr
    return lines[0]


def _snapshot(directory) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(directory):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, directory)] = fh.read()
    return out


# ------------------------------------------------------------------ hbjax-evaluate, before any work
@pytest.mark.parametrize("args,messages", [
    (["num_examples=abc", "seed=-1"], ["num_examples='abc'", "seed=-1"]),
    (["data.preprocess=nope"], ["data.preprocess='nope': expected one of ['cifar', 'imagenet']"]),
    # a model and data that do not exist: the schema speaks first, nothing is loaded
    (["attack.params.eps=-1", "model=checkpoint", "model.name=/no/such.safetensors", "data=folder",
      "data.root=/no/such/folder"], ["attack.params.eps=-1: expected a number in [0, inf)"]),
])  # fmt: skip
def test_bad_config_fails_before_any_work(tmp_path, args, messages):
    out = _evaluate([*args, f"hydra.run.dir={tmp_path / 'run'}"])
    assert out.returncode == 2
    line = _one_error_line(out.stderr, "hbjax-evaluate")
    assert all(m in line for m in messages), line
    assert not (tmp_path / "run" / "parts").exists() and not (tmp_path / "run" / "experiment.json").exists()


def test_run_directory_that_is_a_file(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("precious")
    out = _evaluate(["experiment=smoke", f"hydra.run.dir={target}"])
    assert out.returncode == 2
    assert "is a file, not a directory" in _one_error_line(out.stderr, "hbjax-evaluate")
    assert target.read_text() == "precious"


# ---------------------------------------------------------- one real run with unreadable batches
@pytest.fixture(scope="module")
def damaged_folder(tmp_path_factory, cifar10_sample):
    """10 classes x 3 images of the shipped sample, of which 3 unreadable (one is the first in the
    run's order, so the first batch of one image holds no readable image)."""
    root = tmp_path_factory.mktemp("damaged") / "data"
    for cls in sorted(os.listdir(cifar10_sample / "test")):
        (root / "test" / cls).mkdir(parents=True)
        for name in sorted(os.listdir(cifar10_sample / "test" / cls))[:3]:
            shutil.copy(cifar10_sample / "test" / cls / name, root / "test" / cls / name)
    files = [p for p, _ in ImageFolder(str(root), "test", Preprocess("cifar")).files]
    order = np.random.default_rng(0).permutation(len(files))
    bad = [files[order[0]], files[order[5]], files[order[6]]]
    with open(bad[0], "wb") as f:
        f.write(b"")
    with open(bad[1], "wb") as f:
        f.write(b"\xff\xd8 truncated jpeg")
    with open(bad[2], "w") as f:
        f.write("not an image")
    return root, bad


@pytest.fixture(scope="module")
def interrupted_then_resumed(damaged_folder, tmp_path_factory):
    root, bad = damaged_folder
    run = tmp_path_factory.mktemp("run") / "r"
    args = [*FAST, "data=folder", f"data.root={root}", "num_examples=null", "batch_size=1", "seed=0",
            f"hydra.run.dir={run}"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "hbjax.evaluate", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())  # fmt: skip
    deadline = time.monotonic() + 600
    while len(store.finished_batches(str(run))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, interrupted_err = proc.communicate(timeout=300)
    parts_after_interrupt = _snapshot(run / "parts")
    resumed = _evaluate(args)
    return {"run": run, "args": args, "bad": bad, "interrupt": (proc.returncode, interrupted_err),
            "parts_after_interrupt": parts_after_interrupt, "resumed": resumed}  # fmt: skip


def test_ctrl_c_is_one_line_and_keeps_the_parts(interrupted_then_resumed):
    r = interrupted_then_resumed
    code, err = r["interrupt"]
    assert code == 130, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "interrupted" in ln]
    assert len(lines) == 1 and f"hydra.run.dir={r['run']} to resume" in lines[0]
    done = int(lines[0].split("interrupted after ")[1].split()[0])
    assert done >= 3 and len(r["parts_after_interrupt"]) >= done
    assert not (r["run"] / "results.json").exists() or r["resumed"]  # nothing final written early
    for name, content in r["parts_after_interrupt"].items():  # every part complete, kept as it was
        assert (r["run"] / "parts" / name).read_bytes() == content


def test_batches_without_a_readable_image_do_not_stop_the_run(interrupted_then_resumed):
    r = interrupted_then_resumed
    assert r["resumed"].returncode == 0, r["resumed"].stderr
    assert json.loads((r["run"] / "results.json").read_text())["config"]["batch_size"] == 1
    rows = store.read_csv(str(r["run"] / "examples.csv"))
    assert len(rows["id"]) == 27  # 30 files, 3 unreadable: each a batch of its own
    bad_ids = {os.path.relpath(b, os.path.dirname(os.path.dirname(b))) for b in r["bad"]}
    assert len(bad_ids) == 3 and not bad_ids & set(rows["id"])
    with np.load(r["run"] / "panels.npz") as z:  # drawn from the first batch with an image
        assert len(z["x"]) == 1


def test_a_corrupt_part_on_resume_is_named(interrupted_then_resumed, tmp_path):
    r = interrupted_then_resumed
    copy = tmp_path / "copy"
    shutil.copytree(r["run"], copy)
    (copy / "results.json").unlink()
    victim = sorted((copy / "parts").iterdir())[-1]
    victim.write_text(victim.read_text()[:-40])  # a cut last row
    before = _snapshot(copy)
    out = _evaluate([*r["args"][:-1], f"hydra.run.dir={copy}"])
    assert out.returncode == 2
    line = _one_error_line(out.stderr, "hbjax-evaluate")
    assert str(victim) in line and "delete" in line
    after = _snapshot(copy)
    assert {k: v for k, v in after.items() if not k.startswith(".hydra")} == {
        k: v for k, v in before.items() if not k.startswith(".hydra")}


def test_a_parts_file_in_the_way_fails_before_any_work(interrupted_then_resumed, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "parts").write_text("mine")
    out = _evaluate([*interrupted_then_resumed["args"][:-1], f"hydra.run.dir={run}"])
    assert out.returncode == 2 and "parts is a file" in _one_error_line(out.stderr, "hbjax-evaluate")
    assert (run / "parts").read_text() == "mine" and not (run / "experiment.json").exists()


# ------------------------------------------------------------------------------------ hbjax-report
@pytest.fixture()
def sweep(interrupted_then_resumed, tmp_path):
    finished = interrupted_then_resumed["run"]
    root = tmp_path / "sweep"
    shutil.copytree(finished, root / "0")
    shutil.copytree(finished, root / "1")
    (root / "1" / "results.json").unlink()
    return root


def test_report_warns_of_unfinished_runs_in_a_sweep(sweep, capsys):
    assert report_cli.main([str(sweep)]) == 0
    err = capsys.readouterr().err
    assert "unfinished run" in err and f"hydra.run.dir={sweep / '1'}" in err and "hbjax-evaluate" in err
    assert (sweep / "table.csv").exists()


def test_report_of_an_unfinished_run_says_how_to_resume(sweep, capsys):
    before = _snapshot(sweep / "1")
    assert report_cli.main([str(sweep / "1")]) == 2
    line = _one_error_line(capsys.readouterr().err, "hbjax-report")
    assert "unfinished run" in line and "resume it with: hbjax-evaluate" in line
    assert _snapshot(sweep / "1") == before


@pytest.mark.parametrize("cut", [0, 10, 200])
def test_report_names_a_truncated_results_file(sweep, capsys, cut):
    path = sweep / "0" / "results.json"
    path.write_bytes(path.read_bytes()[:cut])
    assert report_cli.main([str(sweep / "0")]) == 2
    line = _one_error_line(capsys.readouterr().err, "hbjax-report")
    assert str(path) in line and "hbjax-evaluate" in line
    assert not (sweep / "0" / "table.md").exists()


def test_report_names_a_truncated_panels_file_and_writes_the_rest(sweep, capsys):
    path = sweep / "0" / "panels.npz"
    path.write_bytes(path.read_bytes()[:100])
    assert report_cli.main([str(sweep / "0")]) == 0
    err = capsys.readouterr().err
    assert str(path) in err and "warning" in err and "Traceback" not in err
    assert (sweep / "0" / "table.md").exists() and not list((sweep / "0").glob("fig3_*"))


def test_report_writes_elsewhere_with_out(sweep, tmp_path, monkeypatch, capsys):
    before = _snapshot(sweep / "0")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if os.path.abspath(p) == str(sweep / "0") else real_access(p, m))
    assert report_cli.main([str(sweep / "0")]) == 2  # a read-only run directory
    assert "pass --out DIR" in _one_error_line(capsys.readouterr().err, "hbjax-report")
    assert report_cli.main([str(sweep / "0"), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "table.md").exists() and (tmp_path / "report" / "fig5_ndcg.png").exists()
    assert _snapshot(sweep / "0") == before


# -------------------------------------------------------------------------------------- hbjax-port
@pytest.fixture(scope="module")
def state_dict_file(tmp_path_factory):
    import torch
    import torchvision

    path = tmp_path_factory.mktemp("port") / "vgg11.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg11(num_classes=10).state_dict(), path)
    return path


def test_port_refuses_to_write_onto_its_source(state_dict_file, capsys):
    before = state_dict_file.read_bytes()
    assert port_cli.main([str(state_dict_file), "--arch", "vgg11", "--out", str(state_dict_file), "--force"]) == 1
    assert "is the source file" in _one_error_line(capsys.readouterr().err, "hbjax-port")
    assert state_dict_file.read_bytes() == before


def test_port_through_a_link_onto_its_source_is_refused(state_dict_file, tmp_path):
    link = tmp_path / "link.safetensors"
    link.symlink_to(state_dict_file)
    before = state_dict_file.read_bytes()
    out = subprocess.run([sys.executable, "-m", "hbjax.cli.port", str(state_dict_file), "--arch", "vgg11",
                          "--out", str(link), "--force"], capture_output=True, text=True, env=_env())  # fmt: skip
    assert out.returncode == 1 and "is the source file" in _one_error_line(out.stderr, "hbjax-port")
    assert state_dict_file.read_bytes() == before


@pytest.mark.parametrize("extra,message", [
    (["--input-size", "-3"], "--input-size -3: expected an integer >= 32"),
    (["--input-size", "0"], "--input-size 0"),
    (["--arch", "vgg12"], "vgg12"),
    (["--class-names", "/no/such/classes.tsv"], "/no/such/classes.tsv"),
])  # fmt: skip
def test_a_failed_port_writes_nothing(state_dict_file, tmp_path, capsys, extra, message):
    out = tmp_path / "o.safetensors"
    args = [str(state_dict_file), "--arch", "vgg11", "--out", str(out), *extra]
    if extra[0] == "--arch":
        args = [str(state_dict_file), *extra, "--out", str(out)]
    assert port_cli.main(args) == 1
    assert message in _one_error_line(capsys.readouterr().err, "hbjax-port")
    assert list(tmp_path.iterdir()) == []


def test_port_keeps_an_existing_output_without_force(state_dict_file, tmp_path, capsys):
    out = tmp_path / "o.safetensors"
    out.write_text("an earlier checkpoint")
    assert port_cli.main([str(state_dict_file), "--arch", "vgg11", "--out", str(out)]) == 1
    assert "--force" in _one_error_line(capsys.readouterr().err, "hbjax-port")
    assert out.read_text() == "an earlier checkpoint"
    assert port_cli.main([str(state_dict_file), "--arch", "vgg11", "--out", str(out), "--force"]) == 0
    assert hbjax.models.load(out).num_classes == 10 and [p.name for p in tmp_path.iterdir()] == ["o.safetensors"]


def test_an_interruption_outside_the_batches_says_what_it_left(tmp_path):
    """Ctrl-C while loading, between batches or while saving the panels names what is on disk."""
    from hbjax.evaluate import interrupted_outside_batches

    run = str(tmp_path / "run")
    assert "before the first batch" in interrupted_outside_batches(run)
    os.makedirs(os.path.join(run, "parts"))
    for b in (0, 1):
        with open(os.path.join(run, "parts", f"batch_{b:06d}.csv"), "w") as f:
            f.write("id\n")
    msg = interrupted_outside_batches(run)
    assert "with 2 batches finished" in msg and f"hydra.run.dir={run}" in msg
    with open(os.path.join(run, "results.json"), "w") as f:
        f.write("{}")
    assert "while saving the Figure 3 panels; results.json is complete" in interrupted_outside_batches(run)
