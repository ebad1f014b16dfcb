"""Training losses of the DBNet decoders, selected by name (``loss_class: L1BalanceCELoss``).

Each takes ``(pred, batch)``: ``pred`` the decoder's training dict, ``batch`` with ``gt`` (B, 1, H, W),
``mask`` (B, H, W) and, for the threshold terms, ``thresh_map`` / ``thresh_mask`` (B, H, W); it returns
``(loss, metrics)`` with detached scalar metrics.
"""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import torch
from torch import nn

from .loss_terms import BalanceCrossEntropyLoss, DiceLoss, MaskL1Loss

LossOutput = Tuple[torch.Tensor, Dict[str, torch.Tensor]]


def _require(mapping: Mapping, keys: Tuple[str, ...], what: str) -> None:
    missing = [key for key in keys if key not in mapping]
    if missing:
        raise KeyError(f'{what} lacks {missing} (has {sorted(mapping)})')


class L1BalanceCELoss(nn.Module):
    """DBNet: dice(thresh_binary) + l1_scale * L1(thresh) + bce_scale * balanced BCE(binary).

    Without a threshold head (``pred`` has only 'binary') the loss is the balanced BCE alone.
    """

    def __init__(self, eps: float = 1e-6, l1_scale: float = 10, bce_scale: float = 5):
        super().__init__()
        self.dice_loss = DiceLoss(eps=eps)
        self.l1_loss = MaskL1Loss()
        self.bce_loss = BalanceCrossEntropyLoss()
        self.l1_scale = l1_scale
        self.bce_scale = bce_scale

    def forward(self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> LossOutput:
        _require(batch, ('gt', 'mask'), 'batch')
        bce_loss = self.bce_loss(pred['binary'], batch['gt'], batch['mask'])
        metrics = dict(bce_loss=bce_loss.detach())
        if 'thresh' not in pred:
            return bce_loss, metrics
        _require(batch, ('thresh_map', 'thresh_mask'), 'batch')
        l1_loss, l1_metrics = self.l1_loss(pred['thresh'], batch['thresh_map'], batch['thresh_mask'])
        dice_loss = self.dice_loss(pred['thresh_binary'], batch['gt'], batch['mask'])
        metrics['thresh_loss'] = dice_loss.detach()
        metrics.update(l1_metrics)
        return dice_loss + self.l1_scale * l1_loss + self.bce_scale * bce_loss, metrics


class L1BCEMiningLoss(nn.Module):
    """L1BalanceCELoss whose Dice term is weighted by 1 + the min-max normalised BCE map."""

    def __init__(self, eps: float = 1e-6, l1_scale: float = 10, bce_scale: float = 5):
        super().__init__()
        self.dice_loss = DiceLoss(eps=eps)
        self.l1_loss = MaskL1Loss()
        self.bce_loss = BalanceCrossEntropyLoss()
        self.eps = eps
        self.l1_scale = l1_scale
        self.bce_scale = bce_scale

    def forward(self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> LossOutput:
        _require(batch, ('gt', 'mask', 'thresh_map', 'thresh_mask'), 'batch')
        bce_loss, bce_map = self.bce_loss(pred['binary'], batch['gt'], batch['mask'], return_origin=True)
        l1_loss, l1_metrics = self.l1_loss(pred['thresh'], batch['thresh_map'], batch['thresh_mask'])
        # eps keeps a constant map (max == min) finite; the original divided by zero there.
        bce_map = (bce_map - bce_map.min()) / (bce_map.max() - bce_map.min() + self.eps)
        dice_loss = self.dice_loss(pred['thresh_binary'], batch['gt'], batch['mask'], weights=bce_map + 1)
        metrics = dict(bce_loss=bce_loss.detach(), thresh_loss=dice_loss.detach(), **l1_metrics)
        return dice_loss + self.l1_scale * l1_loss + self.bce_scale * bce_loss, metrics


class AdaptiveDiceLoss(nn.Module):
    """Dice on the probability map plus Dice on the approximate binary map."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.main_loss = DiceLoss(eps)
        self.thresh_loss = DiceLoss(eps)

    def forward(self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> LossOutput:
        _require(batch, ('gt', 'mask'), 'batch')
        main_loss = self.main_loss(pred['binary'], batch['gt'], batch['mask'])
        thresh_loss = self.thresh_loss(pred['thresh_binary'], batch['gt'], batch['mask'])
        return main_loss + thresh_loss, dict(main_loss=main_loss.detach(), thresh_loss=thresh_loss.detach())


class L1DiceLoss(nn.Module):
    """AdaptiveDiceLoss + l1_scale * masked L1 on the threshold map."""

    def __init__(self, eps: float = 1e-6, l1_scale: float = 10):
        super().__init__()
        self.dice_loss = AdaptiveDiceLoss(eps=eps)
        self.l1_loss = MaskL1Loss()
        self.l1_scale = l1_scale

    def forward(self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> LossOutput:
        _require(batch, ('thresh_map', 'thresh_mask'), 'batch')
        dice_loss, metrics = self.dice_loss(pred, batch)
        l1_loss, l1_metrics = self.l1_loss(pred['thresh'], batch['thresh_map'], batch['thresh_mask'])
        metrics.update(l1_metrics)
        return dice_loss + self.l1_scale * l1_loss, metrics


LOSSES = {cls.__name__: cls for cls in (L1BalanceCELoss, L1BCEMiningLoss, L1DiceLoss, AdaptiveDiceLoss)}


def build_loss(loss_class: str, **loss_args) -> nn.Module:
    """The loss named ``loss_class`` built with ``loss_args``."""
    if loss_class not in LOSSES:
        raise ValueError(f'unknown loss_class {loss_class!r}; known: {sorted(LOSSES)}')
    return LOSSES[loss_class](**loss_args)


__all__ = ['LOSSES', 'build_loss', 'L1BalanceCELoss', 'L1BCEMiningLoss', 'L1DiceLoss',
           'AdaptiveDiceLoss', 'BalanceCrossEntropyLoss', 'DiceLoss', 'MaskL1Loss']
