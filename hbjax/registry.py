"""One registry pattern for named parts (attacks today): a read-only mapping from names to objects
with metadata and aliases, usable as a decorator, that rejects a second object under a taken name.

    ATTACKS = Registry("attack", aliases={"cw": "carlini_wagner_l2"})

    @ATTACKS.register("my_attack", needs_model=False)
    def my_attack(logits_fn, x, labels, key, *, targeted=False, targets=None): ...

    ATTACKS.get("cw"); ATTACKS.metadata("bpda_eot")["needs_model"]; sorted(ATTACKS)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one ``kind`` with their metadata; iterates over the names; aliases resolve
    in :meth:`get` and ``[]``. ``defaults`` are the metadata every entry has unless given."""

    def __init__(self, kind: str, *, aliases: Mapping[str, str] | None = None, **defaults: Any):
        self.kind = kind
        self.aliases: dict[str, str] = dict(aliases or {})
        self.defaults = defaults
        self._entries: dict[str, T] = {}
        self._metadata: dict[str, dict[str, Any]] = {}

    def register(self, name: str, obj: T | None = None, **metadata: Any) -> Any:
        """Registers ``obj`` under ``name`` with ``metadata`` (keys of the registry's defaults);
        without ``obj``, a decorator that registers what it decorates. A ValueError when the name
        (or an alias) is taken or a metadata key is unknown."""
        unknown = sorted(set(metadata) - set(self.defaults))
        if unknown:
            expected = sorted(self.defaults)
            raise ValueError(f"unknown {self.kind} metadata {unknown}; expected some of {expected}")

        def add(value: T) -> T:
            if name in self._entries or name in self.aliases:
                raise ValueError(f"an {self.kind} named {name!r} is already registered")
            self._entries[name] = value
            self._metadata[name] = {**self.defaults, **metadata}
            return value

        return add(obj) if obj is not None else add

    def remove(self, name: str) -> T:
        """Removes ``name`` (not an alias) and returns its object: for tests and plugins that register
        an entry for a while. A KeyError naming the choices when it is not registered."""
        if name not in self._entries:
            raise KeyError(f"no {self.kind} named {name!r} is registered; registered: {self.names()}")
        self._metadata.pop(name)
        return self._entries.pop(name)

    def resolve(self, name: str) -> str:
        """The registered name of ``name`` or its alias; a KeyError naming the choices."""
        key = self.aliases.get(name, name)
        if key not in self._entries:
            raise KeyError(
                f"unknown {self.kind} {name!r}; expected one of {self.names()}"
                + (f" (aliases {sorted(self.aliases)})" if self.aliases else "")
            )
        return key

    def get(self, name: str) -> T:
        """The object registered as ``name`` (or an alias); a KeyError naming the choices."""
        return self._entries[self.resolve(name)]

    def metadata(self, name: str) -> dict[str, Any]:
        """A copy of the metadata of ``name`` (or an alias)."""
        return dict(self._metadata[self.resolve(name)])

    def names(self) -> list[str]:
        """The registered names, sorted (aliases not included)."""
        return sorted(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self.aliases

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"

