"""Composites: which LRP rule explains which layer (zennit's composites, by layer name or kind).

A :class:`Composite` maps a layer to a rule: by its name first (``"fc3"``), then the special rule of
the input layer (the first conv or dense layer), then by its kind (``"conv"``, ``"dense"``,
``"adaptive_avgpool"``). Average pooling takes the normalisation rule (zennit's ``Norm``) unless the
composite says otherwise; ReLU passes relevance through, max-pooling routes it to the winner.

Registered composites (snake_case, zennit's defaults epsilon = 1e-6, gamma = 0.25, stabiliser 1e-6):

=============================  =============  =============  ==============
name                           input layer    other convs    dense layers
=============================  =============  =============  ==============
``dtd`` (Montavon's DTD)       z^B            z+             z+
``deep_taylor``                z+, no bias    z+, no bias    z+, no bias; logits: w^2
``epsilon_plus_flat``          flat           z+             epsilon
``epsilon_gamma_box``          z^B            gamma          epsilon
``epsilon_plus``               z+             z+             epsilon
``epsilon_alpha2_beta1``       alpha2-beta1   alpha2-beta1   epsilon
``epsilon_alpha2_beta1_flat``  flat           alpha2-beta1   epsilon
``epsilon``                    epsilon        epsilon        epsilon
``lrp0``                       LRP-0          LRP-0          LRP-0
=============================  =============  =============  ==============

(``lrp0`` also drops the stabiliser of the pooling rule, so that it equals gradient x input.)

``deep_taylor`` is iNNvestigate's ``DeepTaylor`` analyser (``innvestigate/analyzer/deeptaylor.py``),
the tool the paper ran as "standard DTD": z+ with the bias ignored on every conv and dense layer
followed by a ReLU (the input layer included), w^2 without bias on a kernel layer with no ReLU after
it (the logits layer), plain gradients through max and average pooling and residual sums (no
normalisation rule), and the output through a ReLU first (a target whose logit is <= 0 gets no
relevance). Its ``BoundedDeepTaylor`` would only add z^B on the input layer, which is what ``dtd``
differs in too.

A custom composite comes from a mapping (a Hydra config), e.g.
``{"base": "epsilon_plus_flat", "first": "zbox", "kinds": {"conv": {"rule": "gamma", "gamma": 0.5}},
"names": {"fc3": "lrp0"}}``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Callable, Mapping

from hbjax.lrp import rules as R
from hbjax.lrp.rules import Rule, make_rule

EXPLAINED_KINDS = ("conv", "depthwise_conv", "dense", "avgpool", "adaptive_avgpool", "sum")
PARAMETER_FREE_KINDS = ("avgpool", "adaptive_avgpool", "sum")


@dataclasses.dataclass(frozen=True)
class Composite:
    """Rules by layer. A layer is known by its module path (``"layer1/0/conv1"``, Flax's named
    scopes; ``"fc3"`` for hbjax's VGGs) and its kind: ``conv``, ``depthwise_conv`` (feature
    groups > 1; falls back to ``conv``), ``dense``, ``avgpool`` (any parameter-free linear map:
    average, adaptive average and global mean pooling; ``adaptive_avgpool`` is an alias) and
    ``sum`` (a residual sum of two activations).

    Precedence: ``names`` (glob patterns on the path, ``fnmatch`` syntax, first match wins), then
    ``first`` (the input layer: a conv or dense layer with no other one before it), then ``last``
    (one with no other after it: the logits layer), then ``unrectified`` (a conv or dense layer
    with no ReLU after it), then ``kinds``. Pooling and sums default to zennit's ``Norm``;
    ``plain_pooling``: they keep their ordinary gradient instead. ``output_relu``: the initial
    relevance passes the gradient of a ReLU on the logits (zero for a class whose logit is <= 0).
    Hashable, so it can key a compilation cache.
    """

    name: str = "custom"
    first: Rule | None = None
    kinds: tuple[tuple[str, Rule], ...] = ()
    names: tuple[tuple[str, Rule], ...] = ()
    last: Rule | None = None
    unrectified: Rule | None = None
    plain_pooling: bool = False
    output_relu: bool = False

    def __post_init__(self) -> None:
        for kind, _ in self.kinds:
            if kind not in EXPLAINED_KINDS:
                raise ValueError(f"composite {self.name!r}: no rule applies to layer kind {kind!r}; "
                                 f"rules go on {EXPLAINED_KINDS}")

    def rule_for(
        self, kind: str, path: str, *, is_first: bool = False, is_last: bool = False, rectified: bool = True
    ) -> Rule:
        """The rule for a layer of ``kind`` at module path ``path`` (``rectified``: a ReLU
        follows it)."""
        if kind not in EXPLAINED_KINDS:
            raise ValueError(f"no rule applies to layer kind {kind!r}; rules go on {EXPLAINED_KINDS}")
        for pattern, rule in self.names:
            if path == pattern or fnmatch.fnmatchcase(path, pattern):
                return rule
        with_params = kind not in PARAMETER_FREE_KINDS
        if with_params and is_first and self.first is not None:
            return self.first
        if with_params and is_last and self.last is not None:
            return self.last
        if with_params and not rectified and self.unrectified is not None:
            return self.unrectified
        if not with_params and self.plain_pooling:
            return R.gradient()
        kinds = dict(self.kinds)
        if kind == "adaptive_avgpool":
            kind = "avgpool"
        if kind == "avgpool" and "avgpool" not in kinds and "adaptive_avgpool" in kinds:
            return kinds["adaptive_avgpool"]
        if kind in kinds:
            return kinds[kind]
        if kind == "depthwise_conv" and "conv" in kinds:
            return kinds["conv"]
        if kind in PARAMETER_FREE_KINDS:
            return R.norm()
        raise ValueError(f"composite {self.name!r} has no rule for layer {path!r} ({kind})")

    def replace(self, **changes: Any) -> "Composite":
        return dataclasses.replace(self, **changes)


def _composite(name: str, conv: Rule, dense: Rule, first: Rule | None = None) -> Composite:
    return Composite(name, first, (("conv", conv), ("dense", dense)))


def dtd(stabilizer: float = 1e-6) -> Composite:
    """The paper's "standard DTD" (Montavon et al. 2017): z^B on the input layer with bounds from
    the normalisation of [0, 1], z+ on every other conv and dense layer."""
    return _composite("dtd", R.zplus(stabilizer), R.zplus(stabilizer), R.zbox(stabilizer))


def deep_taylor(stabilizer: float = 1e-6) -> Composite:
    """iNNvestigate's ``DeepTaylor`` (Montavon et al. 2017), the paper's LRP tool: z+ without bias
    on every conv and dense layer followed by a ReLU (the input layer too), w^2 without bias on a
    kernel layer with no ReLU after it, plain gradients through pooling and sums, a ReLU on the
    output."""
    zplus = R.zplus(stabilizer, ignore_bias=True)
    return Composite(
        "deep_taylor", None, (("conv", zplus), ("dense", zplus)),
        unrectified=R.wsquare(stabilizer, ignore_bias=True), plain_pooling=True, output_relu=True,
    )  # fmt: skip


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """zennit's ``EpsilonPlusFlat``: flat on the input layer, z+ convs, epsilon dense layers."""
    return _composite(
        "epsilon_plus_flat", R.zplus(stabilizer), R.epsilon(epsilon), R.flat(stabilizer)
    )


def epsilon_gamma_box(
    epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6
) -> Composite:
    """zennit's ``EpsilonGammaBox``: z^B on the input layer, gamma convs, epsilon dense layers."""
    return _composite(
        "epsilon_gamma_box", R.gamma(gamma, stabilizer), R.epsilon(epsilon), R.zbox(stabilizer)
    )


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """zennit's ``EpsilonPlus``: z+ convs (the input layer too), epsilon dense layers."""
    return _composite("epsilon_plus", R.zplus(stabilizer), R.epsilon(epsilon))


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """zennit's ``EpsilonAlpha2Beta1``: alpha2-beta1 convs, epsilon dense layers."""
    return _composite(
        "epsilon_alpha2_beta1", R.alpha_beta(2.0, 1.0, stabilizer), R.epsilon(epsilon)
    )


def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """zennit's ``EpsilonAlpha2Beta1Flat``: flat input layer, alpha2-beta1 convs, epsilon dense."""
    return _composite(
        "epsilon_alpha2_beta1_flat", R.alpha_beta(2.0, 1.0, stabilizer), R.epsilon(epsilon),
        R.flat(stabilizer),
    )  # fmt: skip


def epsilon_all(epsilon: float = 1e-6) -> Composite:
    """The epsilon rule on every conv and dense layer."""
    return _composite("epsilon", R.epsilon(epsilon), R.epsilon(epsilon))


def lrp0_all() -> Composite:
    """LRP-0 on every conv and dense layer, and the unstabilised normalisation rule on average
    pooling: gradient x input on a bias-free ReLU network (with the logit as R_top)."""
    kinds = (("conv", R.lrp0()), ("dense", R.lrp0()), ("avgpool", R.norm(0.0)), ("sum", R.norm(0.0)))
    return Composite("lrp0", None, kinds)


COMPOSITES: dict[str, Callable[..., Composite]] = {
    "dtd": dtd,
    "deep_taylor": deep_taylor,
    "epsilon_plus_flat": epsilon_plus_flat,
    "epsilon_gamma_box": epsilon_gamma_box,
    "epsilon_plus": epsilon_plus,
    "epsilon_alpha2_beta1": epsilon_alpha2_beta1,
    "epsilon_alpha2_beta1_flat": epsilon_alpha2_beta1_flat,
    "epsilon": epsilon_all,
    "lrp0": lrp0_all,
}


def register_composite(name: str, factory: Callable[..., Composite]) -> None:
    """Adds a composite factory under a snake_case name (replacing one of the same name)."""
    COMPOSITES[name] = factory


def _named(name: str, kwargs: Mapping[str, Any]) -> Composite:
    if name not in COMPOSITES:
        raise ValueError(f"unknown LRP composite {name!r}; expected one of {sorted(COMPOSITES)}")
    try:
        return COMPOSITES[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"bad parameters for LRP composite {name!r}: {e}") from None


def _rule_map(spec: Any, what: str) -> tuple[tuple[str, Rule], ...]:
    if spec is None:
        return ()
    if not hasattr(spec, "items"):
        raise ValueError(f"composite {what!r} must map names to rules; got {spec!r}")
    return tuple((str(k), make_rule(v)) for k, v in spec.items())


def get_composite(spec: str | Composite | Mapping[str, Any]) -> Composite:
    """A composite from a registered name, a :class:`Composite`, or a mapping (Hydra config) with
    optional keys ``base`` (a registered name; its parameters such as ``epsilon``, ``gamma``,
    ``stabilizer`` may sit beside it), ``first`` (a rule), ``kinds`` and ``names`` (maps to rules).
    Entries of ``kinds`` and ``names`` override the base's."""
    if isinstance(spec, Composite):
        return spec
    if isinstance(spec, str):
        return _named(spec, {})
    if not hasattr(spec, "items"):
        raise ValueError(f"an LRP composite is a name, a mapping or a Composite; got {spec!r}")
    cfg = dict(spec.items())
    known = {"base", "name", "first", "last", "kinds", "names", "output_relu"}
    base_name = cfg.pop("base", None)
    name = cfg.pop("name", None)
    first, kinds, names = cfg.pop("first", None), cfg.pop("kinds", None), cfg.pop("names", None)
    last, output_relu = cfg.pop("last", None), cfg.pop("output_relu", None)
    if base_name is None and cfg:
        raise ValueError(f"composite parameters {sorted(cfg)} need a 'base'; known keys: {sorted(known)}")
    base = _named(base_name, cfg) if base_name is not None else Composite("custom")
    merged_kinds = dict(base.kinds) | dict(_rule_map(kinds, "kinds"))
    merged_names = dict(base.names) | dict(_rule_map(names, "names"))
    return base.replace(
        name=str(name or (base.name if not (first or last or kinds or names) else f"{base.name}+custom")),
        first=make_rule(first) if first is not None else base.first,
        kinds=tuple(merged_kinds.items()),
        names=tuple(merged_names.items()),
        last=make_rule(last) if last is not None else base.last,
        output_relu=bool(base.output_relu if output_relu is None else output_relu),
    )
