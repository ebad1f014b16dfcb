"""Backend selection for deformable convolution.

Order for ``'auto'``: the compiled extension (``_dcn_ext``, reached through the dispatcher operator
``torch.ops.dbnet.modulated_deform_conv``), then torchvision's ``deform_conv2d``, then the pure-PyTorch
formulation.  While tracing with ``torch.jit.trace`` or exporting to ONNX (either exporter) ``'auto'`` uses the
pure-PyTorch formulation, the one that ONNX can express with operators of every opset; inside
``onnx_deform_conv(True)`` (onnx_export.py's ``onnx_deform_conv_format('onnx')``) an ONNX export resolves to
``'onnx'`` instead: one standard ``DeformConv`` node per convolution.  ``torch.compile`` and ``torch.export`` keep the
extension's operator (it has a fake kernel and an autograd formula).

What the functions here read inside a ``torch.compile``d region are plain Python values (the extension is probed
when the package is imported and its capabilities kept as booleans), so that Dynamo traces them without a graph
break.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator, Optional

import torch

LOGGER = logging.getLogger(__name__)
BACKENDS = ('auto', 'extension', 'torchvision', 'pytorch')
BUILD_HINT = ('build it with `cd assets/ops/dcn && python setup.py build_ext --inplace` '
              '(set CUDA_HOME for the CUDA kernels), or `dbnet-build-op` for the installed package')

_requested = 'auto'
_extension = None
_extension_error: Optional[str] = None
_extension_probed = False
_extension_cuda = False  # the extension has CUDA kernels
_extension_cpu_bf16 = False  # the extension has the CPU bfloat16 inference path
_fallback_reported = False
_onnx_deform_conv = False  # an ONNX export writes DeformConv nodes (onnx_export.py) instead of the portable form


def load_extension():
    """Return the compiled module, or None (the import error is kept in ``extension_error()``)."""
    global _extension, _extension_error, _extension_probed, _extension_cuda, _extension_cpu_bf16
    if not _extension_probed:
        _extension_probed = True
        try:
            from . import _dcn_ext
            _extension = _dcn_ext
            _extension_cuda = bool(_dcn_ext.has_cuda())
            _extension_cpu_bf16 = hasattr(_dcn_ext, 'cpu_capability')
        except Exception as error:  # ImportError, or an ABI mismatch surfacing as OSError
            _extension_error = f'{type(error).__name__}: {error}'
    return _extension


def extension_error() -> Optional[str]:
    load_extension()
    return _extension_error


def extension_available() -> bool:
    return load_extension() is not None


def extension_has_cuda() -> bool:
    return load_extension() is not None and _extension_cuda


def extension_has_cpu_bf16() -> bool:
    """Whether the extension has the CPU bfloat16 inference path (built from this version's sources)."""
    return load_extension() is not None and _extension_cpu_bf16


def torchvision_available() -> bool:
    try:
        import torchvision.ops  # noqa: F401
    except Exception:
        return False
    return True


def set_backend(name: str) -> None:
    """Select 'extension', 'torchvision', 'pytorch' or 'auto' (the default) for all later calls."""
    global _requested
    if name not in BACKENDS:
        raise ValueError(f'unknown deformable convolution backend {name!r}; expected one of {BACKENDS}')
    if name == 'extension' and not extension_available():
        raise RuntimeError(f'the dcn extension is not available ({_extension_error}); {BUILD_HINT}')
    if name == 'torchvision' and not torchvision_available():
        raise RuntimeError('torchvision is not importable, so its deform_conv2d backend cannot be used')
    _requested = name


def requested_backend() -> str:
    return _requested


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager: ``with use_backend('pytorch'): ...`` restores the previous choice on exit."""
    previous = _requested
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


@contextlib.contextmanager
def onnx_deform_conv(enabled: bool) -> Iterator[None]:
    """While active, a call recorded by an ONNX export resolves to the 'onnx' backend (a ``DeformConv`` node) when
    ``enabled``, to the portable 'pytorch' formulation otherwise; restored on exit."""
    global _onnx_deform_conv
    previous = _onnx_deform_conv
    _onnx_deform_conv = bool(enabled)
    try:
        yield
    finally:
        _onnx_deform_conv = previous


def _is_tracing() -> bool:
    """Whether the call is being recorded for ONNX: ``torch.jit.trace`` (which the TorchScript ONNX exporter
    uses) or either ONNX exporter. ``torch.compile`` and ``torch.export`` are not tracing in this sense: they keep
    the extension's dispatcher operator."""
    if torch.jit.is_tracing():
        return True
    return bool(torch.onnx.is_in_onnx_export())


def _report_fallback(chosen: str) -> None:
    global _fallback_reported
    if _fallback_reported or torch.compiler.is_compiling():
        return  # while compiling: the eager calls report it (warnings would break the graph)
    _fallback_reported = True
    if _extension is None:
        reason = f'compiled extension not available ({_extension_error})'
    else:
        reason = 'compiled extension was built without CUDA kernels'
    message = (f'assets.ops.dcn: {reason}; using the {chosen} backend, which is slower. '
               f'To get the fast kernels, {BUILD_HINT}.')
    LOGGER.info(message)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def resolve_backend(device: torch.device) -> str:
    """The backend a call on ``device`` will use now."""
    if _requested != 'auto':
        return _requested
    if _is_tracing():
        # the 'onnx' form is written by the TorchScript exporter only (its tracer records the operator)
        return 'onnx' if _onnx_deform_conv and torch.jit.is_tracing() and torch.onnx.is_in_onnx_export() else 'pytorch'
    if load_extension() is not None and (device.type == 'cpu' or (device.type == 'cuda' and _extension_cuda)):
        return 'extension'
    chosen = 'torchvision' if torchvision_available() else 'pytorch'
    _report_fallback(chosen)
    return chosen


def active_backend(device: torch.device | str = 'cpu') -> str:
    """Name of the backend used for tensors on ``device`` under the current selection."""
    return resolve_backend(torch.device(device))


# Probed when the package is imported rather than at the first call: that call may be inside a torch.compile'd
# region, where the import and the pybind calls of the probe would break the graph.
load_extension()
