"""Run-directory files and the summary: atomic parts, resume bookkeeping, exact CSV round trip,
and the summary's denominators (Adv/Cleaned over kept examples, Control over correct ones)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hbjax.experiment import store
from hbjax.experiment.protocol import column_names
from hbjax.experiment.summary import summarize


def _rows(n: int, seed: int = 0, ks=(1, 2)) -> dict:
    rng = np.random.default_rng(seed)
    rows = {"id": [f"img{i}" for i in range(n)]}
    for name in column_names(ks):
        if name.startswith(("ndcg", "l2", "linf")):
            rows[name] = rng.random(n)
        else:
            rows[name] = rng.integers(0, 2, n)
    return rows


def test_csv_round_trip_is_exact(tmp_path):
    rows = _rows(7)
    rows["l2_adv"][0] = 0.1 + 0.2  # not representable in a short decimal
    path = tmp_path / "a.csv"
    store.atomic_write_text(str(path), store.rows_to_csv(rows))
    back = store.read_csv(str(path))
    assert list(back) == list(rows)
    np.testing.assert_array_equal(np.asarray(back["l2_adv"], float), rows["l2_adv"])
    assert back["id"] == rows["id"]


def test_unequal_columns_are_rejected():
    with pytest.raises(ValueError, match="column 'b'"):
        store.rows_to_csv({"a": [1, 2], "b": [1]})


def test_parts_are_found_and_merged_in_batch_order(tmp_path):
    run = str(tmp_path)
    for b in (2, 0, 1):
        store.atomic_write_text(store.part_path(run, b), store.rows_to_csv({"batch": [b, b]}))
    assert store.finished_batches(run) == {0, 1, 2}
    merged = store.merge_parts(run, [2, 0, 1])
    assert merged["batch"] == ["0", "0", "1", "1", "2", "2"]
    # no temporary files are left behind
    assert all(not n.startswith(".tmp") for n in os.listdir(os.path.join(run, store.PARTS)))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = str(tmp_path / "results.json")
    store.atomic_write_json(path, {"a": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        store.atomic_write_json(path, {"a": Boom()})
    with open(path) as f:
        assert '"a": 1' in f.read()
    assert os.listdir(tmp_path) == ["results.json"]


def test_summary_denominators():
    ks = (1, 2)
    rows = _rows(50, seed=3, ks=ks)
    rows["target"] = np.full(50, -1)  # untargeted
    s = summarize(rows, ks)
    correct = np.asarray(rows["benign_correct"], bool)
    kept = correct & np.asarray(rows["attack_success"], bool)
    assert s["n_images"] == 50 and s["n_correct"] == correct.sum()
    assert s["n_attack_success"] == kept.sum()
    assert s["n_attack_failed"] == (correct & ~kept).sum()
    assert 0 < kept.sum() < correct.sum()  # the example tells the two Control groups apart
    assert s["adv"]["n"] == s["control"]["n"] == kept.sum() and s["control_all"]["n"] == correct.sum()
    np.testing.assert_allclose(s["cleaned"]["top1"], np.mean(np.asarray(rows["top1_cleaned"])[kept]))
    # Control per experimental group: the benign counterparts of the successful adversarial examples
    np.testing.assert_allclose(s["control"]["ndcg@2"], np.mean(rows["ndcg2_control"][kept]))
    np.testing.assert_allclose(s["control"]["top1"], np.mean(np.asarray(rows["top1_control"])[kept]))
    np.testing.assert_allclose(s["control_all"]["ndcg@2"], np.mean(rows["ndcg2_control"][correct]))
    np.testing.assert_allclose(s["adv"]["linf_median"], np.median(rows["linf_adv"][kept]))
    # the adaptive readings: over the images the defended classifier gets right when benign
    base = correct & np.asarray(rows["top1_control"], bool)
    assert 0 < base.sum() < correct.sum()
    r = s["readings"]
    assert r["n"] == base.sum()
    fooled_a, fooled_b = ~np.asarray(rows["top1_adv"], bool), ~np.asarray(rows["top1_cleaned"], bool)
    np.testing.assert_allclose(r["undefended"], fooled_a[base].mean())
    np.testing.assert_allclose(r["defended"], fooled_b[base].mean())
    np.testing.assert_allclose(r["both"], (fooled_a & fooled_b)[base].mean())
    np.testing.assert_allclose(r["defended_over_correct"], fooled_b[correct].mean())
    # targeted: fooled means the target is predicted
    rows["target"] = np.full(50, 3)
    r = summarize(rows, ks)["readings"]
    np.testing.assert_allclose(r["undefended"], np.asarray(rows["target_hit_adv"], bool)[base].mean())
    np.testing.assert_allclose(r["defended"], np.asarray(rows["target_hit_cleaned"], bool)[base].mean())
    # the summary reads back the strings of examples.csv identically
    text = {k: [str(v) for v in vals] for k, vals in rows.items()}
    assert summarize(text, ks)["cleaned"]["top1"] == pytest.approx(s["cleaned"]["top1"])
