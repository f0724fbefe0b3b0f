"""The conventions of the public API, for every public name at once (in the style of dm-pix's
api_test.py): every name in ``__all__`` resolves and is documented; options after the data
arguments are keyword-only; randomness comes in as a ``key`` argument (a ``jax.random`` key),
never as a seed or an ``rng``."""

from __future__ import annotations

import inspect

import pytest

import hbjax

MODULES = (hbjax.lrp, hbjax.defense, hbjax.metrics, hbjax.attacks, hbjax.models)

# Data that may come with a default (None: "the model's own prediction", "a fresh key", ...) and so
# may stay positional: the random key, the target classes, a model's parameters, the attack given to
# the registry's decorator-capable ``register``.
DATA_WITH_DEFAULT = {"key", "targets", "params", "attack"}
# Names that are always options, wherever they appear (a required option must be keyword-only too).
OPTION_NAMES = {
    "targeted", "norm", "kind", "method", "composite", "rule", "coverage", "ks", "k", "relevance",
    "confidence", "steps", "loop", "scale_by_logit", "truncate", "mode",
}  # fmt: skip
# Names that would mean randomness outside a ``key`` argument.
NOT_KEYS = {"rng", "seed", "prng", "prng_key", "rng_key", "random_state", "random_key"}


def public_names():
    for module in MODULES:
        for name in module.__all__:
            yield module, name


def public_functions():
    for module, name in public_names():
        obj = getattr(module, name)
        if inspect.isfunction(obj) or inspect.isfunction(getattr(obj, "fun", None)):
            yield f"{module.__name__}.{name}", obj


def _ids(pairs):
    return [p[0] for p in pairs]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_all_is_sorted_unique_and_resolves(module):
    names = module.__all__
    assert len(set(names)) == len(names), f"{module.__name__}.__all__ repeats a name"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{module.__name__}.__all__ names {missing}, which it does not define"


@pytest.mark.parametrize("module,name", list(public_names()), ids=lambda v: getattr(v, "__name__", v))
def test_every_public_callable_has_its_own_docstring(module, name):
    obj = getattr(module, name)
    if not (callable(obj) or inspect.isclass(obj)):
        return  # constants (dicts, tuples) carry no docstring of their own: the module's documents them
    doc = inspect.getdoc(getattr(obj, "fun", obj))
    assert doc and doc.strip(), f"{module.__name__}.{name} has no docstring"
    if inspect.isclass(obj):
        for base in obj.__mro__[1:]:
            assert doc != inspect.getdoc(base), f"{module.__name__}.{name} only inherits {base.__name__}'s docstring"


def keyword_only_violations(fn) -> list[str]:
    """The parameters of ``fn`` that are options (after the data arguments, with a default, or named
    as an option) but may be passed by position. A function without data arguments (every parameter
    has a default: a rule or composite factory) has no options in this sense."""
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if positional and all(p.default is not p.empty for p in params if p.kind != p.VAR_KEYWORD):
        return []
    bad = []
    for p in positional:
        if p.name in OPTION_NAMES or (p.default is not p.empty and p.name not in DATA_WITH_DEFAULT):
            bad.append(p.name)
    return bad


FUNCTIONS = list(public_functions())
# Known departures, each failing strictly (an xfail that starts passing fails, so the entry goes).
KNOWN_POSITIONAL_OPTIONS: dict[str, str] = {}


def _known(pairs, known):
    return [
        pytest.param(q, f, id=q, marks=pytest.mark.xfail(strict=True, reason=known[q])) if q in known
        else pytest.param(q, f, id=q)
        for q, f in pairs
    ]  # fmt: skip


@pytest.mark.parametrize("qualname,fn", _known(FUNCTIONS, KNOWN_POSITIONAL_OPTIONS))
def test_options_are_keyword_only(qualname, fn):
    bad = keyword_only_violations(fn)
    assert not bad, f"{qualname}: options {bad} can be passed by position; make them keyword-only"


@pytest.mark.parametrize("qualname,fn", FUNCTIONS, ids=_ids(FUNCTIONS))
def test_randomness_is_a_key_argument(qualname, fn):
    names = set(inspect.signature(fn).parameters)
    assert not names & NOT_KEYS, f"{qualname} takes {sorted(names & NOT_KEYS)}; take a jax.random `key`"
    keyish = {n for n in names if n.endswith("key") and n != "key"}
    assert not keyish, f"{qualname} takes {sorted(keyish)}; call the random key `key`"


def test_the_checks_catch_what_they_are_for():
    def positional_option(x, labels, eps=0.1):
        """A data function with an option that can be passed by position."""

    def required_option(x, norm):
        """An option without default, named as one."""

    def good(x, labels, key=None, *, eps=0.1, norm="linf"):
        """The house style."""

    def factory(epsilon=1e-6):
        """A rule factory: no data arguments."""

    assert keyword_only_violations(positional_option) == ["eps"]
    assert keyword_only_violations(required_option) == ["norm"]
    assert keyword_only_violations(good) == []
    assert keyword_only_violations(factory) == []
