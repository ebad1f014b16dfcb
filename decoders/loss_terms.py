"""Loss building blocks: balanced BCE with hard negative mining, Dice, masked L1.

Shapes: predictions and ``gt`` (B, 1, H, W); ``mask``, ``thresh_map``, ``thresh_mask`` (B, H, W).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch
from torch import nn


def _check_shapes(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, what: str) -> None:
    if pred.dim() != 4 or pred.shape[1] != 1:
        raise ValueError(f'{what}: prediction must be (B, 1, H, W), got {tuple(pred.shape)}')
    if tuple(gt.shape) != tuple(pred.shape):
        raise ValueError(f'{what}: gt must have the prediction shape {tuple(pred.shape)}, '
                         f'got {tuple(gt.shape)}')
    expected = (pred.shape[0], *pred.shape[2:])
    if tuple(mask.shape) != expected:
        raise ValueError(f'{what}: mask must be {expected}, got {tuple(mask.shape)}')


class BalanceCrossEntropyLoss(nn.Module):
    """BCE over ``mask``: every positive pixel plus the ``negative_ratio`` x n_pos hardest negatives,
    (sum positive + sum kept negative) / (n_pos + n_neg + eps). Pixels count as positive/negative
    where gt * mask, (1 - gt) * mask exceed 0.5 (the targets are binary). A non-finite prediction gives a NaN loss
    (``F.binary_cross_entropy`` would refuse it; on CUDA with an assert that cannot be caught)."""

    def __init__(self, negative_ratio: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.negative_ratio = negative_ratio
        self.eps = eps

    def forward(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor,
                return_origin: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        _check_shapes(pred, gt, mask, 'BalanceCrossEntropyLoss')
        gt = gt[:, 0].to(pred.dtype)
        mask = mask.to(pred.dtype)
        positive = (gt * mask > 0.5).to(pred.dtype)
        negative = ((1 - gt) * mask > 0.5).to(pred.dtype)
        positive_count = int(positive.sum())
        negative_count = min(int(negative.sum()), int(positive_count * self.negative_ratio))
        probability = pred[:, 0].float()  # exactly what binary_cross_entropy gets, and what is checked
        if not bool(torch.isfinite(probability).all()):
            # a NaN loss, as for any other non-finite prediction, that the trainer's check sees (training/nonfinite.py):
            # binary_cross_entropy refuses NaN, on CUDA with a device-side assert that ends the process
            loss = torch.full(probability.shape, float('nan'), dtype=torch.float32, device=pred.device)
            balanced = loss.sum()
            return (balanced, loss) if return_origin else balanced
        with torch.autocast(device_type=pred.device.type, enabled=False):
            loss = nn.functional.binary_cross_entropy(probability, gt.float(), reduction='none')
        positive_loss = (loss * positive).sum()
        negative_loss, _ = torch.topk((loss * negative).reshape(-1), negative_count)
        balanced = (positive_loss + negative_loss.sum()) / (positive_count + negative_count + self.eps)
        if return_origin:
            return balanced, loss
        return balanced


class DiceLoss(nn.Module):
    """1 - 2 sum(P G M) / (sum(P M) + sum(G M) + eps), with M = mask (x weights when given)."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor,
                weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        _check_shapes(pred, gt, mask, 'DiceLoss')
        pred = pred[:, 0]
        gt = gt[:, 0]
        if weights is not None:
            if tuple(weights.shape) != tuple(mask.shape):
                raise ValueError(f'DiceLoss: weights must be {tuple(mask.shape)}, got {tuple(weights.shape)}')
            mask = weights * mask
        intersection = (pred * gt * mask).sum()
        union = (pred * mask).sum() + (gt * mask).sum() + self.eps
        return 1 - 2.0 * intersection / union


class MaskL1Loss(nn.Module):
    """sum(|P - T| M) / sum(M); zero (with zero gradients) when the mask is empty."""

    def forward(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor
                ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        if pred.dim() != 4 or pred.shape[1] != 1:
            raise ValueError(f'MaskL1Loss: prediction must be (B, 1, H, W), got {tuple(pred.shape)}')
        expected = (pred.shape[0], *pred.shape[2:])
        for tensor, name in ((gt, 'thresh_map'), (mask, 'thresh_mask')):
            if tuple(tensor.shape) != expected:
                raise ValueError(f'MaskL1Loss: {name} must be {expected}, got {tuple(tensor.shape)}')
        mask_sum = mask.sum()
        total = (torch.abs(pred[:, 0] - gt) * mask).sum()
        # With an empty mask the numerator is exactly 0 (and so are its gradients): divide by 1 there.
        loss = total / torch.where(mask_sum > 0, mask_sum, torch.ones_like(mask_sum))
        return loss, dict(l1_loss=loss.detach())
