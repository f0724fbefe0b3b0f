"""Fault injection into hbjax-evaluate's config: every bad value is one ConfigError line naming the
key, the value and what is expected, raised by the schema before any model or data is loaded.
Checked in-process on the composed config (what the command does first); a few of them through the
real command in test_faults_cli.py."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

import hbjax
from hbjax.errors import ConfigError, HbjaxError
from hbjax.evaluate import config_dir
from hbjax.experiment import schema

CONF = config_dir()


def _compose(overrides=()):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("evaluate", overrides=list(overrides))


BAD = [
    (["num_examples=-5"], "num_examples=-5: expected an integer >= 1, or null"),
    (["num_examples=0"], "num_examples=0: expected an integer >= 1"),
    (["num_examples=abc"], "num_examples='abc': expected an integer"),
    (["num_examples=2.5"], "num_examples=2.5: expected an integer"),
    (["batch_size=abc"], "batch_size='abc': expected an integer >= 1"),
    (["batch_size=0"], "batch_size=0: expected an integer >= 1"),
    (["seed=abc"], "seed='abc': expected an integer >= 0"),
    (["seed=-1"], "seed=-1: expected an integer >= 0"),
    (["num_panels=-1"], "num_panels=-1: expected an integer >= 0"),
    (["progress=maybe"], "progress='maybe': expected true or false"),
    (["stop_after_batches=0"], "stop_after_batches=0: expected an integer >= 1, or null"),
    (["matmul_precision=fast"], "matmul_precision='fast': expected one of ['default', 'high', 'highest'], or null"),
    (["save_adversarials=maybe"], "save_adversarials='maybe': expected true or false"),
    (["defense.sigma=abc"], "defense.sigma='abc': expected a number > 0 or a pair"),
    (["defense.sigma=0"], "defense.sigma=0: expected a number > 0"),
    (["defense.sigma=[1.2,0.8]"], "defense.sigma=[1.2, 0.8]: expected a number > 0 or a pair [low, high]"),
    (["defense.sigma=[1,2,3]"], "defense.sigma=[1, 2, 3]"),
    (["defense.binarize.rule=median"], "defense.binarize.rule='median': expected one of ['std', 'top']"),
    (["defense.binarize.k=-2"], "defense.binarize.k=-2: expected a number in [0, inf)"),
    (["defense.binarize.fraction=1.5"], "defense.binarize.fraction=1.5: expected a number in [0, 1]"),
    (["defense.binarize.signed=yes"], "defense.binarize.signed='yes': expected true or false"),
    (["+defense.binarize.q=0.1"], "hbjax.lrp.binarize takes no option 'q'"),
    (["data.preprocess=nope"], "data.preprocess='nope': expected one of ['cifar', 'imagenet']"),
    (["data.split=''"], "data.split=''"),
    (["lrp.composite=nope"], "lrp.composite='nope': expected a registered LRP composite"),
    (["lrp.method=gradcam"], "lrp.method='gradcam': expected one of ['lrp', 'clrp', 'sglrp']"),
    (["metrics.coverage=0"], "metrics.coverage=0: expected a number in (0, 1]"),
    (["metrics.coverage=1.5"], "metrics.coverage=1.5"),
    (["metrics.coverage=[0.9]"], "metrics.coverage=[0.9]"),
    (["metrics.ks=[0,1]"], "metrics.ks=[0, 1]: expected a non-empty list of integers >= 1"),
    (["metrics.ks=[]"], "metrics.ks=[]"),
    (["metrics.relevance=rank"], "metrics.relevance='rank': expected one of ['logit', 'prob']"),
    (["attack.name=nope"], "attack.name='nope': expected a registered attack"),
    (["attack.target=nobody"], "attack.target='nobody': expected one of ['random', 'least_likely', 'second']"),
    (["attack.targeted=sometimes"], "attack.targeted='sometimes': expected true or false"),
    (["attack.params.eps=-1"], "attack.params.eps=-1: expected a number in [0, inf)"),
    (["attack.params.eps=abc"], "attack.params.eps='abc': expected a number"),
    (["attack.params.steps=0"], "attack.params.steps=0: expected an integer >= 1"),
    (["attack.params.steps=2.5"], "attack.params.steps=2.5: expected an integer"),
    (["attack.params.norm=l1"], "attack.params.norm='l1'"),
    (["attack.params.random_start=often"], "attack.params.random_start='often': expected true or false"),
    (["+attack.params.epsilon=0.1"], "pgd takes no option 'epsilon'"),
    (["attack=cw_l2", "attack.params.learning_rate=0"], "attack.params.learning_rate=0: expected a number in (0, inf)"),
    (["attack=boundary", "attack.params.steps=-3"], "attack.params.steps=-3"),
    (["attack=adaptive_heatmap", "attack.params.attack_params.eps=-1"], "attack.params.attack_params.eps=-1"),
    (["attack=fgsm", "+attack.params.steps=5"], "fgsm takes no option 'steps'"),
    (["model.name=''"], "model.name=''"),
]  # fmt: skip


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_value_is_one_line_naming_key_value_and_expectation(overrides, message):
    cfg = _compose(overrides)
    with pytest.raises(ConfigError) as info:
        schema.validate(cfg)
    text = str(info.value)
    assert message in text
    assert "\n" not in text and isinstance(info.value, HbjaxError)


def test_every_shipped_config_passes_the_schema():
    for group in ("attack", "data", "model", "defense", "lrp", "metrics", "experiment"):
        for name in sorted(os.listdir(os.path.join(CONF, group))):
            if name.endswith(".yaml"):
                problems = schema.problems(OmegaConf.to_container(_compose([f"{group}={name[:-5]}"]), resolve=True))
                assert [p for p in problems if "is not set" not in p] == [], (group, name)


def test_several_problems_are_reported_together():
    with pytest.raises(ConfigError) as info:
        schema.validate(_compose(["num_examples=-5", "seed=abc", "attack.params.eps=-1"]))
    assert all(k in str(info.value) for k in ("num_examples=-5", "seed='abc'", "attack.params.eps=-1"))


def test_a_newly_registered_attack_is_typed_from_its_signature():
    """No per-attack table: an attack registered later gets its options checked by type and by
    the shared parameter ranges."""

    def toy(logits_fn, x, labels, key, *, targeted=False, targets=None, eps: float = 0.1,
            steps: int = 3, mode: str = "a", scale: float | None = None):  # fmt: skip
        raise AssertionError("not called")

    hbjax.attacks.ATTACKS.register("toy_for_schema_test", toy)
    try:
        assert schema.attack_param_problems("toy_for_schema_test", {"eps": 0.2, "steps": 2, "scale": None}) == []
        found = schema.attack_param_problems(
            "toy_for_schema_test", {"eps": -0.5, "steps": "x", "mode": 3, "scale": "big", "other": 1}
        )
        assert len(found) == 5
        assert any("eps=-0.5" in p for p in found) and any("takes no option 'other'" in p for p in found)
    finally:
        hbjax.attacks.ATTACKS.remove("toy_for_schema_test")


@settings(max_examples=40, deadline=None)
@given(value=st.one_of(st.integers(-10**6, 0), st.floats(allow_nan=True), st.text(max_size=5), st.booleans()))
def test_any_non_positive_integer_batch_size_is_rejected(value):
    cfg = OmegaConf.to_container(_compose(), resolve=True)
    cfg["batch_size"] = value
    found = schema.problems(cfg)
    assert len(found) == 1 and found[0].startswith(f"batch_size={value!r}")


@settings(max_examples=40, deadline=None)
@given(sigma=st.one_of(st.floats(max_value=0.0), st.tuples(st.floats(0.01, 5), st.floats(0.01, 5)).filter(lambda t: t[0] > t[1])))
def test_any_bad_sigma_is_rejected(sigma):
    cfg = OmegaConf.to_container(_compose(), resolve=True)
    cfg["defense"]["sigma"] = list(sigma) if isinstance(sigma, tuple) else sigma
    assert any(p.startswith("defense.sigma=") for p in schema.problems(cfg))
