"""Shared helpers for the deformable convolution tests (CPU and CUDA)."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

import pytest
import torch

from assets.ops.dcn import (deform_conv, extension_available, extension_error,
                            modulated_deform_conv, use_backend)

BUILD_MESSAGE = ('the dcn extension is not built ({error}); build it with '
                 '`cd assets/ops/dcn && python setup.py build_ext --inplace` '
                 '(or set DBNET_ALLOW_NO_EXTENSION=1 to skip the extension tests)')


def require_extension() -> None:
    """Fail (or skip with DBNET_ALLOW_NO_EXTENSION=1) when the compiled extension is missing."""
    if extension_available():
        return
    message = BUILD_MESSAGE.format(error=extension_error())
    if os.environ.get('DBNET_ALLOW_NO_EXTENSION') == '1':
        pytest.skip(message)
    pytest.fail(message)


@dataclass
class Case:
    """One convolution configuration; ``make`` draws random tensors for it."""
    name: str
    batch: int = 2
    channels: int = 8
    height: int = 7
    width: int = 9
    out_channels: int = 6
    kernel: Tuple[int, int] = (3, 3)
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (1, 1)
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1
    deformable_groups: int = 1
    offset_scale: float = 2.0
    extra: dict = field(default_factory=dict)

    def out_size(self) -> Tuple[int, int]:
        kh, kw = self.kernel
        out_h = (self.height + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        out_w = (self.width + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        return out_h, out_w

    def make(self, dtype=torch.float32, device='cpu', seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        kh, kw = self.kernel
        taps = kh * kw * self.deformable_groups
        out_h, out_w = self.out_size()

        def rand(*shape):
            return torch.randn(*shape, generator=generator, dtype=torch.float64)

        x = rand(self.batch, self.channels, self.height, self.width)
        offset = rand(self.batch, 2 * taps, out_h, out_w) * self.offset_scale
        mask = torch.rand(self.batch, taps, out_h, out_w, generator=generator, dtype=torch.float64)
        weight = rand(self.out_channels, self.channels // self.groups, kh, kw) * 0.3
        bias = rand(self.out_channels)
        return [t.to(dtype=dtype, device=device) for t in (x, offset, mask, weight, bias)]

    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, deformable_groups=self.deformable_groups)


CASES: List[Case] = [
    Case('basic'),
    Case('stride2_dilation2_groups2_dg2_nonsquare', height=11, width=6, stride=(2, 2),
         padding=(2, 2), dilation=(2, 2), groups=2, deformable_groups=2, out_channels=4),
    Case('groups2_dg4', batch=1, height=5, width=5, groups=2, deformable_groups=4),
    Case('rect_kernel_mixed_stride', batch=3, channels=6, height=6, width=10, out_channels=5,
         kernel=(2, 3), stride=(1, 2), padding=(0, 1), dilation=(2, 1), deformable_groups=3),
    Case('far_outside', offset_scale=8.0),
]


def run_op(backend: str, tensors: Sequence[torch.Tensor], case: Case, modulated: bool,
           grad_seed: int = 7) -> List[Optional[torch.Tensor]]:
    """Forward with ``backend``, then gradients of sum(output * G) for a fixed random G.

    Returns [output, grad_input, grad_offset, grad_mask (None for DCNv1), grad_weight, grad_bias].
    """
    x, offset, mask, weight, bias = [t.detach().clone().requires_grad_() for t in tensors]
    with use_backend(backend):
        if modulated:
            out = modulated_deform_conv(x, offset, mask, weight, bias, **case.kwargs())
        else:
            out = deform_conv(x, offset, weight, bias=bias, **case.kwargs())
    generator = torch.Generator().manual_seed(grad_seed)
    probe = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out)
    inputs = [x, offset, mask, weight, bias] if modulated else [x, offset, weight, bias]
    grads = list(torch.autograd.grad((out * probe).sum(), inputs))
    if not modulated:
        grads.insert(2, None)
    return [out.detach()] + grads


NAMES = ['output', 'grad_input', 'grad_offset', 'grad_mask', 'grad_weight', 'grad_bias']


def assert_close_all(got, want, atol: float) -> None:
    for name, a, b in zip(NAMES, got, want):
        if a is None or b is None:
            assert a is None and b is None, f'{name}: one backend returned None'
            continue
        assert a.shape == b.shape, f'{name}: shape {tuple(a.shape)} != {tuple(b.shape)}'
        error = (a.double() - b.double()).abs().max().item()
        assert error <= atol, f'{name}: max abs error {error:.3g} > {atol}'


# Further configurations for the CUDA tests (tests/test_dcn_cuda.py), beside CASES: odd image sizes with
# stride 2 and dilation 2, more groups than deformable groups, and a ResNet-like width (several thread blocks).
EXTRA_CUDA_CASES: List[Case] = [
    Case('odd_7x5_stride2_dilation2', batch=2, channels=6, height=7, width=5, out_channels=4,
         stride=(2, 2), padding=(1, 1), dilation=(2, 2)),
    Case('groups4_dg2', batch=2, channels=16, height=9, width=7, out_channels=8, groups=4,
         deformable_groups=2),
    Case('wide', batch=2, channels=64, height=13, width=21, out_channels=32, offset_scale=3.0),
]


def to_device(tensors: Sequence[Optional[torch.Tensor]], device) -> List[Optional[torch.Tensor]]:
    """Each tensor moved to ``device`` (None stays None)."""
    return [None if t is None else t.to(device) for t in tensors]


def max_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| in float64, on the CPU (any devices and dtypes); 0 for empty tensors."""
    assert got.shape == want.shape, f'shape {tuple(got.shape)} != {tuple(want.shape)}'
    if got.numel() == 0:
        return 0.0
    return (got.detach().cpu().double() - want.detach().cpu().double()).abs().max().item()


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max(1, max |want|): an error relative to the scale of ``want``."""
    if want.numel() == 0:
        return max_error(got, want)
    return max_error(got, want) / max(1.0, want.detach().abs().max().item())


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """cuDNN convolutions and cuBLAS matrix products in full float32 (no TF32), restored afterwards.
    Uses the fp32_precision settings (PyTorch >= 2.9), which must not be mixed with the older allow_tf32."""
    conv = getattr(torch.backends.cudnn, 'conv', None)
    matmul = torch.backends.cuda.matmul
    if conv is not None and hasattr(conv, 'fp32_precision') and hasattr(matmul, 'fp32_precision'):
        saved = (conv.fp32_precision, matmul.fp32_precision)
        conv.fp32_precision = 'ieee'
        matmul.fp32_precision = 'ieee'
        try:
            yield
        finally:
            conv.fp32_precision, matmul.fp32_precision = saved
    else:
        saved = (torch.backends.cudnn.allow_tf32, matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = False
        matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, matmul.allow_tf32 = saved
