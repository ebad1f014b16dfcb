"""``PreciseBatchNorm``: the BatchNorm statistics of the final weights, averaged over many training batches
(``train.precise_bn``).

Why: a BatchNorm layer keeps an exponential moving average of its batches' means and variances (torch's momentum
0.1, so the last 10-20 batches weigh most), and that average is what evaluation and inference use. With small
batches (the 2-core budget recipe's 4 crops of 192x192) it is noisy, and it mixes statistics of weights from
several steps back. "Precise BN" (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021; detectron2's
``PreciseBN`` hook) recomputes it for the final weights as a plain average over many batches. The computation is
``torch.optim.swa_utils.update_bn``'s (running statistics reset, momentum None: the cumulative average of the
batch statistics), run without gradients and under the training's autocast.

The original code base has no such step; experiments without ``precise_bn`` train exactly as before. The
measurements behind the budget recipe's setting are in docs/training.md ("BatchNorm statistics for the final
weights").
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import update_bn


class PreciseBatchNorm:
    """After the last training step, recompute every BatchNorm layer's running mean and variance over ``batches``
    batches of the training data (the loader's order and augmentation of the epochs after the last one, so a
    resumed run recomputes the same figures), before the final checkpoint is written.

    batches: how many (global) batches; each costs a forward pass in training mode without gradients, about a
    third of a training step. Errors: ``ValueError`` for a count that is not a whole number >= 1.
    """

    def __init__(self, batches: int = 100):
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
            raise ValueError(f'train.precise_bn.batches: expected a whole number of batches >= 1, got {batches!r}')
        self.batches = int(batches)


def batchnorm_layers(model: nn.Module) -> List[_BatchNorm]:
    """The BatchNorm layers of ``model`` (every ``_BatchNorm``: BatchNorm1d/2d/3d, SyncBatchNorm) that keep
    running statistics."""
    return [module for module in model.modules()
            if isinstance(module, _BatchNorm) and module.track_running_stats and module.running_mean is not None]


def running_statistics(layer: _BatchNorm) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(running_mean, running_var, num_batches_tracked) of a layer ``batchnorm_layers`` returned."""
    mean, var, count = layer.running_mean, layer.running_var, layer.num_batches_tracked
    assert mean is not None and var is not None and count is not None  # batchnorm_layers keeps such layers only
    return mean, var, count


def statistics_of(layers: Iterable[_BatchNorm]) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Copies of each layer's (running_mean, running_var, num_batches_tracked), to restore them."""
    return [tuple(tensor.detach().clone() for tensor in running_statistics(layer))  # type: ignore[misc]
            for layer in layers]


def restore_statistics(layers: Iterable[_BatchNorm],
                       saved: Iterable[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
    for layer, values in zip(layers, saved):
        for tensor, value in zip(running_statistics(layer), values):
            tensor.copy_(value)


class _Forward(nn.Module):
    """``update_bn`` calls ``model(input)`` and walks ``model.modules()``: the model, with the call it needs."""

    def __init__(self, model: nn.Module, forward: Callable[[Any], Any]):
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, inputs: Any) -> Any:
        return self._forward(inputs)


def recompute_statistics(model: nn.Module, inputs: Iterable[Any], forward: Callable[[Any], Any]) -> Dict[str, int]:
    """Reset the running statistics of every BatchNorm layer of ``model`` and set them to the average of the
    batch statistics over ``inputs`` (each passed to ``forward``, which runs ``model``), in training mode and
    without gradients. Afterwards every module's mode and every layer's momentum are as they were, also when
    ``forward`` raises (the statistics are then the old ones). A layer the forward passes never reached keeps its
    old statistics, and so do all when ``inputs`` is empty. Returns ``{'batches', 'layers'}`` (a model without
    BatchNorm runs no batch). The caller checks the result (finite) and restores the old statistics
    (``statistics_of`` / ``restore_statistics``) when it does not want it."""
    layers = batchnorm_layers(model)
    counted = [0]

    def counting() -> Iterable[Any]:
        for item in inputs:
            counted[0] += 1
            yield item

    if not layers:
        return {'batches': 0, 'layers': 0}
    saved = statistics_of(layers)
    modes = [(module, module.training) for module in model.modules()]
    momenta = [layer.momentum for layer in layers]
    try:
        with torch.no_grad():
            update_bn(counting(), _Forward(model, forward))
    except BaseException:
        restore_statistics(layers, saved)
        raise
    finally:
        for module, training in modes:
            module.training = training
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    unreached = [index for index, layer in enumerate(layers) if int(running_statistics(layer)[2]) == 0]
    restore_statistics([layers[index] for index in unreached], [saved[index] for index in unreached])
    return {'batches': counted[0], 'layers': len(layers)}


__all__ = ['PreciseBatchNorm', 'batchnorm_layers', 'running_statistics', 'statistics_of', 'restore_statistics',
           'recompute_statistics']
