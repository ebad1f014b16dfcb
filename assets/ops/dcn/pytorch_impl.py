"""Deformable convolution written with plain PyTorch operators (gather + matmul).

Exportable to ONNX (Floor, Gather(Elements), MatMul), differentiable by autograd, and
numerically the same op as the kernels: bilinear sampling where each of the four corner
pixels outside the image contributes zero.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def _sampling_grid(offset: torch.Tensor, kernel: Tuple[int, int], stride: Tuple[int, int],
                   padding: Tuple[int, int], dilation: Tuple[int, int], deformable_groups: int):
    """Absolute (y, x) sampling positions, each (N, dg, K, Ho, Wo)."""
    batch, _, out_h, out_w = offset.shape
    kh, kw = kernel
    taps = kh * kw
    # Positions in at least float32: in float16/bfloat16 whole pixel indices above 256 are not representable.
    dtype, device = torch.promote_types(offset.dtype, torch.float32), offset.device
    tap_y = (torch.arange(kh, device=device, dtype=dtype) * dilation[0]).repeat_interleave(kw)
    tap_x = (torch.arange(kw, device=device, dtype=dtype) * dilation[1]).repeat(kh)
    row = torch.arange(out_h, device=device, dtype=dtype) * stride[0] - padding[0]
    col = torch.arange(out_w, device=device, dtype=dtype) * stride[1] - padding[1]
    base_y = tap_y.view(taps, 1, 1) + row.view(1, out_h, 1)
    base_x = tap_x.view(taps, 1, 1) + col.view(1, 1, out_w)
    off = offset.to(dtype).view(batch, deformable_groups, taps, 2, out_h, out_w)
    return base_y + off[:, :, :, 0], base_x + off[:, :, :, 1]


def deform_conv2d_pytorch(input: torch.Tensor, offset: torch.Tensor, mask: Optional[torch.Tensor],
                          weight: torch.Tensor, bias: Optional[torch.Tensor],
                          stride: Tuple[int, int], padding: Tuple[int, int],
                          dilation: Tuple[int, int], groups: int,
                          deformable_groups: int) -> torch.Tensor:
    """Same contract as the other backends; inputs are assumed validated."""
    batch, channels, height, width = input.shape
    out_channels, group_channels, kh, kw = weight.shape
    out_h, out_w = offset.shape[2], offset.shape[3]
    taps = kh * kw
    points = taps * out_h * out_w
    dg_channels = channels // deformable_groups

    y, x = _sampling_grid(offset, (kh, kw), stride, padding, dilation, deformable_groups)
    y_low = torch.floor(y)
    x_low = torch.floor(x)
    frac_y = y - y_low
    frac_x = x - x_low
    flat = input.reshape(batch, deformable_groups, dg_channels, height * width)
    sampled: Optional[torch.Tensor] = None
    corners = ((0, 0, (1 - frac_y) * (1 - frac_x)), (0, 1, (1 - frac_y) * frac_x),
               (1, 0, frac_y * (1 - frac_x)), (1, 1, frac_y * frac_x))
    for dy, dx, corner_weight in corners:
        cy = y_low + dy
        cx = x_low + dx
        inside = (cy >= 0) & (cy <= height - 1) & (cx >= 0) & (cx <= width - 1)
        index = cy.clamp(0, height - 1).long() * width + cx.clamp(0, width - 1).long()
        index = index.reshape(batch, deformable_groups, 1, points)
        values = flat.gather(3, index.expand(batch, deformable_groups, dg_channels, points))
        term = values * (corner_weight * inside).to(input.dtype).reshape(
            batch, deformable_groups, 1, points)
        sampled = term if sampled is None else sampled + term
    assert sampled is not None  # four bilinear corners were added
    if mask is not None:
        sampled = sampled * mask.to(sampled.dtype).reshape(batch, deformable_groups, 1, points)
    columns = sampled.reshape(batch, groups, group_channels * taps, out_h * out_w)
    weight_matrix = weight.reshape(groups, out_channels // groups, group_channels * taps)
    output = torch.matmul(weight_matrix.unsqueeze(0), columns)
    output = output.reshape(batch, out_channels, out_h, out_w)
    if bias is not None:
        output = output + bias.view(1, out_channels, 1, 1)
    return output
