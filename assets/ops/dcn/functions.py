"""Functional deformable convolution: input checks, autocast, backend dispatch.

The extension's kernels are reached through the dispatcher operator ``torch.ops.dbnet.modulated_deform_conv``
(custom_ops.py: fake kernel and autograd formula), so ``torch.compile`` and ``torch.export`` see one operator
per deformable convolution.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

from . import _backend, custom_ops
from .onnx_export import deform_conv_onnx
from .pytorch_impl import deform_conv2d_pytorch

IntPair = Union[int, Sequence[int]]


def _pair(value: IntPair, name: str) -> Tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    items = [int(v) for v in value]
    if len(items) != 2:
        raise ValueError(f'{name} must be an int or a pair of ints, got {value!r}')
    return (items[0], items[1])


def _check_tensor(tensor: torch.Tensor, name: str, reference: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(tensor).__name__}')
    if tensor.device != reference.device:
        raise ValueError(f'{name} is on {tensor.device} but input is on {reference.device}; '
                         'all tensors must be on the same device')
    if tensor.dtype != reference.dtype and not (
            name in ('offset', 'mask') and reference.device.type == 'cpu' and reference.dtype == torch.bfloat16
            and tensor.dtype == torch.float32):
        raise TypeError(f'{name} has dtype {tensor.dtype} but input has dtype {reference.dtype}; '
                        'all tensors must have the same dtype (on the CPU a bfloat16 input may take float32 offset '
                        'and mask)')


def _validate(input, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups):
    """Check shapes, devices and dtypes; return the output spatial size."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f'input must be a torch.Tensor, got {type(input).__name__}')
    if not input.is_floating_point():
        raise TypeError(f'input must be a floating point tensor, got dtype {input.dtype}')
    for tensor, name in ((offset, 'offset'), (weight, 'weight'), (mask, 'mask'), (bias, 'bias')):
        if tensor is not None:
            _check_tensor(tensor, name, input)
    for tensor, name in ((input, 'input'), (offset, 'offset'), (weight, 'weight'), (mask, 'mask')):
        if tensor is not None and tensor.dim() != 4:
            raise ValueError(f'{name} must be 4-D, got shape {tuple(tensor.shape)}')
    if groups < 1 or deformable_groups < 1:
        raise ValueError(f'groups and deformable_groups must be >= 1, got {groups} and {deformable_groups}')
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f'expected stride >= 1, dilation >= 1, padding >= 0; got stride={stride}, '
                         f'padding={padding}, dilation={dilation}')
    batch, channels, height, width = input.shape
    out_channels, group_channels, kh, kw = weight.shape
    if channels % groups != 0:
        raise ValueError(f'input channels ({channels}) must be divisible by groups ({groups})')
    if channels % deformable_groups != 0:
        raise ValueError(f'input channels ({channels}) must be divisible by deformable_groups '
                         f'({deformable_groups})')
    if out_channels % groups != 0:
        raise ValueError(f'output channels ({out_channels}) must be divisible by groups ({groups})')
    if group_channels * groups != channels:
        raise ValueError(f'weight must have shape (out, in/groups, kh, kw) = ({out_channels}, '
                         f'{channels // groups}, {kh}, {kw}), got {tuple(weight.shape)} '
                         f'(input has {channels} channels, groups={groups})')
    out_h = (height + 2 * padding[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    out_w = (width + 2 * padding[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f'input of size {height}x{width} is too small for kernel {kh}x{kw} with '
                         f'padding={padding}, dilation={dilation}, stride={stride}')
    taps = deformable_groups * kh * kw
    expected = (batch, 2 * taps, out_h, out_w)
    if tuple(offset.shape) != expected:
        raise ValueError(f'offset must have shape (N, 2*deformable_groups*kh*kw, Ho, Wo) = {expected}, '
                         f'got {tuple(offset.shape)}')
    if mask is not None and tuple(mask.shape) != (batch, taps, out_h, out_w):
        raise ValueError(f'mask must have shape (N, deformable_groups*kh*kw, Ho, Wo) = '
                         f'{(batch, taps, out_h, out_w)}, got {tuple(mask.shape)}')
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f'bias must have shape ({out_channels},), got {tuple(bias.shape)}')
    return out_h, out_w


def _needs_grad(tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _bf16_cpu_inference(tensors) -> bool:
    """Whether a call under CPU autocast can take the extension's bfloat16 path: autocast asks for bfloat16, no
    gradient is wanted, and the extension (with that path) is what the backend resolves to."""
    input = tensors[0]
    if (input.device.type != 'cpu' or torch.get_autocast_dtype('cpu') != torch.bfloat16
            or _needs_grad(tensors) or torch.jit.is_tracing()):
        return False
    return _backend.extension_has_cpu_bf16() and _backend.resolve_backend(input.device) == 'extension'


def _empty_output(input, offset, mask, weight, bias, out_shape):
    """Output of a zero-size batch, still connected to the graph so backward yields zeros."""
    output = input.new_zeros(out_shape)
    anchors = [t for t in (input, offset, mask, weight, bias) if t is not None and t.requires_grad]
    for tensor in anchors:
        output = output + tensor.sum() * 0
    return output


def _deform_conv_impl(input, offset, mask, weight, bias, stride, padding, dilation, groups,
                      deformable_groups):
    device_type = input.device.type
    if device_type in ('cpu', 'cuda') and torch.is_autocast_enabled(device_type):
        tensors = (input, offset, mask, weight, bias)
        with torch.autocast(device_type, enabled=False):
            if _bf16_cpu_inference(tensors):
                # The extension's bfloat16 CPU path: image, columns, weight and output in bfloat16 like the
                # convolutions around it, sampling positions and bilinear weights in float32.
                return _deform_conv_impl(input.to(torch.bfloat16), offset.float(),
                                         None if mask is None else mask.float(), weight.to(torch.bfloat16),
                                         None if bias is None else bias.to(torch.bfloat16),
                                         stride, padding, dilation, groups, deformable_groups)
            # As torchvision does for its op: otherwise run in float32 (sampling positions and the bilinear
            # weights need the precision).
            return _deform_conv_impl(*(None if t is None else t.float() for t in tensors),
                                     stride, padding, dilation, groups, deformable_groups)
    stride = _pair(stride, 'stride')
    padding = _pair(padding, 'padding')
    dilation = _pair(dilation, 'dilation')
    groups = int(groups)
    deformable_groups = int(deformable_groups)
    out_h, out_w = _validate(input, offset, mask, weight, bias, stride, padding, dilation, groups,
                             deformable_groups)
    if input.shape[0] == 0:
        return _empty_output(input, offset, mask, weight, bias,
                             (0, weight.shape[0], out_h, out_w))
    input = custom_ops.dense(input)
    offset = offset.contiguous()
    weight = weight.contiguous()
    mask = mask.contiguous() if mask is not None else None
    bias = bias.contiguous() if bias is not None else None

    backend = _backend.resolve_backend(input.device)
    if backend == 'extension':
        if not _backend.extension_available():
            raise RuntimeError(f'the dcn extension is not available; {_backend.BUILD_HINT}')
        if input.device.type == 'cuda' and not _backend.extension_has_cuda():
            raise RuntimeError('the dcn extension was built without CUDA kernels; rebuild it with '
                               'CUDA_HOME set, or select the torchvision backend')
        if input.device.type not in ('cpu', 'cuda'):
            raise RuntimeError(f'the dcn extension supports cpu and cuda tensors, got {input.device}')
        if input.device.type == 'cpu' and input.dtype not in (torch.float32, torch.float64):
            if input.dtype != torch.bfloat16 or _needs_grad((input, offset, mask, weight, bias)):
                raise TypeError('the dcn extension supports float32 and float64 on the CPU, and bfloat16 for '
                                f'inference (no gradient), got {input.dtype}')
            offset = offset.float()
            mask = None if mask is None else mask.float()
        # One dispatcher operator for both devices (the extension picks its CPU or CUDA kernels); its fake kernel
        # and autograd formula are in custom_ops.py.
        return torch.ops.dbnet.modulated_deform_conv.default(input, offset, mask, weight, bias, stride, padding,
                                                             dilation, groups, deformable_groups)
    if backend == 'torchvision':
        from torchvision.ops import deform_conv2d
        return deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding,
                             dilation=dilation, mask=mask)
    if backend == 'onnx':
        return deform_conv_onnx(input, offset, mask, weight, bias, stride, padding, dilation, groups,
                                deformable_groups)
    return deform_conv2d_pytorch(input, offset, mask, weight, bias, stride, padding, dilation,
                                 groups, deformable_groups)


def deform_conv(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1,
                deformable_groups: int = 1, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Deformable convolution (DCNv1).

    offset: (N, 2*deformable_groups*kh*kw, Ho, Wo); channels (2k, 2k+1) hold (dy, dx) of kernel
    tap k (row-major over kh x kw) within each deformable group.
    """
    return _deform_conv_impl(input, offset, None, weight, bias, stride, padding, dilation, groups,
                             deformable_groups)


def modulated_deform_conv(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                          weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                          stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
                          groups: int = 1, deformable_groups: int = 1) -> torch.Tensor:
    """Modulated deformable convolution (DCNv2): each sample is scaled by ``mask``
    (N, deformable_groups*kh*kw, Ho, Wo), usually a sigmoid output."""
    if mask is None:
        raise ValueError('modulated_deform_conv needs a mask; use deform_conv for DCNv1')
    return _deform_conv_impl(input, offset, mask, weight, bias, stride, padding, dilation, groups,
                             deformable_groups)
