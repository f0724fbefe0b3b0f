"""The LRP interpreter for any network: trace it to a jaxpr, find its layers, re-evaluate it with
every layer's relevance rule as a custom VJP.

A network is a function ``logits = net(variables, xn)`` of the normalised input (see
:class:`hbjax.models.Model`). It is traced to a jaxpr; calls (``jit``, ``custom_jvp_call``, ...)
are inlined, keeping each equation's module path (Flax's named scopes, ``source_info.name_stack``).
One pass over the flat equations finds the layers on the path from the input to the logits
(cf. the evaluation loop of JAX's "Writing custom interpreters" guide and the per-primitive
handlers of ``jax_verify``'s ``graph_traversal``):

- a **linear layer**: ``conv_general_dilated`` (any stride, padding, dilation, feature groups) or
  ``dot_general`` of the activation with a tensor computed from the parameters, followed by every
  per-channel affine map on constants that it alone feeds: the bias, an inference batch norm, a
  scale (canonisation, as zennit's ``MergeBatchNorm``: W' = W s, b' = s b + t);
- a **parameter-free linear map** (kind ``avgpool``): a chain of sums, window sums, products with
  constant matrices, transposes and constant scalings (average, adaptive average, global mean
  pooling): zennit's ``Norm`` rule by default;
- a **residual sum** of two activations (kind ``sum``): ``Norm`` (zennit's ``Sum``) by default;
- an **activation**: ``max``/``min``/``clamp`` with a constant (ReLU, ReLU6, clips) passes
  relevance through (zennit's ``Pass``); a ReLU keeps its ordinary gradient where every reader of
  it multiplies its relevance by its input (the same result, better fused);
- **structural** operations keep their ordinary gradients: reshapes, transposes, slices,
  padding, concatenation, channel reversal, dtype casts, and max-pooling (relevance to the winner).

Anything else on the path from the input to the logits (a product of two activations, a
sigmoid, a batch norm with no linear layer before it, ...) is an error naming the primitive and
its module path: never a silently wrong heatmap.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from hbjax.lrp.composites import Composite
from hbjax.lrp.layers import (
    LayerRule,
    LinearOp,
    activation_pass,
    linear_output,
    lrp_linear,
    lrp_sum,
    max_pool_first_winner,
)
from hbjax.lrp.rules import Rule

try:  # the name stack of an equation, for inlined calls
    from jax._src import source_info_util as _siu
except ImportError:  # pragma: no cover
    _siu = None

CALLS = {
    "jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "remat": "jaxpr", "checkpoint": "jaxpr", "named_call": "call_jaxpr",
}  # fmt: skip
STRUCTURAL = {
    "reshape", "transpose", "squeeze", "expand_dims", "broadcast_in_dim", "concatenate", "slice",
    "pad", "rev", "convert_element_type", "copy", "copy_p", "reduce_max", "reduce_window_max",
    "dynamic_slice", "reduce_precision",
}  # fmt: skip
POOL_STEPS = {"reduce_sum", "reduce_window_sum", "dot_general", "conv_general_dilated", "transpose", "mul", "div", "neg"}
AFFINE = {"add", "sub", "mul", "div", "neg"}
ACTIVATIONS = {"max", "min", "clamp"}


class UnsupportedOperation(ValueError):
    """An operation on the path from the input to the logits that LRP cannot explain."""


def _is_var(v: Any) -> bool:
    return not isinstance(v, jcore.Literal)


def _sub_jaxpr(eqn) -> tuple[Any, Sequence[Any]] | None:
    key = CALLS.get(eqn.primitive.name)
    sub = eqn.params.get(key) if key else None
    if sub is None:
        return None
    if isinstance(sub, jcore.ClosedJaxpr):
        return sub.jaxpr, sub.consts
    return sub, ()


def _inline(jaxpr, consts, args, stack):
    """Evaluates a jaxpr with every call inlined; each bound primitive keeps its module path."""
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        path = stack + eqn.source_info.name_stack
        sub = _sub_jaxpr(eqn)
        if sub is not None:
            outs = _inline(sub[0], sub[1], invals, path)
        else:
            with _siu.user_context(eqn.source_info.traceback, name_stack=path):
                outs = eqn.primitive.bind(*invals, **eqn.params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def trace(net: Callable, leaves: Sequence[Any], treedef, xn: Any) -> jcore.ClosedJaxpr:
    """The flat jaxpr of ``net(variables, xn)`` in the arguments (*parameter leaves, xn).

    A network may carry ``explained``: the same function written in the form LRP reads (e.g.
    EfficientNet-Lite's, whose CPU forward pass writes depthwise convs as shifted multiply-adds);
    that form is traced.
    """
    net = getattr(net, "explained", net)
    def fn(*args):
        return net(jax.tree.unflatten(treedef, args[:-1]), args[-1])

    structs = [jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in (*leaves, xn)]
    closed = jax.make_jaxpr(fn)(*structs)
    if len(closed.jaxpr.outvars) != 1:
        raise ValueError(f"the network must return one logits array; it returns {len(closed.jaxpr.outvars)}")
    return jax.make_jaxpr(lambda *a: _inline(closed.jaxpr, closed.consts, a, _siu.new_name_stack()))(*structs)


@dataclasses.dataclass
class Node:
    """A layer found in the jaxpr: equations ``head`` .. ``end`` (folded affine maps between)."""

    kind: str  # conv, depthwise_conv, dense, avgpool
    name: str
    head: int
    eqns: list[int]
    act_in: Any
    out: Any
    kernel: Any = None
    folds: list = dataclasses.field(default_factory=list)  # (primitive name, act position, const var)
    chain: tuple = ()
    chain_consts: tuple = ()
    rule: Rule | None = None
    nonneg: bool = False
    is_first: bool = False
    is_last: bool = False


@dataclasses.dataclass
class Plan:
    """The layers of a traced network with their rules, and how to evaluate every equation."""

    jaxpr: Any
    consts: Sequence[Any]
    roles: dict  # eqn index -> ("const"|"plain"|"pass"|"sum"|"node"|"skip", detail)
    nodes: list[Node]
    records: list[tuple[int, str]]  # (eqn index, name) whose output relevance layer_relevances reports


def _paths(eqns, act_eqns) -> list[str]:
    """Module paths of the equations, with the top module's name dropped when all share it."""
    raw = [str(e.source_info.name_stack) for e in eqns]
    tops = {raw[i].split("/")[0] for i in act_eqns}
    strip = len(tops) == 1 and "" not in tops
    return [p.split("/", 1)[1] if strip and "/" in p else ("" if strip and p in tops else p) for p in raw]


def _where(path: str) -> str:
    return f"at module path {path!r}" if path else "at the top level of the network (no module path)"


def _channel_dims(eqn) -> tuple[int, ...]:
    """Output dimensions along which a folded scale or bias may vary: the output features."""
    out_rank = len(eqn.outvars[0].aval.shape)
    if eqn.primitive.name == "conv_general_dilated":
        return (eqn.params["dimension_numbers"].out_spec[1],)
    (_, rc), (lb, rb) = eqn.params["dimension_numbers"]
    n_free = len(eqn.invars[1].aval.shape) - len(rc) - len(rb)
    return tuple(range(out_rank - n_free, out_rank))


def _per_channel(const_shape: tuple[int, ...], out_shape: tuple[int, ...], channels: tuple[int, ...]) -> bool:
    if len(const_shape) > len(out_shape):
        return False
    lead = len(out_shape) - len(const_shape)
    return all(n == 1 or (lead + i) in channels for i, n in enumerate(const_shape))


def analyse(closed: jcore.ClosedJaxpr, composite: Composite) -> Plan:
    """Finds the layers of a flat jaxpr (from :func:`trace`) and assigns their rules."""
    jp = closed.jaxpr
    eqns = jp.eqns
    x_var = jp.invars[-1]
    act, from_params = {x_var}, set(jp.invars[:-1])
    consumers: dict = collections.defaultdict(list)
    act_eqns = []
    for i, e in enumerate(eqns):
        ins = [v for v in e.invars if _is_var(v)]
        for v in ins:
            consumers[v].append(i)
        if any(v in act for v in ins):
            act.update(e.outvars)
            act_eqns.append(i)
        if any(v in from_params for v in ins):
            from_params.update(e.outvars)
    outputs = {v for v in jp.outvars if _is_var(v)}
    if not any(v in act for v in outputs):
        raise ValueError("the network's output does not depend on its input")
    paths = _paths(eqns, act_eqns)
    roles: dict = {i: ("const", None) for i in range(len(eqns)) if i not in set(act_eqns)}
    nodes: list[Node] = []

    def fail(i: int, why: str):
        e = eqns[i]
        raise UnsupportedOperation(
            f"LRP cannot explain primitive {e.primitive.name!r} {_where(paths[i])}: {why}"
        )

    def single_reader(v) -> int | None:
        readers = consumers.get(v, [])
        return readers[0] if len(readers) == 1 and v not in outputs else None

    def act_operands(e):
        return [k for k, v in enumerate(e.invars) if _is_var(v) and v in act]

    counters: collections.Counter = collections.Counter()

    def node_name(kind: str, path: str) -> str:
        counters[kind] += 1
        return path or f"{kind}{counters[kind]}"

    for i in act_eqns:
        if i in roles:
            continue
        e = eqns[i]
        prim = e.primitive.name
        ops = act_operands(e)
        if prim in ("conv_general_dilated", "dot_general"):
            if len(ops) != 1:
                fail(i, "a product of two activations is not a linear layer")
            other = e.invars[1 - ops[0]]
            if _is_var(other) and other in from_params:
                if ops[0] != 0:
                    fail(i, "the parameters must be the second operand (kernel) of a linear layer")
                if prim == "dot_general" and e.params["dimension_numbers"][1][0]:
                    fail(i, "a dense layer with batch dimensions is not supported")
                groups = e.params.get("feature_group_count", 1)
                kind = "dense" if prim == "dot_general" else ("depthwise_conv" if groups > 1 else "conv")
                node = Node(kind, node_name(kind, paths[i]), i, [i], e.invars[0], e.outvars[0], kernel=other)
                channels = _channel_dims(e)
                out_shape = e.outvars[0].aval.shape
                cur = e.outvars[0]
                while (j := single_reader(cur)) is not None:
                    f = eqns[j]
                    if f.primitive.name not in AFFINE or len(act_operands(f)) != 1:
                        break
                    pos = act_operands(f)[0]
                    const = f.invars[1 - pos] if len(f.invars) == 2 else None
                    if const is not None and not _per_channel(tuple(jnp.shape(const.aval)), out_shape, channels):
                        break
                    if f.primitive.name == "div" and pos != 0:
                        break
                    node.folds.append((f.primitive.name, pos, const))
                    node.eqns.append(j)
                    cur = f.outvars[0]
                node.out = cur
            else:
                node = _pool_node(i, eqns, paths, act_operands, single_reader, node_name, from_params)
        elif prim in ("reduce_sum", "reduce_window_sum"):
            node = _pool_node(i, eqns, paths, act_operands, single_reader, node_name, from_params)
        elif prim == "add" and len(ops) == 2:
            roles[i] = ("sum", None)
            continue
        elif prim in AFFINE:
            if len(ops) == 2:
                fail(i, "a product, quotient or difference of two activations is not supported")
            fail(i, "an affine map on constants (a bias, a batch norm, a scale) that follows no "
                    "linear layer it could be folded into (is it a batch norm before a conv, or an "
                    "input normalisation inside the model? hbjax normalises the input itself)")
        elif prim in ACTIVATIONS:
            act_pos = ops[0] if len(ops) == 1 else None
            if act_pos is None or (prim == "clamp" and act_pos != 1):
                fail(i, "an activation of two activations is not supported")
            roles[i] = ("pass", None)
            continue
        elif prim in STRUCTURAL:
            roles[i] = ("plain", None)
            continue
        else:
            fail(i, "no LRP rule handles it; supported are linear layers (conv, dense), their "
                    "batch norms and biases, pooling, residual sums, ReLU-like activations and "
                    "reshapes")
        for j in node.eqns:
            roles[j] = ("skip", None)
        roles[node.eqns[-1]] = ("node", len(nodes))
        nodes.append(node)
    _assign_rules(nodes, eqns, roles, act, x_var, outputs, consumers, composite, paths, fail)
    records = _records(eqns, roles, nodes, paths, consumers)
    return Plan(closed.jaxpr, closed.consts, roles, nodes, records)


def _pool_node(i, eqns, paths, act_operands, single_reader, node_name, from_params) -> Node:
    """A parameter-free linear map starting at equation i: the longest chain of linear steps."""
    node = Node("avgpool", node_name("avgpool", paths[i]), i, [], eqns[i].invars[act_operands(eqns[i])[0]], None)
    chain, consts = [], []
    j, cur = i, None
    while j is not None:
        f = eqns[j]
        prim = f.primitive.name
        ops = act_operands(f)
        if prim not in POOL_STEPS or len(ops) != 1 or (prim == "div" and ops[0] != 0):
            break
        if prim in ("dot_general", "conv_general_dilated", "mul", "div"):
            other = f.invars[1 - ops[0]]
            if _is_var(other) and other in from_params:
                break
        ids = []
        for k, v in enumerate(f.invars):
            if k != ops[0]:
                ids.append(len(consts))
                consts.append(v)
        chain.append((f.primitive, tuple(sorted(f.params.items())), ops[0], tuple(ids)))
        node.eqns.append(j)
        cur = f.outvars[0]
        j = single_reader(cur)
    node.out, node.chain, node.chain_consts = cur, tuple(chain), tuple(consts)
    return node


def _multiplies_by_input(rule: Rule | None) -> bool:
    return rule is not None and rule.multiplies_by_input


def _assign_rules(nodes, eqns, roles, act, x_var, outputs, consumers, composite, paths, fail) -> None:
    """Rules per layer (first and last layers found by reachability), input signs, ReLU modes."""
    node_of_head = {n.head: n for n in nodes}
    node_of_end = {n.eqns[-1]: n for n in nodes}
    with_params = {n.head for n in nodes if n.kind != "avgpool"}
    upstream: dict = collections.defaultdict(bool)  # a parametrised layer lies between x and v
    nonneg: dict = collections.defaultdict(bool)
    order = sorted(roles)
    for i in order:
        role, _ = roles[i]
        e = eqns[i]
        ins = [v for v in e.invars if _is_var(v) and v in act]
        if not ins:
            continue
        up = any(upstream[v] for v in ins)
        if role == "skip" or role == "node":
            node = node_of_end.get(i)
            if node is not None:
                node.is_first = node.kind != "avgpool" and not upstream[node.act_in]
                node.nonneg = nonneg[node.act_in]
                upstream[node.out] = upstream[node.act_in] or node.kind != "avgpool"
                nonneg[node.out] = node.kind == "avgpool" and nonneg[node.act_in]
            continue
        for o in e.outvars:
            upstream[o] = up
            if role == "pass":
                c = [v for v in e.invars if not (_is_var(v) and v in act)]
                cval = c[0].val if c and isinstance(c[0], jcore.Literal) else None
                relu = e.primitive.name == "max" and cval is not None and np.ndim(cval) == 0 and cval == 0
                clip_of_nonneg = (
                    e.primitive.name == "min" and nonneg[ins[0]] and cval is not None and np.all(np.asarray(cval) >= 0)
                )
                nonneg[o] = bool(relu or clip_of_nonneg)
            else:
                nonneg[o] = all(nonneg[v] for v in ins)
    downstream: dict = collections.defaultdict(bool)
    for i in reversed(order):
        e = eqns[i]
        ins = [v for v in e.invars if _is_var(v) and v in act]
        if i in with_params:
            for v in ins:
                downstream[v] = True
        elif any(downstream[o] for o in e.outvars) or (i in node_of_end and downstream[node_of_end[i].out]):
            for v in ins:
                downstream[v] = True
    def is_relu(j: int) -> bool:
        e = eqns[j]
        return e.primitive.name == "max" and any(
            isinstance(v, jcore.Literal) and np.ndim(v.val) == 0 and v.val == 0 for v in e.invars
        )

    for n in nodes:
        n.is_last = n.kind != "avgpool" and not downstream[n.out]
        readers = consumers.get(n.out, [])
        rectified = bool(readers) and n.out not in outputs and all(is_relu(j) for j in readers)
        n.rule = composite.rule_for(n.kind, n.name, is_first=n.is_first, is_last=n.is_last, rectified=rectified)
        if n.kind == "avgpool" and not (n.rule.is_gradient or n.rule.is_parameter_free):
            fail(n.head, f"rule {n.rule.name!r} needs parameters; a pooling layer takes 'norm' or 'gradient'")
        if n.rule.uses_bounds and n.rule.bounds is None and not n.is_first:
            raise ValueError(
                f"rule {n.rule.name!r} on layer {n.name!r} needs explicit bounds (low, high); "
                "only the input layer takes them from the normalisation"
            )
    sum_rules = {}
    for i, (role, _) in roles.items():
        if role == "sum":
            rule = composite.rule_for("sum", paths[i] or "sum")
            if not (rule.is_gradient or rule.is_parameter_free):
                fail(i, f"rule {rule.name!r} needs parameters; a residual sum takes 'norm' or 'gradient'")
            sum_rules[i] = rule
            roles[i] = ("sum", rule)

    def input_multiplied(v) -> bool:
        """Whether every reader of v multiplies the relevance it passes down by v."""
        if v in outputs:
            return False
        for j in consumers.get(v, []):
            role, detail = roles[j]
            if j in node_of_head:
                if not _multiplies_by_input(node_of_head[j].rule):
                    return False
            elif role == "sum":
                if detail.is_gradient:
                    return False
            elif role == "plain" and eqns[j].primitive.name in ("reduce_window_max", "reduce_max", "reshape",
                                                                  "transpose", "slice", "pad", "squeeze",
                                                                  "expand_dims", "convert_element_type"):
                if not all(input_multiplied(o) for o in eqns[j].outvars):
                    return False
            else:
                return False
        return True

    for i, (role, _) in list(roles.items()):
        if role == "pass":
            e = eqns[i]
            ins = [v for v in e.invars if _is_var(v) and v in act]
            if nonneg[e.outvars[0]] and e.primitive.name == "max" and input_multiplied(e.outvars[0]):
                roles[i] = ("plain", None)


def _records(eqns, roles, nodes, paths, consumers) -> list[tuple[int, str]]:
    """Where layer_relevances reports relevance: every layer, activation and sum, and the last
    structural operation of each module path."""
    out = []
    counters: collections.Counter = collections.Counter()
    for i in sorted(roles):
        role, detail = roles[i]
        if role in ("const", "skip"):
            continue
        if role == "node":
            out.append((i, nodes[detail].name))
            continue
        label = {"sum": "sum", "pass": "activation"}.get(role, eqns[i].primitive.name)
        if eqns[i].primitive.name == "max" and role == "plain":
            label = "activation"
        counters[label] += 1
        name = paths[i] or f"{label}{counters[label]}"
        if role == "plain":
            readers = consumers.get(eqns[i].outvars[0], [])
            if any(roles.get(j, ("",))[0] in ("plain",) and paths[j] == paths[i] for j in readers):
                continue
        out.append((i, name))
    return out


def _compact(c: jnp.ndarray, rank: int) -> jnp.ndarray:
    c = jnp.asarray(c)
    return c.reshape((1,) * (rank - c.ndim) + c.shape)


def _folded(node: Node, eqn, read, dtype, keep_conv_scale: bool = False):
    """Kernel and bias of a linear layer with its affine maps folded in: W' = W s, b' = s b + t.

    With ``keep_conv_scale``, a conv's kernel is returned as it is, with s: (W, s, b'); else
    (W', None, b')."""
    w = jnp.asarray(read(node.kernel), dtype)
    rank = len(eqn.outvars[0].aval.shape)
    s, t = None, None
    for prim, pos, const in node.folds:
        c = _compact(read(const), rank).astype(dtype) if const is not None else None
        if prim == "add":
            t = c if t is None else t + c
        elif prim == "sub" and pos == 0:
            t = -c if t is None else t - c
        elif prim == "sub":
            s = -1.0 if s is None else -s
            t = c if t is None else c - t
        elif prim == "mul":
            s = c if s is None else s * c
            t = None if t is None else t * c
        elif prim == "div":
            s = 1.0 / c if s is None else s / c
            t = None if t is None else t / c
        else:  # neg
            s = -1.0 if s is None else -s
            t = None if t is None else -t
    if s is not None:
        s = jnp.asarray(s, dtype)
        channels = _channel_dims(eqn)
        if eqn.primitive.name == "conv_general_dilated" and keep_conv_scale:
            return w, s, t
        if eqn.primitive.name == "conv_general_dilated":
            out_dim = eqn.params["dimension_numbers"].rhs_spec[0]
            vec = s.reshape(-1) if s.size > 1 else s.reshape(())
            shape = [1] * w.ndim
            if vec.ndim:
                shape[out_dim] = vec.shape[0]
            w = w * vec.reshape(shape)
        else:
            (_, rc), _ = eqn.params["dimension_numbers"]
            free = [d for d in range(w.ndim) if d not in rc]
            sub = s.reshape(s.shape[-len(channels):]) if s.ndim else s
            shape = [1] * w.ndim
            for d, n in zip(free, jnp.shape(sub)):
                shape[d] = n
            w = w * jnp.reshape(sub, shape)
    return w, None, t


def evaluate(
    plan: Plan,
    leaves: Sequence[Any],
    xn: jnp.ndarray,
    bounds: tuple[jnp.ndarray, jnp.ndarray] | None,
    probes: Sequence[jnp.ndarray] | None = None,
    record: list | None = None,
) -> jnp.ndarray:
    """The logits of xn; ``jax.vjp`` of this function propagates relevance with the plan's rules.

    ``probes``: zeros added at each of ``plan.records``; their cotangents are the relevance there.
    ``record``: a list that receives the outputs at ``plan.records``.
    """
    jp = plan.jaxpr
    dtype = xn.dtype
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jp.constvars, plan.consts))
    env.update(zip(jp.invars, (*leaves, xn)))
    record_at = {i: k for k, (i, _) in enumerate(plan.records)}
    for i, e in enumerate(jp.eqns):
        role, detail = plan.roles[i]
        if role == "skip":
            continue
        if role == "node":
            node = plan.nodes[detail]
            x = read(node.act_in)
            if node.kind == "avgpool":
                consts = tuple(read(v) for v in node.chain_consts)
                op = LinearOp("chain", chain=node.chain)
                if node.rule.is_gradient:
                    out = op(x, consts)
                else:
                    out = lrp_linear(LayerRule(op, node.rule, node.nonneg), x, consts, None, None)
            else:
                head = jp.eqns[node.head]
                # a conv's forward keeps its per-channel scale on the output, as the network has
                # it: the rule's kernels are computed from W s, never a scaled copy for the forward
                w, scale, b = _folded(node, head, read, dtype, keep_conv_scale=True)
                op = LinearOp("conv" if head.primitive.name == "conv_general_dilated" else "dense",
                              params=tuple(sorted(head.params.items())))  # fmt: skip
                if node.rule.is_gradient:
                    out = linear_output(op, x, w, b, scale)
                else:
                    bnd = _bounds(node, bounds, dtype)
                    axis = head.params["dimension_numbers"].rhs_spec[0] if scale is not None else None
                    out = lrp_linear(LayerRule(op, node.rule, node.nonneg, axis), x, w, b, bnd, scale)
            outs = [out]
            out_vars = [node.out]
        else:
            invals = [read(v) for v in e.invars]
            if role == "sum" and not detail.is_gradient:
                outs = [lrp_sum(detail.epsilon, invals[0], invals[1])]
            elif role == "pass":
                pos = next(k for k, v in enumerate(e.invars) if _is_var(v) and v in _act_vars(plan))
                consts = tuple(a for k, a in enumerate(invals) if k != pos)
                step = (e.primitive, tuple(sorted(e.params.items())), pos, tuple(range(len(consts))))
                outs = [activation_pass(step, invals[pos], consts)]
            elif _winner_pool(e):
                p = e.params
                window = (tuple(p["window_dimensions"]), tuple(p["window_strides"]), tuple(map(tuple, p["padding"])))
                outs = [max_pool_first_winner(window, invals[0])]
            else:
                outs = e.primitive.bind(*invals, **e.params)
                if not e.primitive.multiple_results:
                    outs = [outs]
            out_vars = e.outvars
        if i in record_at:
            k = record_at[i]
            if probes is not None:
                outs = [outs[0] + probes[k]] + list(outs[1:])
            if record is not None:
                record.append(outs[0])
        env.update(zip(out_vars, outs))
    return read(jp.outvars[0])


def _winner_pool(eqn) -> bool:
    """Whether eqn is a max-pool (no dilations) whose relevance goes to the first winner of each
    window (:func:`hbjax.lrp.layers.max_pool_first_winner`; the same as its plain gradient but for
    the choice among tied inputs, where it takes torch's)."""
    p = eqn.params
    return (
        eqn.primitive.name == "reduce_window_max"
        and all(d == 1 for d in p["base_dilation"]) and all(d == 1 for d in p["window_dilation"])
    )  # fmt: skip


def _act_vars(plan: Plan) -> set:
    cached = getattr(plan, "_act", None)
    if cached is None:
        cached = {plan.jaxpr.invars[-1]}
        for e in plan.jaxpr.eqns:
            if any(_is_var(v) and v in cached for v in e.invars):
                cached.update(e.outvars)
        plan._act = cached  # type: ignore[attr-defined]
    return cached


def _bounds(node: Node, default, dtype):
    rule = node.rule
    if not rule.uses_bounds:
        return None
    if rule.bounds is None:
        if default is None:
            raise ValueError(f"rule {rule.name!r} on layer {node.name!r} needs bounds (low, high)")
        return default
    low, high = rule.bounds
    return jnp.asarray(low, dtype), jnp.asarray(high, dtype)
