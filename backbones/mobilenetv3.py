"""MobileNetV3 (torchvision) trunks returning the last feature map at each stride 4, 8, 16, 32.

Registered as ``mobilenet_v3_large_torchvision`` and ``mobilenet_v3_small_torchvision``; the name
``mobilenet_v3_large`` is the original code base's layout (``backbones/mobilenetv3_original.py``),
whose checkpoints do not fit torchvision's module tree.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torchvision
from torch import nn

from .pretrained import Pretrained, load_pretrained

TORCHVISION_URLS = {
    'mobilenet_v3_large': 'https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth',
    'mobilenet_v3_small': 'https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth',
}


def _stage_ends(features: nn.Sequential) -> List[int]:
    """Index of the last module of ``features`` at strides 4, 8, 16 and 32."""
    strides = []
    stride = 1
    for index, module in enumerate(features):
        if index == 0 or getattr(module, '_is_cn', False):  # the stem and each strided block halve
            stride *= 2
        strides.append(stride)
    ends = [max(i for i, s in enumerate(strides) if s == wanted) for wanted in (4, 8, 16, 32)]
    return ends


class MobileNetV3(nn.Module):
    """``features`` is torchvision's, so its weight files load; the classifier is not built."""

    def __init__(self, arch: str = 'mobilenet_v3_large'):
        super().__init__()
        if arch not in TORCHVISION_URLS:
            raise ValueError(f'arch must be one of {sorted(TORCHVISION_URLS)}, got {arch!r}')
        self.features = getattr(torchvision.models, arch)(weights=None).features
        self.stage_ends = _stage_ends(self.features)
        self.out_channels: List[int] = [self.features[i].out_channels for i in self.stage_ends]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outputs = []
        for index, module in enumerate(self.features):
            x = module(x)
            if index in self.stage_ends:
                outputs.append(x)
        return tuple(outputs)


def _build(arch: str, pretrained: Pretrained, allow_download: bool) -> MobileNetV3:
    model = MobileNetV3(arch)
    load_pretrained(model, pretrained, TORCHVISION_URLS[arch], allow_download)
    return model


def mobilenet_v3_large_torchvision(pretrained: Pretrained = False, allow_download: bool = False) -> MobileNetV3:
    """torchvision's MobileNetV3-Large features: c2..c5 with 24, 40, 112, 960 channels.

    pretrained: False, a torchvision weights file, or True for torchvision's cache file
    (downloaded only with ``allow_download``); see ``backbones.pretrained``.
    """
    return _build('mobilenet_v3_large', pretrained, allow_download)


def mobilenet_v3_small_torchvision(pretrained: Pretrained = False, allow_download: bool = False) -> MobileNetV3:
    """torchvision's MobileNetV3-Small features: c2..c5 with 16, 24, 48, 576 channels (see above)."""
    return _build('mobilenet_v3_small', pretrained, allow_download)
