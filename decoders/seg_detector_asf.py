"""DBNet++ decoder: SegDetector with adaptive scale fusion before the heads."""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from .feature_attention import ScaleFeatureSelection
from .seg_detector import SegDetector, init_decoder_weights


class SegSpatialScaleDetector(SegDetector):
    """``attention_type``: 'scale_spatial', 'scale_channel_spatial' (the paper's) or 'scale_channel'."""

    def __init__(self, in_channels: Sequence[int] = (64, 128, 256, 512), inner_channels: int = 256,
                 k: float = 10, bias: bool = False, adaptive: bool = False, smooth: bool = False,
                 serial: bool = False, attention_type: str = 'scale_spatial', *,
                 prior_probability: Optional[float] = None):
        super().__init__(in_channels, inner_channels, k, bias, adaptive, smooth, serial,
                         prior_probability=prior_probability)
        self.concat_attention = ScaleFeatureSelection(inner_channels, inner_channels // 4,
                                                      attention_type=attention_type)
        self.concat_attention.apply(init_decoder_weights)

    def fuse(self, scales: List[torch.Tensor]) -> torch.Tensor:
        return self.concat_attention(torch.cat(scales, dim=1), scales)
