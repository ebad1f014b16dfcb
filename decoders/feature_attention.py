"""Adaptive scale fusion (DBNet++): attention weights for the four FPN scales.

Module and parameter names follow the original's released DBNet++ models
(``concat_attention.conv``, ``concat_attention.enhanced_attention.{channel_wise,spatial_wise,attention_wise}``
and ``fc1/bn/fc2`` for the channel-only variant).
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn


def _spatial_attention() -> nn.Sequential:
    """A sigmoid weight map from the channel mean: 3x3 conv, ReLU, 1x1 conv (names as the released model's)."""
    return nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(1, 1, 1, bias=False),
                         nn.Sigmoid())


def _scale_weights(in_planes: int, num_features: int) -> nn.Sequential:
    """One sigmoid weight map per scale."""
    return nn.Sequential(nn.Conv2d(in_planes, num_features, 1, bias=False), nn.Sigmoid())


class ScaleSpatialAttention(nn.Module):
    """Spatial attention on the channel mean, added to the input, then one weight map per scale."""

    def __init__(self, in_planes: int, out_planes: int, num_features: int):
        super().__init__()
        self.spatial_wise = _spatial_attention()
        self.attention_wise = _scale_weights(in_planes, num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = self.spatial_wise(torch.mean(x, dim=1, keepdim=True))
        return self.attention_wise(spatial + x)


class ScaleChannelSpatialAttention(nn.Module):
    """Channel attention (squeeze-excite, added), then spatial attention (added), then per-scale
    weight maps: the paper's adaptive scale fusion."""

    def __init__(self, in_planes: int, out_planes: int, num_features: int):
        super().__init__()
        self.channel_wise = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_planes, out_planes, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(out_planes, in_planes, 1, bias=False))
        self.spatial_wise = _spatial_attention()
        self.attention_wise = _scale_weights(in_planes, num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(self.channel_wise(x)) + x
        x = self.spatial_wise(torch.mean(x, dim=1, keepdim=True)) + x
        return self.attention_wise(x)


class ScaleChannelAttention(nn.Module):
    """One global weight per scale (softmax over scales), shape (B, num_features, 1, 1)."""

    def __init__(self, in_planes: int, out_planes: int, num_features: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(in_planes, out_planes, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_planes)
        self.fc2 = nn.Conv2d(out_planes, num_features, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.relu(self.bn(self.fc1(self.avgpool(x))))
        return torch.softmax(self.fc2(pooled), dim=1)


ATTENTION_TYPES = {
    'scale_spatial': (ScaleSpatialAttention, 4),
    'scale_channel_spatial': (ScaleChannelSpatialAttention, 4),
    'scale_channel': (ScaleChannelAttention, 2),
}


class ScaleFeatureSelection(nn.Module):
    """3x3 conv on the concatenated scales, attention scores, each scale multiplied by its score."""

    def __init__(self, in_channels: int, inter_channels: int, out_features_num: int = 4,
                 attention_type: str = 'scale_spatial'):
        super().__init__()
        if attention_type not in ATTENTION_TYPES:
            raise ValueError(f'attention_type must be one of {sorted(ATTENTION_TYPES)}, '
                             f'got {attention_type!r}')
        attention_class, reduction = ATTENTION_TYPES[attention_type]
        self.attention_type = attention_type
        self.out_features_num = out_features_num
        self.conv = nn.Conv2d(in_channels, inter_channels, 3, padding=1)
        self.enhanced_attention = attention_class(inter_channels, inter_channels // reduction,
                                                  out_features_num)

    def forward(self, concat_x: torch.Tensor, features: List[torch.Tensor]) -> torch.Tensor:
        if len(features) != self.out_features_num:
            raise ValueError(f'expected {self.out_features_num} scales, got {len(features)}')
        score = self.enhanced_attention(self.conv(concat_x))  # (B, n, H, W) or (B, n, 1, 1)
        return torch.cat([score[:, i:i + 1] * feature for i, feature in enumerate(features)], dim=1)
