"""hbjax-report on synthetic runs: the table has one row per run, the figures are real PNGs, and a
directory without runs is a clear error."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from PIL import Image

from hbjax import report
from hbjax.experiment import store
from hbjax.experiment.summary import summarize
from tests.test_experiment_store import _rows


def _fake_run(run_dir, sigma, attack="pgd", seed=0, panels=False):
    ks = (1, 2, 3, 4, 5)
    summary = summarize(_rows(40, seed=seed, ks=ks), ks)
    summary["config"] = {
        "attack": {"name": attack, "targeted": False},
        "defense": {"sigma": sigma},
        "metrics": {"coverage": [0.99, 0.99]},
    }
    store.atomic_write_json(os.path.join(run_dir, "results.json"), summary)
    if panels:
        rng = np.random.default_rng(seed)
        n = 2
        np.savez(
            os.path.join(run_dir, "panels.npz"),
            x=rng.random((n, 32, 32, 3)), x_adv=rng.random((n, 32, 32, 3)),
            x_blurred=rng.random((n, 32, 32, 3)), x_cleaned=rng.random((n, 32, 32, 3)),
            mask=rng.random((n, 32, 32)) > 0.9, heatmap=rng.normal(size=(n, 32, 32)),
            labels=np.array([0, 1]), pred_benign=np.array([0, 1]), pred_adv=np.array([2, 3]),
            pred_cleaned=np.array([0, 3]), class_names=np.array([f"c{i}" for i in range(10)]),
        )  # fmt: skip


def test_report_of_a_sweep(tmp_path):
    for i, sigma in enumerate([0.5, 1.0, [0.8, 1.2]]):
        _fake_run(str(tmp_path / str(i)), sigma, seed=i, panels=(i == 0))
    _fake_run(str(tmp_path / "3"), 1.0, attack="cw_l2", seed=3)
    paths = report.report(str(tmp_path))
    table = open(paths["table_md"]).read().strip().splitlines()
    assert len(table) == 2 + 4
    assert "U[0.8,1.2]" in "\n".join(table)
    for key in ("fig4", "fig5", "fig3_0"):
        with Image.open(paths[key]) as img:
            assert img.format == "PNG" and img.size[0] > 200
    csv = store.read_csv(paths["table_csv"])
    assert csv["attack"].count("pgd") == 3


def test_figure4_draws_swept_attacks_at_their_fixed_sigmas(tmp_path, monkeypatch):
    for i, sigma in enumerate([0.5, 1.0, [0.8, 1.2]]):
        _fake_run(str(tmp_path / str(i)), sigma, seed=i)
    _fake_run(str(tmp_path / "3"), [0.8, 1.2], attack="cw_l2", seed=3)
    runs = report.load_runs(str(tmp_path))
    drawn = []
    import matplotlib.axes

    original = matplotlib.axes.Axes.plot

    def spy(ax, *args, **kwargs):
        drawn.append((ax.get_title(), list(args[0]) if args else None))
        return original(ax, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    assert report.figure4(runs, str(tmp_path / "fig4.png")) is not None
    # only pgd was swept; its fixed sigmas are the x values (the range's midpoint 1.0 is not drawn
    # over the fixed 1.0), and cw_l2, run at one sigma, gets no panel
    xs = {tuple(x) for _, x in drawn}
    assert xs == {(0.5, 1.0)}
    # a directory with no sweep draws no Figure 4
    assert report.figure4([r for r in runs if r["attack"] == "cw_l2"], str(tmp_path / "f.png")) is None


def test_figure4_is_the_lbfgs_sweep_with_the_paper_linf_line(tmp_path, monkeypatch):
    """The paper's Figure 4 sweeps sigma on L-BFGS examples: fig4_sigma.png is that sweep, with the
    line Linf = 0.031; the PGD sweep goes to its own figure."""
    for i, sigma in enumerate([0.5, 1.0, 1.5]):
        _fake_run(str(tmp_path / f"l{i}"), sigma, attack="lbfgs", seed=i)
        _fake_run(str(tmp_path / f"p{i}"), sigma, attack="pgd_linf", seed=10 + i)
    import matplotlib.axes

    lines = []
    original = matplotlib.axes.Axes.axhline

    def spy(ax, y=0, *args, **kwargs):
        lines.append((ax, y))
        return original(ax, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", spy)
    paths = report.report(str(tmp_path))
    assert os.path.basename(paths["fig4"]) == "fig4_sigma.png"
    assert os.path.basename(paths["fig4_pgd_linf"]) == "fig4_sigma_pgd_linf.png"
    assert [y for _, y in lines] == [0.031, 0.031]  # one line in each figure's panel
    for key in ("fig4", "fig4_pgd_linf"):
        with Image.open(paths[key]) as img:
            assert img.format == "PNG"


def test_report_cli_errors_on_a_folder_without_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "hbjax.report", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "no results.json" in out.stderr
    assert "Traceback" not in out.stderr
