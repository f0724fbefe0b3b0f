"""The Hydra config tree composes: defaults, every config group option, sweeps' values, the
joblib and SLURM launchers, and unknown keys fail."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from hbjax.evaluate import config_dir
from hbjax.experiment.compose import ConfigError, coverage_pair, sigma_value

CONF = config_dir()


def _compose(overrides=(), hydra=False):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("evaluate", overrides=list(overrides), return_hydra_config=hydra)


def test_defaults_are_the_documented_ones():
    cfg = _compose()
    assert cfg.model.name == "vgg19_cifar" and cfg.model.source == "shipped"
    assert cfg.data.source == "sample" and cfg.data.name == "cifar10"
    assert cfg.attack.name == "pgd" and cfg.attack.params.norm == "linf"
    assert list(cfg.defense.sigma) == [0.8, 1.2]
    assert cfg.lrp.composite == "dtd"
    assert list(cfg.metrics.coverage) == [0.99, 0.99]


def test_the_paper_experiment_explains_with_the_paper_tool():
    """experiment=paper_cifar uses iNNvestigate's DeepTaylor (the paper's LRP tool); lrp= overrides it."""
    assert _compose(["experiment=paper_cifar"]).lrp.composite == "deep_taylor"
    assert _compose(["experiment=paper_cifar", "lrp=dtd"]).lrp.composite == "dtd"


@pytest.mark.parametrize("group", ["model", "data", "attack", "defense", "lrp", "metrics", "experiment"])
def test_every_option_of_every_group_composes(group):
    options = sorted(f[:-5] for f in os.listdir(os.path.join(CONF, group)) if f.endswith(".yaml"))
    assert options, f"conf/{group} is empty"
    for option in options:
        cfg = _compose([f"{group}={option}"])
        assert cfg is not None


def test_every_attack_of_the_library_has_a_config():
    import hbjax

    names = {OmegaConf.load(os.path.join(CONF, "attack", f)).name for f in os.listdir(os.path.join(CONF, "attack"))}
    assert set(hbjax.attacks.names()) <= names


@pytest.mark.parametrize("launcher,target", [
    ("local_parallel", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
])  # fmt: skip
def test_launcher_configs_compose(launcher, target):
    cfg = _compose([f"hydra/launcher={launcher}"], hydra=True)
    assert cfg.hydra.launcher._target_ == target
    if launcher == "local_parallel":
        assert cfg.hydra.launcher.n_jobs == 2
    else:
        assert cfg.hydra.launcher.gpus_per_node == 1


def test_sweep_values_override_lists_with_floats():
    cfg = _compose(["defense.sigma=0.5", "metrics.coverage=0.9"])
    assert sigma_value(cfg.defense.sigma) == 0.5
    assert coverage_pair(cfg.metrics.coverage) == (0.9, 0.9)
    assert sigma_value([0.8, 1.2]) == (0.8, 1.2)


@pytest.mark.parametrize("bad", [0.0, -1.0, [1.2, 0.8], [0.5]])
def test_bad_sigma_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="sigma"):
        sigma_value(bad)


@pytest.mark.parametrize("bad", [0.0, 1.5, [0.9]])
def test_bad_coverage_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="coverage"):
        coverage_pair(bad)


def test_unknown_key_and_unknown_option_fail():
    with pytest.raises(ConfigCompositionException, match="no_such_key"):
        _compose(["defense.no_such_key=1"])
    with pytest.raises(ConfigCompositionException, match="no_such_attack"):
        _compose(["attack=no_such_attack"])
