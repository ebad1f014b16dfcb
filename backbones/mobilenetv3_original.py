"""MobileNetV3-Large laid out as the original DBNet code base builds it (MhLiao/DB, backbones/mobilenetv3.py).

Howard et al., "Searching for MobileNetV3" (ICCV 2019), Table 1, as the original code base writes it.
Its layout differs from torchvision's, so its checkpoints (``totaltext_mobilenet_v3_large_thre.yaml``)
only load into this module:

- ``features`` is a list of 20 modules: ``features.0`` the stem (3x3 stride-2 convolution, BN,
  h-swish), ``features.1`` .. ``features.15`` the 15 bottlenecks of Table 1, ``features.16`` the 1x1
  convolution to 960 channels (BN, h-swish), then ``features.17`` global average pooling,
  ``features.18`` a 1x1 convolution 960 -> 1280 with bias, ``features.19`` h-swish, and ``classifier``
  (dropout, linear 1280 -> 1000). The forward stops after ``features.16``: modules 17-19 and the
  classifier exist only so that state dicts match key for key; they are frozen
  (``requires_grad=False``) because they never receive a gradient (the original wrapped its model
  with ``find_unused_parameters=True`` for the same reason).
- Every bottleneck, even the first one (16 -> 16 channels), has its expansion 1x1 convolution:
  ``conv.0`` 1x1 expansion, ``conv.1`` BN, ``conv.2`` non-linearity, ``conv.3`` depthwise KxK
  (stride s), ``conv.4`` BN, ``conv.5`` squeeze-excite or identity, ``conv.6`` non-linearity,
  ``conv.7`` 1x1 projection, ``conv.8`` BN (no activation). The residual is added when the stride is
  1 and the input and output channels are equal.
- The squeeze-excite block sits between the depthwise BN and the non-linearity (the paper puts it
  after the non-linearity). It is global average pooling, ``fc.0`` linear C -> C/4 without bias,
  ReLU, ``fc.2`` linear C/4 -> C without bias, h-sigmoid, and multiplies its input channel-wise.
- h-swish(x) = x * ReLU6(x + 3) / 6 and h-sigmoid(x) = ReLU6(x + 3) / 6 (paper, section 5.2).

c2..c5 are the outputs of ``features.3``, ``features.6``, ``features.12`` and ``features.16``:
24, 40, 112 and 960 channels at strides 4, 8, 16 and 32 (the original's decoder
``in_channels: [24, 40, 112, 960]``).
"""
from __future__ import annotations

from typing import List, NamedTuple, Tuple

import torch
from torch import nn

from .pretrained import Pretrained, load_pretrained


class BlockSetting(NamedTuple):
    """One row of Table 1: kernel size, expansion channels, output channels, SE, h-swish, stride."""
    kernel: int
    expansion: int
    out_channels: int
    squeeze_excite: bool
    hswish: bool
    stride: int


# Howard et al. 2019, Table 1 (MobileNetV3-Large), rows in order; the original code base's table.
LARGE_SETTINGS: Tuple[BlockSetting, ...] = (
    BlockSetting(3, 16, 16, False, False, 1),
    BlockSetting(3, 64, 24, False, False, 2),
    BlockSetting(3, 72, 24, False, False, 1),
    BlockSetting(5, 72, 40, True, False, 2),
    BlockSetting(5, 120, 40, True, False, 1),
    BlockSetting(5, 120, 40, True, False, 1),
    BlockSetting(3, 240, 80, False, True, 2),
    BlockSetting(3, 200, 80, False, True, 1),
    BlockSetting(3, 184, 80, False, True, 1),
    BlockSetting(3, 184, 80, False, True, 1),
    BlockSetting(3, 480, 112, True, True, 1),
    BlockSetting(3, 672, 112, True, True, 1),
    BlockSetting(5, 672, 160, True, True, 2),
    BlockSetting(5, 960, 160, True, True, 1),
    BlockSetting(5, 960, 160, True, True, 1),
)
STEM_CHANNELS = 16
LAST_CONV_CHANNELS = 960
HEAD_CHANNELS = 1280
# Indices of ``features`` whose outputs are c2, c3, c4, c5 (the last module at each stride 4..32).
FEATURE_INDICES = (3, 6, 12, 16)


class SqueezeExcite(nn.Module):
    """Channel attention of the original's MobileNetV3: ``x * h_sigmoid(W2 relu(W1 mean_hw(x)))``.

    ``fc.0``: Linear(channels, channels // reduction, bias=False); ``fc.2``: Linear(channels //
    reduction, channels, bias=False). Input and output (B, C, H, W).
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Hardsigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc(self.pool(x).flatten(1))
        return x * scale[:, :, None, None]


class Bottleneck(nn.Module):
    """Inverted residual block: 1x1 expansion, KxK depthwise, [SE], 1x1 linear projection.

    ``conv`` holds nine modules (indices are state-dict keys): 0 conv 1x1, 1 BN, 2 ReLU or h-swish,
    3 depthwise conv KxK with stride ``stride`` and padding (K-1)/2, 4 BN, 5 SqueezeExcite or
    Identity, 6 ReLU or h-swish, 7 conv 1x1, 8 BN. Output (B, out_channels, H/stride, W/stride);
    the input is added when ``stride == 1 and in_channels == out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int,
                 squeeze_excite: bool = False, hswish: bool = False):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f'stride must be 1 or 2, got {stride}')
        if kernel not in (3, 5):
            raise ValueError(f'kernel must be 3 or 5, got {kernel}')
        activation = nn.Hardswish if hswish else nn.ReLU
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, expansion, 1, bias=False),
            nn.BatchNorm2d(expansion),
            activation(),
            nn.Conv2d(expansion, expansion, kernel, stride, (kernel - 1) // 2, groups=expansion, bias=False),
            nn.BatchNorm2d(expansion),
            SqueezeExcite(expansion) if squeeze_excite else nn.Identity(),
            activation(),
            nn.Conv2d(expansion, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


def _conv_bn_hswish(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.Hardswish())


class MobileNetV3Large(nn.Module):
    """MobileNetV3-Large in the original DBNet code base's layout (see the module docstring).

    Input (B, 3, H, W) with H, W multiples of 32; ``forward`` returns (c2, c3, c4, c5) with
    ``out_channels`` = [24, 40, 112, 960] channels at strides 4, 8, 16, 32.
    Initialisation as the original: convolutions Kaiming-normal (fan_out) with zero bias, BN weight 1
    and bias 0, linear layers normal(0, 0.01) with zero bias.
    """

    def __init__(self):
        super().__init__()
        features: List[nn.Module] = [_conv_bn_hswish(3, STEM_CHANNELS, 3, 2)]
        channels = STEM_CHANNELS
        for setting in LARGE_SETTINGS:
            features.append(Bottleneck(channels, setting.out_channels, setting.kernel, setting.stride,
                                       setting.expansion, setting.squeeze_excite, setting.hswish))
            channels = setting.out_channels
        features.append(_conv_bn_hswish(channels, LAST_CONV_CHANNELS, 1, 1))
        # ImageNet head: never run here, kept for the state-dict layout (features.17-19, classifier).
        features.extend([nn.AdaptiveAvgPool2d(1), nn.Conv2d(LAST_CONV_CHANNELS, HEAD_CHANNELS, 1),
                         nn.Hardswish()])
        self.features = nn.ModuleList(features)
        self.classifier = nn.Sequential(nn.Dropout(p=0.8), nn.Linear(HEAD_CHANNELS, 1000))
        # features.i (1 <= i <= 15) is the bottleneck of row i - 1; features.16 the last 1x1 conv.
        self.out_channels: List[int] = [LARGE_SETTINGS[i - 1].out_channels for i in FEATURE_INDICES[:3]]
        self.out_channels.append(LAST_CONV_CHANNELS)
        self._initialize()
        for module in (*self.features[FEATURE_INDICES[-1] + 1:], self.classifier):
            module.requires_grad_(False)

    def _initialize(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out')
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outputs = []
        for index in range(FEATURE_INDICES[-1] + 1):
            x = self.features[index](x)
            if index in FEATURE_INDICES:
                outputs.append(x)
        return tuple(outputs)


def mobilenet_v3_large(pretrained: Pretrained = False, allow_download: bool = False) -> MobileNetV3Large:
    """The original code base's ``mobilenet_v3_large`` (ImageNet head kept, unused, for its keys).

    pretrained: False (random init, as the original's default) or the path of a weights file in this
        layout (keys ``features.*`` and ``classifier.*``, all of them; plain or under 'state_dict' /
        'model'). ``True`` is an error: the original read ``mobilenetv3_large.pth.tar`` from the
        working directory and no download address is known, so give the file's path.
    allow_download: accepted for a uniform factory signature; nothing is ever downloaded.
    Raises FileNotFoundError for a missing file and ValueError listing missing/unexpected keys and
    shape mismatches for a file of another layout.
    """
    if pretrained is True:
        raise ValueError('mobilenet_v3_large (the original layout) has no known download address for '
                         'pretrained=True; pass the path of a weights file in its layout '
                         '(the original used mobilenetv3_large.pth.tar), e.g. '
                         '`backbone_args: {pretrained: /path/to/mobilenetv3_large.pth.tar}`, or use '
                         'mobilenet_v3_large_torchvision for torchvision weights')
    model = MobileNetV3Large()
    load_pretrained(model, pretrained, url='', allow_download=False)  # url is only read for True
    return model
