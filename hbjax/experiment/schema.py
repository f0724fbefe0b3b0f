"""The schema of ``hbjax-evaluate``'s config: every key's type and range, checked on the composed
config before any model or data is loaded.

One table (:data:`SCHEMA`) types the top-level keys and the keys shared by each config group's
options; a group's option may add keys of its own (new model or data configs need no change here).
Attack parameters are typed from the attack function's keyword-only options (the default's type, or
the annotation where the default is None), and bounded by one table of parameter names shared by
every attack (:data:`ATTACK_PARAM_RANGES`): a newly registered attack is checked without an entry
of its own. ``binarize`` options are typed from :func:`hbjax.lrp.binarize` the same way.

Every problem is reported as ``key=value: expected ...``; all of them in one line, one ConfigError.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Mapping

from hbjax.errors import ConfigError

Check = Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


@dataclasses.dataclass(frozen=True)
class Field:
    """A key's check and the words that describe what it expects."""

    check: Check
    expected: str
    nullable: bool = False

    def problem(self, value: Any) -> str | None:
        if value is None and self.nullable:
            return None
        if value == "???" or value is None:
            return f"is not set; expected {self.expected}"
        try:
            ok = self.check(value)
        except (TypeError, ValueError):
            ok = False
        return None if ok else f"expected {self.expected}"


def integer(minimum: int, maximum: int | None = None, *, nullable: bool = False, note: str = "") -> Field:
    words = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    words += ", or null" + note if nullable else ""
    return Field(lambda v: _is_int(v) and v >= minimum and (maximum is None or v <= maximum), words, nullable)


def number(low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False,
           nullable: bool = False) -> Field:  # fmt: skip
    lo = "(" if low_open else "["
    hi = ")" if high_open or high is None else "]"
    words = f"a number in {lo}{low:g}, {'inf' if high is None else f'{high:g}'}{hi}"

    def check(v: Any) -> bool:
        if not _is_number(v):
            return False
        above = v > low if low_open else v >= low
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    return Field(check, words + (", or null" if nullable else ""), nullable)


def choice(*options: str, nullable: bool = False) -> Field:
    return Field(lambda v: v in options, f"one of {list(options)}" + (", or null" if nullable else ""), nullable)


def text(*, nullable: bool = False) -> Field:
    return Field(lambda v: isinstance(v, str) and v != "", "a non-empty string" + (", or null" if nullable else ""), nullable)


def boolean() -> Field:
    return Field(lambda v: isinstance(v, bool), "true or false")


def string_list(*, nullable: bool = False) -> Field:
    return Field(lambda v: isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v),
                 "a list of strings" + (", or null" if nullable else ""), nullable)  # fmt: skip


def _sigma(v: Any) -> bool:
    if _is_number(v):
        return v > 0
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(s) for s in v) and 0 < v[0] <= v[1]


def _coverage(v: Any) -> bool:
    values = [v] if _is_number(v) else list(v) if isinstance(v, (list, tuple)) else []
    return len(values) in ((1,) if _is_number(v) else (2,)) and all(_is_number(c) and 0 < c <= 1 for c in values)


def _ks(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_int(k) and k >= 1 for k in v)


def _preprocess_kinds() -> tuple[str, ...]:
    return ("cifar", "imagenet")


def _composite(v: Any) -> bool:
    from hbjax import lrp

    return isinstance(v, Mapping) or v in lrp.COMPOSITES


def _composite_field() -> Field:
    from hbjax import lrp

    return Field(_composite, f"a registered LRP composite {sorted(lrp.COMPOSITES)} or a mapping")


def _method_field() -> Field:
    from hbjax import lrp

    return choice(*lrp.METHODS)


SCHEMA: dict[str, Any] = {
    "seed": integer(0),
    "num_examples": integer(1, nullable=True, note=" (every image)"),
    "batch_size": integer(1),
    "num_panels": integer(0),
    "progress": boolean(),
    "stop_after_batches": integer(1, nullable=True),
    "matmul_precision": choice("default", "high", "highest", nullable=True),
    "save_adversarials": boolean(),
    "adversarials_from": text(nullable=True),
    "model": {"source": text(), "name": text(), "arch": text(nullable=True)},
    "data": {
        "source": text(), "name": text(nullable=True), "root": text(nullable=True), "split": text(nullable=True),
        "preprocess": choice(*_preprocess_kinds()), "class_names": string_list(nullable=True),
        "data_dir": text(nullable=True), "manual_dir": text(nullable=True),
    },  # fmt: skip
    "attack": {
        "name": text(), "label": text(nullable=True), "targeted": boolean(), "defended": boolean(),
        "target": choice("random", "least_likely", "second"),
    },  # fmt: skip
    "defense": {"name": text(), "sigma": Field(_sigma, "a number > 0 or a pair [low, high] with 0 < low <= high")},
    "lrp": {"composite": _composite_field, "method": _method_field},
    "metrics": {
        "coverage": Field(_coverage, "a number in (0, 1] or a pair of them"),
        "ks": Field(_ks, "a non-empty list of integers >= 1"),
        "relevance": choice("logit", "prob"),
    },
}

# Ranges of attack parameters by name, shared by every attack (types come from the signatures).
ATTACK_PARAM_RANGES: dict[str, Field] = {
    "eps": number(0), "step_size": number(0, low_open=True, nullable=True),
    "steps": integer(1), "restarts": integer(1), "iterations": integer(1),
    "binary_search_steps": integer(1), "search_steps": integer(1), "eot_samples": integer(1),
    "learning_rate": number(0, low_open=True), "initial_const": number(0, low_open=True),
    "confidence": number(0), "memory": integer(1), "line_search": integer(1),
    "init_trials": integer(1), "update_stats_every": integer(1), "unroll": integer(1),
    "spherical_step": number(0, low_open=True), "source_step": number(0, low_open=True),
    "step_adaptation": number(1, low_open=True), "n_queries": integer(1), "queries": integer(1),
    "p_init": number(0, 1, low_open=True), "rho": number(0, 1), "alpha": number(0, low_open=True),
    "norm": choice("linf", "l2"),
}  # fmt: skip

_ANNOTATION_TYPES: dict[str, Field] = {
    "int": Field(_is_int, "an integer"), "float": Field(_is_number, "a number"),
    "bool": boolean(), "str": Field(lambda v: isinstance(v, str), "a string"),
}  # fmt: skip
# arguments every attack takes from the experiment, never from attack.params
_CALL_ARGS = ("targeted", "targets", "defense")


def _field_from_parameter(p: inspect.Parameter) -> Field | None:
    """The type check a keyword option implies: its default's type, else its annotation's."""
    default = p.default
    if isinstance(default, bool):
        return boolean()
    if _is_int(default):
        return _ANNOTATION_TYPES["float"] if "float" in str(p.annotation) else _ANNOTATION_TYPES["int"]
    if isinstance(default, float):
        return _ANNOTATION_TYPES["float"]
    if isinstance(default, str):
        return _ANNOTATION_TYPES["str"]
    names = [s.strip() for s in str(p.annotation).split("|")]
    fields = [_ANNOTATION_TYPES[n] for n in names if n in _ANNOTATION_TYPES]
    if not fields or any(n not in _ANNOTATION_TYPES and n != "None" for n in names):
        return None  # a type the schema cannot tell (a mapping, an array): the attack checks it
    nullable = "None" in names or default is None
    return Field(lambda v: any(f.check(v) for f in fields), " or ".join(f.expected for f in fields), nullable)


def attack_options(fn: Callable) -> dict[str, inspect.Parameter]:
    """The keyword-only options of an attack function that attack.params may set."""
    return {
        k: p for k, p in inspect.signature(fn).parameters.items()
        if p.kind == p.KEYWORD_ONLY and k not in _CALL_ARGS
    }  # fmt: skip


def attack_param_problems(name: Any, params: Any, where: str = "attack.params") -> list[str]:
    """Problems of the parameters ``params`` of the registered attack ``name``."""
    import hbjax

    try:
        fn = hbjax.attacks.get(name)
    except (KeyError, ValueError, TypeError):
        return [f"{where.rsplit('.', 1)[0]}.name={name!r}: expected a registered attack {hbjax.attacks.names()}"]
    if params is None:
        return []
    if not isinstance(params, Mapping):
        return [f"{where}={params!r}: expected a mapping of {name}'s options"]
    options = attack_options(fn)
    problems = []
    for key, value in params.items():
        full = f"{where}.{key}"
        if key not in options:
            problems.append(f"{full}: {name} takes no option {key!r}; its options are {sorted(options)}")
            continue
        if key == "attack_params" and "attack" in options:
            problems += attack_param_problems(params.get("attack", options["attack"].default), value, full)
            continue
        typed = _field_from_parameter(options[key])
        for field in (typed, ATTACK_PARAM_RANGES.get(key)):
            problem = field.problem(value) if field is not None else None
            if problem is not None:
                problems.append(f"{full}={value!r}: {problem}")
                break
    return problems


def _binarize_problems(value: Any) -> list[str]:
    from hbjax import lrp

    if not isinstance(value, Mapping):
        return [f"defense.binarize={value!r}: expected a mapping of hbjax.lrp.binarize's options"]
    params = dict(inspect.signature(lrp.binarize).parameters)
    params.pop(next(iter(params)))  # the heatmap
    ranges = {"rule": choice("std", "top"), "k": number(0), "fraction": number(0, 1)}
    problems = []
    for key, v in value.items():
        if key not in params:
            problems.append(f"defense.binarize.{key}: hbjax.lrp.binarize takes no option {key!r}; its options are {sorted(params)}")
            continue
        for field in (_field_from_parameter(params[key]), ranges.get(key)):
            problem = field.problem(v) if field is not None else None
            if problem is not None:
                problems.append(f"defense.binarize.{key}={v!r}: {problem}")
                break
    return problems


def problems(cfg: Mapping) -> list[str]:
    """Every problem of a composed experiment config (a plain mapping), in schema order."""
    out: list[str] = []
    for key, spec in SCHEMA.items():
        if isinstance(spec, dict):
            group = cfg.get(key)
            if not isinstance(group, Mapping):
                out.append(f"{key}={group!r}: expected a config group (a mapping)")
                continue
            for sub, field in spec.items():
                if sub in group:
                    field = field() if callable(field) and not isinstance(field, Field) else field
                    problem = field.problem(group[sub])
                    if problem is not None:
                        out.append(f"{key}.{sub}={group[sub]!r}: {problem}")
        elif key in cfg:
            problem = spec.problem(cfg[key])
            if problem is not None:
                out.append(f"{key}={cfg[key]!r}: {problem}")
    attack = cfg.get("attack")
    if isinstance(attack, Mapping) and "name" in attack:
        out += attack_param_problems(attack["name"], attack.get("params"))
    defense = cfg.get("defense")
    if isinstance(defense, Mapping) and "binarize" in defense:
        out += _binarize_problems(defense["binarize"])
    return out


def validate(cfg: Any) -> None:
    """Raises one ConfigError listing every problem of the config (an OmegaConf or plain mapping)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        try:
            cfg = OmegaConf.to_container(cfg, resolve=True)
        except Exception as e:  # an interpolation that does not resolve
            raise ConfigError(f"the config does not resolve: {str(e).splitlines()[0]}") from None
    found = problems(cfg)
    if found:
        raise ConfigError("; ".join(found))
