"""hbjax.registry.Registry: one pattern for named parts (decorator, metadata, aliases, duplicates)."""

from __future__ import annotations

import pytest

from hbjax import attacks
from hbjax.registry import Registry


def test_register_as_call_and_decorator_with_metadata_and_aliases():
    reg = Registry("widget", aliases={"w": "wide"}, tall=False)
    assert reg.register("narrow", len) is len

    @reg.register("wide", tall=True)
    def wide():
        """A widget."""

    assert reg.names() == ["narrow", "wide"] and sorted(reg) == ["narrow", "wide"] and len(reg) == 2
    assert reg.get("w") is wide and reg["wide"] is wide and "w" in reg and "nope" not in reg
    assert reg.metadata("w") == {"tall": True} and reg.metadata("narrow") == {"tall": False}
    reg.metadata("narrow")["tall"] = True  # a copy
    assert reg.metadata("narrow") == {"tall": False}


def test_taken_names_unknown_names_and_unknown_metadata_are_errors():
    reg = Registry("widget", aliases={"w": "wide"}, tall=False)
    reg.register("wide", len)
    with pytest.raises(ValueError, match="widget named 'wide' is already registered"):
        reg.register("wide", max)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("w", max)  # an alias is taken too
    with pytest.raises(KeyError, match="unknown widget 'nope'; expected one of \\['wide'\\]"):
        reg.get("nope")
    with pytest.raises(ValueError, match="unknown widget metadata \\['colour'\\]"):
        reg.register("other", max, colour="red")
    assert reg.names() == ["wide"]
    assert reg.remove("wide") is len and reg.names() == []
    with pytest.raises(KeyError, match="no widget named 'wide' is registered"):
        reg.remove("wide")
    reg.register("wide", max)  # the name is free again


def test_the_attack_registry_marks_the_attacks_that_take_the_model():
    takes_model = {name for name in attacks.names() if attacks.metadata(name)["needs_model"]}
    assert takes_model == {"adaptive_heatmap", "bpda_eot"}
    assert attacks.metadata("bpda")["needs_model"] and not attacks.metadata("cw")["needs_model"]
    assert not hasattr(attacks.bpda_eot, "needs_model")  # the registry is the one place
