"""The compiled kernels as PyTorch dispatcher operators (``torch.ops.dbnet.*``).

Two operators, defined with ``torch.library.custom_op`` when this module is imported:

``dbnet::modulated_deform_conv(Tensor input, Tensor offset, Tensor? mask, Tensor weight, Tensor? bias,
SymInt[] stride, SymInt[] padding, SymInt[] dilation, SymInt groups, SymInt deformable_groups) -> Tensor``
    input (N, C, H, W), offset (N, 2*dg*kh*kw, Ho, Wo), mask (N, dg*kh*kw, Ho, Wo) or None (DCNv1),
    weight (O, C/groups, kh, kw), bias (O,) or None -> output (N, O, Ho, Wo) in the input's dtype.
    stride, padding, dilation: (h, w) pairs. A CPU input dense in channels-last order (and not also
    contiguous) gives a channels-last output; every other output is contiguous.

``dbnet::modulated_deform_conv_backward(Tensor grad_output, Tensor input, Tensor offset, Tensor? mask,
Tensor weight, bool has_bias, ...same ints...) -> (Tensor, Tensor, Tensor, Tensor, Tensor)``
    (grad_input, grad_offset, grad_mask, grad_weight, grad_bias); grad_mask is empty (0 elements) when mask is
    None, grad_bias when ``has_bias`` is false (an operator cannot return None). grad_input has the forward
    output's memory format rule; the other gradients are contiguous.

Both are implemented for the ``cpu`` and ``cuda`` dispatch keys by the same function, which calls the compiled
extension; the extension picks its CPU or CUDA kernels by the tensors' device. Each has a fake kernel
(``register_fake``: shapes, dtypes and strides exactly as the kernels produce them, so ``torch.compile`` and
``torch.export`` trace through without running them), and the forward has an autograd formula
(``register_autograd``) that calls the backward operator. The backward operator itself has no derivative
(double backward raises, as ``once_differentiable`` did).

The operators expect validated arguments (``functions.modulated_deform_conv`` checks them and gives the clear
error messages); called directly with inconsistent shapes they fail with the kernels' ``dcn:`` checks.
Raises RuntimeError when the extension is not built.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import _backend

NAMESPACE = 'dbnet'
FORWARD = f'{NAMESPACE}::modulated_deform_conv'
BACKWARD = f'{NAMESPACE}::modulated_deform_conv_backward'
DEVICE_TYPES = ('cpu', 'cuda')


def _extension():
    ext = _backend.load_extension()
    if ext is None:
        raise RuntimeError(f'the dcn extension is not available ({_backend.extension_error()}); {_backend.BUILD_HINT}')
    return ext


def is_channels_last(tensor: Tensor) -> bool:
    """Whether the CPU kernels treat ``tensor`` as channels-last: 4-D, dense in channels-last order and not also
    contiguous (``is_channels_last`` in src/dcn_cpu.cpp)."""
    return (tensor.dim() == 4 and not tensor.is_contiguous()
            and tensor.is_contiguous(memory_format=torch.channels_last))


def dense(tensor: Tensor) -> Tensor:
    """``tensor`` as the extension takes it: a CPU tensor dense in channels-last order stays so (the CPU kernels
    read channels-last data directly and answer in that format); anything else is made contiguous."""
    if tensor.device.type == 'cpu' and tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last):
        return tensor
    return tensor.contiguous()


def _optional_contiguous(tensor: Optional[Tensor]) -> Optional[Tensor]:
    return None if tensor is None else tensor.contiguous()


def _conv_args(stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], groups: int,
               deformable_groups: int) -> Tuple[int, ...]:
    """The eight integers of the extension's signature (stride, padding, dilation as h, w; groups; dg)."""
    return (stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups, deformable_groups)


def _absent(reference: Tensor) -> Tensor:
    """The placeholder for the gradient of an absent mask or bias: empty, on the reference's device and dtype."""
    return reference.new_empty((0,))


# ---------------------------------------------------------------------------------------------- forward
@torch.library.custom_op(FORWARD, mutates_args=(), device_types=DEVICE_TYPES)
def modulated_deform_conv(input: Tensor, offset: Tensor, mask: Optional[Tensor], weight: Tensor,
                          bias: Optional[Tensor], stride: Sequence[int], padding: Sequence[int],
                          dilation: Sequence[int], groups: int, deformable_groups: int) -> Tensor:
    return _extension().forward(dense(input), weight.contiguous(), _optional_contiguous(bias), offset.contiguous(),
                                _optional_contiguous(mask),
                                *_conv_args(stride, padding, dilation, groups, deformable_groups))


@modulated_deform_conv.register_fake
def _modulated_deform_conv_fake(input, offset, mask, weight, bias, stride, padding, dilation, groups,
                                deformable_groups):
    torch._check(input.dim() == 4 and offset.dim() == 4 and weight.dim() == 4,
                 lambda: 'dcn: input, weight and offset must be 4-D')
    # As forward_cpu / forward_cuda allocate it: spatial size from the offset, channels-last only on the CPU.
    layout = torch.channels_last if input.device.type == 'cpu' and is_channels_last(input) else torch.contiguous_format
    return torch.empty((input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3]), dtype=input.dtype,
                       device=input.device, memory_format=layout)


# ---------------------------------------------------------------------------------------------- backward
@torch.library.custom_op(BACKWARD, mutates_args=(), device_types=DEVICE_TYPES)
def modulated_deform_conv_backward(grad_output: Tensor, input: Tensor, offset: Tensor, mask: Optional[Tensor],
                                   weight: Tensor, has_bias: bool, stride: Sequence[int], padding: Sequence[int],
                                   dilation: Sequence[int], groups: int, deformable_groups: int
                                   ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    input = dense(input)
    grad_input, grad_offset, grad_mask, grad_weight, grad_bias = _extension().backward(
        dense(grad_output), input, weight.contiguous(), offset.contiguous(), _optional_contiguous(mask), has_bias,
        *_conv_args(stride, padding, dilation, groups, deformable_groups))
    return (grad_input, grad_offset, _absent(input) if grad_mask is None else grad_mask, grad_weight,
            _absent(input) if grad_bias is None else grad_bias)


@modulated_deform_conv_backward.register_fake
def _modulated_deform_conv_backward_fake(grad_output, input, offset, mask, weight, has_bias, stride, padding,
                                         dilation, groups, deformable_groups):
    # Each gradient made by the same layout operations as in backward_cpu / backward_cuda, so that the strides
    # agree exactly (also those of size-1 dimensions).
    input = dense(input)
    if input.device.type == 'cpu':
        grad_input = torch.empty_like(input.permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2)
        if not is_channels_last(input):
            grad_input = grad_input.contiguous()
        out_channels, group_in, kernel_h, kernel_w = weight.shape
        grad_weight = weight.new_empty((out_channels, kernel_h, kernel_w, group_in)).permute(0, 3, 1, 2).contiguous()
    else:
        grad_input = torch.empty_like(input)
        grad_weight = weight.new_empty(weight.shape)
    grad_offset = torch.empty_like(offset.contiguous())
    grad_mask = _absent(input) if mask is None else torch.empty_like(mask.contiguous())
    grad_bias = grad_output.new_empty((weight.shape[0],)) if has_bias else _absent(input)
    return grad_input, grad_offset, grad_mask, grad_weight, grad_bias


# ---------------------------------------------------------------------------------------------- autograd
def _setup_context(ctx, inputs, output) -> None:
    input, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups = inputs
    ctx.save_for_backward(input, offset, mask, weight)
    ctx.has_bias = bias is not None
    ctx.conv = (stride, padding, dilation, groups, deformable_groups)


def _backward(ctx, grad_output):
    input, offset, mask, weight = ctx.saved_tensors
    grad_input, grad_offset, grad_mask, grad_weight, grad_bias = modulated_deform_conv_backward(
        grad_output, input, offset, mask, weight, ctx.has_bias, *ctx.conv)
    return (grad_input, grad_offset, None if mask is None else grad_mask, grad_weight,
            grad_bias if ctx.has_bias else None, None, None, None, None, None)


modulated_deform_conv.register_autograd(_backward, setup_context=_setup_context)
