"""nn.Module wrappers. Parameter names/shapes follow the original code base so its checkpoints load."""
from __future__ import annotations

import math
from typing import Tuple, Union

import torch
from torch import nn

from .functions import _pair, deform_conv, modulated_deform_conv

IntPair = Union[int, Tuple[int, int]]


class _DeformConvBase(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1,
                 deformable_groups: int = 1, bias: bool = False):
        super().__init__()
        if in_channels % groups != 0 or out_channels % groups != 0:
            raise ValueError(f'in_channels ({in_channels}) and out_channels ({out_channels}) must '
                             f'be divisible by groups ({groups})')
        if in_channels % deformable_groups != 0:
            raise ValueError(f'in_channels ({in_channels}) must be divisible by deformable_groups '
                             f'({deformable_groups})')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, 'kernel_size')
        self.stride = _pair(stride, 'stride')
        self.padding = _pair(padding, 'padding')
        self.dilation = _pair(dilation, 'dilation')
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, padding={self.padding}, dilation={self.dilation}, '
                f'groups={self.groups}, deformable_groups={self.deformable_groups}, '
                f'bias={self.bias is not None}')

    @property
    def offset_channels(self) -> int:
        return 2 * self.deformable_groups * self.kernel_size[0] * self.kernel_size[1]


class DeformConv(_DeformConvBase):
    """DCNv1 layer: ``forward(x, offset)``."""

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return deform_conv(x, offset, self.weight, self.stride, self.padding, self.dilation,
                           self.groups, self.deformable_groups, bias=self.bias)


class ModulatedDeformConv(_DeformConvBase):
    """DCNv2 layer: ``forward(x, offset, mask)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1,
                 deformable_groups: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         deformable_groups, bias)

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return modulated_deform_conv(x, offset, mask, self.weight, self.bias, self.stride,
                                     self.padding, self.dilation, self.groups,
                                     self.deformable_groups)


class DeformConvPack(DeformConv):
    """DCNv1 layer that predicts its own offsets with a zero-initialised convolution
    (``conv_offset``), so it starts out as a plain convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1,
                 deformable_groups: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         deformable_groups, bias)
        self.conv_offset = nn.Conv2d(in_channels, self.offset_channels, self.kernel_size,
                                     stride=self.stride, padding=self.padding,
                                     dilation=self.dilation, bias=True)
        nn.init.zeros_(self.conv_offset.weight)
        assert self.conv_offset.bias is not None  # built with bias=True just above
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, self.conv_offset(x))


class ModulatedDeformConvPack(ModulatedDeformConv):
    """DCNv2 layer with its own zero-initialised ``conv_offset_mask`` convolution predicting
    offsets and (through a sigmoid) the mask; at initialisation the mask is 0.5 everywhere."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1,
                 deformable_groups: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         deformable_groups, bias)
        self.conv_offset_mask = nn.Conv2d(in_channels, self.offset_channels * 3 // 2,
                                          self.kernel_size, stride=self.stride,
                                          padding=self.padding, dilation=self.dilation, bias=True)
        nn.init.zeros_(self.conv_offset_mask.weight)
        assert self.conv_offset_mask.bias is not None  # built with bias=True just above
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        offset_y_part, offset_x_part, mask_logits = torch.chunk(self.conv_offset_mask(x), 3, dim=1)
        offset = torch.cat((offset_y_part, offset_x_part), dim=1)
        return super().forward(x, offset, torch.sigmoid(mask_logits))
