"""BatchNorm folded into the convolution before it, for inference.

In eval mode ``BN(conv(x)) = conv'(x)`` with, per output channel, ``scale = gamma / sqrt(running_var + eps)``,
``weight' = weight * scale`` and ``bias' = (bias - running_mean) * scale + beta``: the convolution takes the BN's
affine map and the BN becomes ``nn.Identity``, one pass over the activation less per BN (what onnxruntime does
with the exported graph). Folding is eval-mode arithmetic only: a model that trains on needs its BNs (batch
statistics, running averages, gradients of gamma and beta), so a model in training mode is refused.

The pairs are found structurally, not by tracing: ``torch.fx`` cannot trace the model (the decoder checks its
feature maps' sizes in Python ``if``s, the model's forward checks the type of its input, the deformable
convolution is a custom op), and a traced graph would be a new module tree. A pair is

- two neighbours of a plain ``nn.Sequential`` (its forward not overridden): a convolution, or a plain
  ``nn.Sequential`` ending in one (the smooth up-sampling of the heads), followed by an ``nn.BatchNorm2d``
  (ResNet's down-sampling branch, the decoder heads, both MobileNetV3 backbones);
- or a named pair of a module whose forward applies one attribute to the other's output directly
  (``NAMED_PAIRS``: ResNet's stem and blocks, deformable ``conv2`` included, and the channel-only
  scale attention of DBNet++). Classes match exactly: a subclass may have rewritten the forward.

A convolution is an ``nn.Conv2d``, an ``nn.ConvTranspose2d`` or one of the op's ``DeformConv`` /
``ModulatedDeformConv`` (their output is linear in the weight per output channel as well). A BN without running
statistics (``track_running_stats=False`` normalises with the batch's even in eval mode) is left alone. The
arithmetic is done in float64 and stored in the convolution's dtype; a convolution without a bias gets one.

``fold_batchnorm(model)`` returns a folded deep copy and leaves ``model`` as it was (``inplace=True`` folds
``model`` itself). A folded model's state dict has no BN keys and other convolution weights: it is for running,
never for saving as a checkpoint. ``inference.runners.TorchRunner`` folds by default (``fold_batchnorm=True``).
"""
from __future__ import annotations

import copy
from typing import Dict, List, NamedTuple, Optional, Tuple, Type

import torch
from torch import nn

from assets.ops.dcn import DeformConv, ModulatedDeformConv
from backbones.resnet import BasicBlock, Bottleneck, ResNet
from decoders.feature_attention import ScaleChannelAttention

CONVOLUTIONS: Tuple[Type[nn.Module], ...] = (nn.Conv2d, nn.ConvTranspose2d, DeformConv, ModulatedDeformConv)

# Classes whose forward computes ``bn(conv(x))`` with the two attributes named here (read each forward before
# adding a class: nothing may stand between the two).
NAMED_PAIRS: Dict[Type[nn.Module], Tuple[Tuple[str, str], ...]] = {
    ResNet: (('conv1', 'bn1'),),
    BasicBlock: (('conv1', 'bn1'), ('conv2', 'bn2')),          # conv2: nn.Conv2d or the deformable one
    Bottleneck: (('conv1', 'bn1'), ('conv2', 'bn2'), ('conv3', 'bn3')),
    ScaleChannelAttention: (('fc1', 'bn'),),
}


class FoldPair(NamedTuple):
    """One BN to fold: the qualified names (``model.named_modules()``) of the convolution, of the BN, of the BN's
    parent and the BN's attribute name in it."""
    convolution: str
    batchnorm: str
    parent: str
    attribute: str


def _join(prefix: str, name: str) -> str:
    return f'{prefix}.{name}' if prefix else name


def _is_plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _last_convolution(module: nn.Module, name: str) -> Tuple[str, nn.Module] | None:
    """(name, module) of the convolution whose output ``module``'s output is, or None."""
    if isinstance(module, CONVOLUTIONS):
        return name, module
    children = list(module.named_children()) if _is_plain_sequential(module) else []
    if children:
        last_name, last = children[-1]
        return _last_convolution(last, _join(name, last_name))
    return None


def _foldable_batchnorm(module: nn.Module) -> bool:
    return type(module) is nn.BatchNorm2d and module.running_mean is not None and module.running_var is not None


def find_fold_pairs(model: nn.Module) -> List[FoldPair]:
    """Every (convolution, BN) pair of ``model`` that folding would merge, in module order."""
    pairs: List[FoldPair] = []
    for parent_name, parent in model.named_modules():
        if _is_plain_sequential(parent):
            children = list(parent.named_children())
            for (first_name, first), (second_name, second) in zip(children, children[1:]):
                found = _last_convolution(first, _join(parent_name, first_name))
                if found is not None and _foldable_batchnorm(second):
                    pairs.append(FoldPair(found[0], _join(parent_name, second_name), parent_name, second_name))
        for conv_name, bn_name in NAMED_PAIRS.get(type(parent), ()):
            conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
            if isinstance(conv, CONVOLUTIONS) and bn is not None and _foldable_batchnorm(bn):
                pairs.append(FoldPair(_join(parent_name, conv_name), _join(parent_name, bn_name), parent_name,
                                      bn_name))
    return pairs


@torch.no_grad()
def fold_into(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    """``conv`` (Conv2d, ConvTranspose2d, DeformConv, ModulatedDeformConv) takes ``bn``'s eval-mode affine map."""
    weight: torch.Tensor = conv.weight  # type: ignore[assignment]  # each of CONVOLUTIONS has a weight
    groups: int = conv.groups  # type: ignore[assignment]
    conv_bias: Optional[torch.Tensor] = conv.bias  # type: ignore[assignment]
    channels = bn.num_features
    transposed = isinstance(conv, nn.ConvTranspose2d)
    out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
    if out_channels != channels:
        raise ValueError(f'fold_batchnorm: {type(conv).__name__} has {out_channels} output channels, the '
                         f'BatchNorm after it {channels}')
    assert bn.running_mean is not None and bn.running_var is not None  # _foldable_batchnorm
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    if transposed:
        # weight (in, out / groups, kh, kw): output channel g * out/groups + j is column j of the g-th block of rows
        grouped = weight.double().reshape(groups, weight.shape[0] // groups, weight.shape[1], *weight.shape[2:])
        folded = (grouped * scale.reshape(groups, 1, channels // groups, 1, 1)).reshape(weight.shape)
    else:  # weight (out, in / groups, kh, kw)
        folded = weight.double() * scale.reshape(-1, 1, 1, 1)
    bias = conv_bias.double() if conv_bias is not None else torch.zeros_like(mean)
    conv.weight = nn.Parameter(folded.to(weight.dtype), requires_grad=weight.requires_grad)
    conv.bias = nn.Parameter(((bias - mean) * scale + beta).to(weight.dtype), requires_grad=weight.requires_grad)


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` with every BN that directly follows a convolution folded into it and replaced by ``nn.Identity``
    (``find_fold_pairs``); other BNs stay. A deep copy unless ``inplace`` (then ``model`` itself, changed).
    ValueError for a model (or any of its modules) in training mode."""
    training = [name or type(model).__name__ for name, module in model.named_modules() if module.training]
    if training:
        raise ValueError('fold_batchnorm: the model is in training mode (' + ', '.join(training[:3]) +
                         (', ...' if len(training) > 3 else '') + '); folding is for eval-mode inference '
                         'only: call model.eval() first, or keep the BatchNorms for training')
    pairs = find_fold_pairs(model)
    if not pairs:
        return model
    target = model if inplace else copy.deepcopy(model)
    modules = dict(target.named_modules())
    for pair in pairs:
        bn = modules[pair.batchnorm]
        assert isinstance(bn, nn.BatchNorm2d)
        fold_into(modules[pair.convolution], bn)
        setattr(modules[pair.parent], pair.attribute, nn.Identity())
    return target


def count_batchnorms(model: nn.Module) -> int:
    """How many BatchNorm layers ``model`` holds (any dimension)."""
    return sum(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())
