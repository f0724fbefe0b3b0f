"""LRP rules as data, with zennit's conventions (Anders et al., zennit 0.5).

A rule for a linear layer f(a; W, b) = op(a, W) + b is a short declaration, as in zennit's
``BasicHook``: a list of *groups*, each a list of *terms*. A term names how the layer input and the
parameters are modified (``input``, ``weight``, ``bias``) and a sign. For a group G, with the layer's
forward output z and the upper relevance R,

    o_k  = op(input_k, weight_k) + bias_k                      (k in G)
    g_G  = coef_G * mask_G(z) * R / stab(sum_k sign_k o_k)
    R_in = sum_G sum_{k in G} sign_k * input_k * op^T(g_G; weight_k)

with stab(z) = z + eps * sign0(z), sign0(0) = +1 (zennit's ``Stabilizer``). Every rule of the paper
(and of zennit) is one declaration on this single mechanism (:mod:`hbjax.lrp.layers`):

==============  =====================================================================================
LRP-0, epsilon  one term (x, W, b); bias kept (Bach et al. 2015)
z+ (alpha1b0)   (x+, W+, b+) + (x-, W-, 0): b+ only in the positive sum (Montavon et al. 2017);
                option ignore_bias: (x+, W+, 0) + (x-, W-, 0)
alpha-beta      alpha * [(x+, W+, b+) + (x-, W-, 0)] - beta * [(x+, W-, b-) + (x-, W+, 0)]
gamma           z > 0: (x+, W + g W+, b + g b+) + (x-, W + g W-, 0);
                z < 0: (x+, W + g W-, b + g b-) + (x-, W + g W+, 0); masks from the unmodified z
                (Montavon et al. 2019, generalised as zennit's ``Gamma``)
z^B (box)       (x, W, b) - (low, W+, b+) - (high, W-, b-): the bias cancels (Montavon et al. 2017)
flat            (1, 1, 0): ones as input and weights, bias zeroed; the denominator counts only the
                positions inside the zero padding (Lapuschkin et al. 2019)
w^2             (1, W^2, b^2) (Montavon et al. 2017); option ignore_bias: (1, W^2, 0)
norm            (x, id, -) for average pooling: R_in = x * grad(R / stab(f(x))) (zennit's ``Norm``)
==============  =====================================================================================

References:
  Bach et al. 2015, "On pixel-wise explanations for non-linear classifier decisions by layer-wise
  relevance propagation"; Montavon et al. 2017, "Explaining nonlinear classification decisions with
  deep Taylor decomposition"; Montavon et al. 2019, "Layer-wise relevance propagation: an overview";
  Lapuschkin et al. 2019, "Unmasking Clever Hans predictors".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp

INPUTS = ("x", "pos", "neg", "ones", "low", "high")
MODS = ("keep", "pos", "neg", "zero", "ones", "square", "gamma_pos", "gamma_neg")
MASKS = ("all", "pos", "neg")


@dataclasses.dataclass(frozen=True)
class Mod:
    """A parameter modification: ``keep``, ``pos`` (clamp at 0 from below), ``neg``, ``zero``,
    ``ones``, ``square``, ``gamma_pos`` (p + gamma * p+), ``gamma_neg`` (p + gamma * p-)."""

    op: str = "keep"
    gamma: float = 0.0

    def __post_init__(self) -> None:
        if self.op not in MODS:
            raise ValueError(f"unknown parameter modification {self.op!r}; expected one of {MODS}")

    def __call__(self, p: jnp.ndarray | None) -> jnp.ndarray | None:
        if p is None or self.op == "keep":
            return p
        if self.op == "pos":
            return jnp.maximum(p, 0)
        if self.op == "neg":
            return jnp.minimum(p, 0)
        if self.op == "zero":
            return jnp.zeros_like(p)
        if self.op == "ones":
            return jnp.ones_like(p)
        if self.op == "square":
            return p * p
        if self.op == "gamma_pos":
            return p + self.gamma * jnp.maximum(p, 0)
        return p + self.gamma * jnp.minimum(p, 0)  # gamma_neg


KEEP, POS, NEG, ZERO, ONES, SQUARE = (Mod(op) for op in ("keep", "pos", "neg", "zero", "ones", "square"))


@dataclasses.dataclass(frozen=True)
class Term:
    """One modified forward: ``input`` in :data:`INPUTS` (x, x+, x-, ones, the box bounds low and
    high), parameter modifications, and the sign with which it enters its group."""

    input: str
    weight: Mod = KEEP
    bias: Mod = KEEP
    sign: float = 1.0

    def __post_init__(self) -> None:
        if self.input not in INPUTS:
            raise ValueError(f"unknown term input {self.input!r}; expected one of {INPUTS}")

    @property
    def is_forward(self) -> bool:
        """True when the term's output is the layer's own forward output z (shared, not recomputed)."""
        return self.input == "x" and self.weight == KEEP and self.bias == KEEP


@dataclasses.dataclass(frozen=True)
class Group:
    """Terms sharing one stabilised denominator; ``coef`` scales the group's relevance and ``mask``
    (``all``, ``pos``: z > 0, ``neg``: z < 0, on the unmodified output z) selects where it applies."""

    terms: tuple[Term, ...]
    coef: float = 1.0
    mask: str = "all"

    def __post_init__(self) -> None:
        if self.mask not in MASKS:
            raise ValueError(f"unknown mask {self.mask!r}; expected one of {MASKS}")


@dataclasses.dataclass(frozen=True)
class Rule:
    """An LRP rule: ``name``, its groups and the stabiliser ``epsilon`` (0 gives LRP-0, where a zero
    denominator passes no relevance). ``bounds`` (low, high), per channel or scalar, only for z^B;
    None takes them from the model's input normalisation of [0, 1]."""

    name: str
    groups: tuple[Group, ...]
    epsilon: float = 1e-6
    bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def uses_bounds(self) -> bool:
        return any(t.input in ("low", "high") for g in self.groups for t in g.terms)


def epsilon(epsilon: float = 1e-6) -> Rule:
    """LRP-epsilon: R_in = x * W^T (R / stab(W x + b)) (Bach et al. 2015); zennit's ``Epsilon``."""
    return Rule("epsilon", (Group((Term("x"),)),), epsilon=float(epsilon))


def lrp0() -> Rule:
    """LRP-0: the epsilon rule with epsilon = 0; a zero pre-activation passes no relevance."""
    return Rule("lrp0", (Group((Term("x"),)),), epsilon=0.0)


def zplus(stabilizer: float = 1e-6, *, ignore_bias: bool = False) -> Rule:
    """z+ (alpha1-beta0): positive contributions only, b+ in the sum; zennit's ``ZPlus``.
    ``ignore_bias``: no bias at all (zennit's ``ZPlus(zero_params="bias")``, iNNvestigate's
    ``Alpha1Beta0IgnoreBiasRule``)."""
    terms = (Term("pos", POS, ZERO if ignore_bias else POS), Term("neg", NEG, ZERO))
    return Rule("zplus", (Group(terms),), epsilon=float(stabilizer))


def alpha_beta(alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6) -> Rule:
    """alpha-beta (Bach et al. 2015): alpha * positive part - beta * negative part, alpha - beta = 1;
    b+ and b- only in their own sums; zennit's ``AlphaBeta``."""
    if alpha < 0 or beta < 0 or abs((alpha - beta) - 1.0) > 1e-12:
        raise ValueError(f"alpha-beta needs alpha, beta >= 0 and alpha - beta = 1; got {alpha}, {beta}")
    positive = Group((Term("pos", POS, POS), Term("neg", NEG, ZERO)), coef=float(alpha))
    negative = Group((Term("pos", NEG, NEG), Term("neg", POS, ZERO)), coef=-float(beta))
    groups = (positive,) if beta == 0 else (positive, negative)
    return Rule("alpha_beta", groups, epsilon=float(stabilizer))


def gamma(gamma: float = 0.25, stabilizer: float = 1e-6) -> Rule:
    """Generalised gamma rule (Montavon et al. 2019; zennit's ``Gamma``): where z > 0, weights
    W + gamma W+ on x+ and W + gamma W- on x- (bias b + gamma b+ in the x+ term); where z < 0 the
    mirror image. Masks come from the unmodified z."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    gp, gn = Mod("gamma_pos", float(gamma)), Mod("gamma_neg", float(gamma))
    positive = Group((Term("pos", gp, gp), Term("neg", gn, ZERO)), mask="pos")
    negative = Group((Term("pos", gn, gn), Term("neg", gp, ZERO)), mask="neg")
    return Rule("gamma", (positive, negative), epsilon=float(stabilizer))


def zbox(
    stabilizer: float = 1e-6,
    *,
    low: float | tuple[float, ...] | None = None,
    high: float | tuple[float, ...] | None = None,
) -> Rule:
    """z^B (Montavon et al. 2017; zennit's ``ZBox``) for the input layer of a box-bounded input:
    denominator W x - W+ low - W- high (the bias cancels). Bounds default to the images of 0 and 1
    under the model's input normalisation."""
    terms = (Term("x"), Term("low", POS, POS, -1.0), Term("high", NEG, NEG, -1.0))
    if (low is None) != (high is None):
        raise ValueError("zbox needs both low and high, or neither (bounds from the normalisation)")
    bounds = None
    if low is not None:
        as_tuple = lambda v: tuple(float(a) for a in (v if isinstance(v, (tuple, list)) else (v,)))  # noqa: E731
        bounds = (as_tuple(low), as_tuple(high))
    return Rule("zbox", (Group(terms),), epsilon=float(stabilizer), bounds=bounds)


def flat(stabilizer: float = 1e-6) -> Rule:
    """Flat (Lapuschkin et al. 2019; zennit's ``Flat``): relevance spread uniformly over the
    receptive field; ones as input and weights, bias zeroed."""
    return Rule("flat", (Group((Term("ones", ONES, ZERO),)),), epsilon=float(stabilizer))


def wsquare(stabilizer: float = 1e-6, *, ignore_bias: bool = False) -> Rule:
    """w^2 (Montavon et al. 2017; zennit's ``WSquare``): ones as input, squared weights and bias.
    ``ignore_bias``: squared weights only (zennit's ``WSquare(zero_params="bias")``, iNNvestigate's
    ``WSquareRule``)."""
    term = Term("ones", SQUARE, ZERO if ignore_bias else SQUARE)
    return Rule("wsquare", (Group((term,)),), epsilon=float(stabilizer))


def norm(stabilizer: float = 1e-6) -> Rule:
    """Normalisation rule for parameter-free linear layers (average pooling): zennit's ``Norm``,
    R_in = x * grad_x(R / stab(f(x)))."""
    return Rule("norm", (Group((Term("x"),)),), epsilon=float(stabilizer))


RULES: dict[str, Callable[..., Rule]] = {
    "lrp0": lrp0,
    "zero": lrp0,
    "epsilon": epsilon,
    "zplus": zplus,
    "alpha_beta": alpha_beta,
    "gamma": gamma,
    "zbox": zbox,
    "flat": flat,
    "wsquare": wsquare,
    "norm": norm,
}


def make_rule(spec: str | Rule | dict[str, Any]) -> Rule:
    """A rule from its registered name (``"epsilon"``), a dict (``{"rule": "gamma", "gamma": 0.5}``,
    as a Hydra config gives) or a :class:`Rule` (returned as is)."""
    if isinstance(spec, Rule):
        return spec
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, dict) or hasattr(spec, "items"):
        kwargs = dict(spec.items())
        if "rule" not in kwargs:
            raise ValueError(f"a rule given as a mapping needs a 'rule' key naming it; got {kwargs}")
        name = kwargs.pop("rule")
    else:
        raise ValueError(f"a rule is a name, a mapping or a Rule; got {spec!r}")
    if name not in RULES:
        raise ValueError(f"unknown LRP rule {name!r}; expected one of {sorted(RULES)}")
    try:
        return RULES[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"bad parameters for LRP rule {name!r}: {e}") from None
