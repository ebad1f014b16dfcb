"""Which device and which CPU instructions: the one device choice of train.py, eval.py, demo.py, the Python API
and the benchmarks, and the one test of whether this CPU runs bfloat16 natively.

torch is imported inside the functions, so that importing this module costs nothing for the ONNX path.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import torch


class DeviceUnavailable(ValueError):
    """A device was asked for that this machine does not have (CUDA without a GPU)."""


def select_device(requested: Optional[Any] = None) -> 'torch.device':
    """The device to run on: ``requested`` ('cpu', 'cuda', 'cuda:N' or a ``torch.device``), or with None CUDA when
    available, else the CPU.

    Raises ``DeviceUnavailable`` (a ``ValueError``) naming the request when CUDA is asked for and absent, and
    ``ValueError`` for a string torch does not read as a device.
    """
    import torch
    if requested is None:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f'device {requested!r}: {error}') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise DeviceUnavailable(f'device {str(requested)!r}: no CUDA device is available on this machine '
                                '(use --device cpu)')
    return device


def cpu_bf16_is_native() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX). Without them bf16 is emulated: on an AVX2-only
    CPU a training step of the synthetic demo took 27 s instead of 3.0 s in fp32 (ResNet-18 DCN, batch 8, 256x256,
    channels-last, AMD EPYC, 2 cores). oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is not
    used: it also accepts AVX-512 CPUs without AVX512-BF16 (Skylake to Ice Lake Xeons), where bf16 is emulated."""
    import torch
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older torch without these helpers
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False
