"""Saved adversarial examples (``save_adversarials``) replayed by another run (``adversarials_from``):
a sweep over sigma that reads them gives what runs recomputing the attack give, the attack is not
run, and every mismatch between the two runs is a one-line error before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hbjax.errors import ConfigError, RunDirError
from hbjax.experiment import replay, store

# L-BFGS targeted (the Figure 4 sweep's attack) on 8 images in two batches, on the smoke budget
BASE = ["experiment=smoke", "progress=false", "attack=lbfgs"]


def _evaluate(args, *, check=True):
    out = subprocess.run([sys.executable, "-m", "hbjax.evaluate", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"hbjax-evaluate failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


@pytest.fixture(scope="module")
def source(cifar10_sample, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("source")
    _evaluate([*BASE, f"data.root={cifar10_sample}", "save_adversarials=true", f"hydra.run.dir={run_dir}"])
    return run_dir


def test_a_saving_run_writes_each_batch_s_adversarials(source):
    rows = store.read_csv(str(source / "examples.csv"))
    for b in (0, 1):
        with np.load(replay.adversarials_path(str(source), b), allow_pickle=False) as z:
            assert z["x_adv"].shape == (4, 32, 32, 3) and z["x_adv"].dtype == np.float32
            in_batch = [i for i, v in enumerate(rows["batch"]) if v == str(b)]
            assert z["ids"].tolist() == [rows["id"][i] for i in in_batch]
            assert z["success"].astype(int).tolist() == [int(rows["attack_success"][i]) for i in in_batch]
            assert z["targets"].tolist() == [int(rows["target"][i]) for i in in_batch]
            assert float(z["x_adv"].min()) >= 0.0 and float(z["x_adv"].max()) <= 1.0


def test_replay_at_another_sigma_equals_recomputing_the_attack(source, cifar10_sample, tmp_path):
    data = f"data.root={cifar10_sample}"
    _evaluate([*BASE, data, "defense.sigma=1.5", f"hydra.run.dir={tmp_path / 'fresh'}"])
    _evaluate([*BASE, data, "defense.sigma=1.5", f"adversarials_from={source}", f"hydra.run.dir={tmp_path / 'replayed'}"])
    fresh = store.read_csv(str(tmp_path / "fresh" / "examples.csv"))
    replayed = store.read_csv(str(tmp_path / "replayed" / "examples.csv"))
    assert fresh == replayed
    # the defense did change: sigma 1.5 against the source's draws from U[0.8, 1.2]
    sigmas = store.read_csv(str(source / "examples.csv"))["sigma_cleaned"]
    assert {float(s) for s in replayed["sigma_cleaned"]} == {1.5} != {float(s) for s in sigmas}
    summary = json.loads((tmp_path / "replayed" / "results.json").read_text())
    assert summary["adversarials_from"] == {"0": os.path.abspath(source), "1": os.path.abspath(source)}
    assert json.loads((tmp_path / "fresh" / "results.json").read_text())["adversarials_from"] == {}
    with np.load(tmp_path / "replayed" / "panels.npz") as a, np.load(tmp_path / "fresh" / "panels.npz") as b:
        np.testing.assert_array_equal(a["x_adv"][0], b["x_adv"][0])
    # batch 1 recomputed with the attack: the record says so, and the results are the same
    os.remove(store.part_path(str(tmp_path / "replayed"), 1))
    _evaluate([*BASE, data, "defense.sigma=1.5", f"hydra.run.dir={tmp_path / 'replayed'}"])
    summary = json.loads((tmp_path / "replayed" / "results.json").read_text())
    assert summary["adversarials_from"] == {"0": os.path.abspath(source)}
    assert store.read_csv(str(tmp_path / "replayed" / "examples.csv")) == fresh


def test_the_replayed_batches_do_not_run_the_attack(source, cifar10_sample):
    from hbjax.experiment.protocol import Components, Replayed, attack_and_clean, batch_keys

    def attack(*_):
        raise AssertionError("the attack ran")

    with np.load(replay.adversarials_path(str(source), 0)) as z:
        saved = Replayed(z["x_adv"], z["success"], z["model_calls"], z["targets"])
    x = jnp.zeros_like(saved.x_adv)
    forward = lambda v: jnp.zeros((v.shape[0], 10))  # noqa: E731
    clean = lambda v, key: type("C", (), {"logits": forward(v)})()  # noqa: E731
    c = Components(forward, attack, clean, None, (1,), targeted=True)
    attacked = attack_and_clean(c, x, jnp.zeros(4, jnp.int32), batch_keys(jax.random.key(0)), saved)
    np.testing.assert_array_equal(attacked.x_adv, saved.x_adv)
    np.testing.assert_array_equal(attacked.targets, saved.targets)


@pytest.mark.parametrize("args,message", [
    (["attack=bpda_eot"], "depends on the defense"),
    (["seed=1"], "its seed differ"),
    (["num_examples=12"], "its num_examples differ"),
])  # fmt: skip
def test_a_replay_of_another_attack_setup_is_a_one_line_error(args, message, source, cifar10_sample, tmp_path):
    out = _evaluate([*BASE, f"data.root={cifar10_sample}", *args, f"adversarials_from={source}",
                     f"hydra.run.dir={tmp_path}"], check=False)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "parts").exists()


def test_a_source_without_saved_adversarials_is_named(source, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(source, run)
    os.remove(replay.adversarials_path(str(run), 1))
    identity = json.loads((run / "experiment.json").read_text())
    with pytest.raises(ConfigError, match=r"saved no adversarial examples for batches \[1\]"):
        replay.open_source(str(run), identity, str(tmp_path / "new"), {0, 1})
    replay.open_source(str(run), identity, str(tmp_path / "new"), {0})  # batch 0 is there
    os.remove(store.part_path(str(run), 1))
    with pytest.raises(ConfigError, match=r"has not finished batches \[1\]"):
        replay.open_source(str(run), identity, str(tmp_path / "new"), {0, 1})
    with pytest.raises(ConfigError, match="own directory"):
        replay.open_source(str(run), identity, str(run), {0})


def test_a_damaged_or_foreign_file_is_named_when_read(source, tmp_path):
    ids = store.read_csv(str(source / "examples.csv"))["id"][:4]
    path = replay.adversarials_path(str(tmp_path), 0)
    good = replay.ReplaySource(str(source)).load(0, ids, (32, 32, 3))
    target = replay.ReplaySource(str(tmp_path))
    with pytest.raises(RunDirError, match="other images"):
        target_save(tmp_path, list(reversed(ids)), good)
        target.load(0, ids, (32, 32, 3))
    target_save(tmp_path, ids, good._replace(x_adv=good.x_adv * 2.0 + 0.5))
    with pytest.raises(RunDirError, match=r"outside \[0, 1\]"):
        target.load(0, ids, (32, 32, 3))
    with pytest.raises(RunDirError, match="expected float32"):
        target_save(tmp_path, ids, good)
        target.load(0, ids, (64, 64, 3))
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(RunDirError, match="unreadable"):
        target.load(0, ids, (32, 32, 3))
    np.savez(path, ids=np.asarray(ids), x_adv=np.asarray([object()] * 4, dtype=object))
    with pytest.raises(RunDirError, match="unreadable|lacks"):
        target.load(0, ids, (32, 32, 3))


def target_save(run_dir, ids, saved) -> None:
    replay.save(str(run_dir), 0, ids, saved)
