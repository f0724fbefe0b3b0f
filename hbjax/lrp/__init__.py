"""Layer-wise relevance propagation through custom VJP rules: rules, composites, relevance,
heatmaps (LRP, CLRP, SGLRP) and their binarisation (eq. 2 of the paper)."""

from hbjax.lrp.binarization import binarize
from hbjax.lrp.composites import (
    COMPOSITES,
    Composite,
    get_composite,
    register_composite,
)
from hbjax.lrp.explain import (
    METHODS,
    explained_layers,
    heatmap,
    heatmap_and_logits,
    initial_relevance,
    layer_relevances,
    relevance,
    relevance_and_logits,
    relevance_fn,
)
from hbjax.lrp.graph import UnsupportedOperation
from hbjax.lrp.layers import LayerRule, LinearOp, lrp_linear, max_pool_winner, relu_pass, stabilize
from hbjax.lrp.plot import explain_figure, methods_figure, plot_panels
from hbjax.lrp.rules import (
    RULES,
    Group,
    Mod,
    Rule,
    Term,
    alpha_beta,
    epsilon,
    flat,
    gamma,
    gradient,
    lrp0,
    make_rule,
    norm,
    wsquare,
    zbox,
    zplus,
)

# The public surface: what users call. The machinery (LinearOp, LayerRule, lrp_linear, relu_pass,
# stabilize, activation_pass, lrp_sum; the interpreter in hbjax.lrp.graph) stays importable from its
# module but is not part of it.
__all__ = [
    "COMPOSITES", "METHODS", "RULES", "Composite", "Group", "Mod", "Rule", "Term", "UnsupportedOperation", "alpha_beta",
    "binarize", "epsilon", "explain_figure", "explained_layers", "flat", "gamma", "get_composite", "gradient", "heatmap",
    "heatmap_and_logits", "initial_relevance", "layer_relevances", "lrp0", "make_rule", "methods_figure", "norm",
    "plot_panels", "register_composite", "relevance", "relevance_and_logits", "relevance_fn", "wsquare",
    "zbox", "zplus",
]  # fmt: skip
