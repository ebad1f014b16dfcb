"""Backend selection for deformable convolution.

Order for ``'auto'``: the compiled extension (``_dcn_ext``), then torchvision's
``deform_conv2d``, then the pure-PyTorch formulation.  While tracing (ONNX export,
``torch.jit.trace``) ``'auto'`` always uses the pure-PyTorch formulation, because neither
the extension nor torchvision's op can be exported.
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
              '(set CUDA_HOME for the CUDA kernels)')

_requested = 'auto'
_extension = None
_extension_error: Optional[str] = None
_extension_probed = False
_fallback_reported = False


def load_extension():
    """Return the compiled module, or None (the import error is kept in ``extension_error()``)."""
    global _extension, _extension_error, _extension_probed
    if not _extension_probed:
        _extension_probed = True
        try:
            from . import _dcn_ext  # type: ignore[attr-defined]
            _extension = _dcn_ext
        except Exception as error:  # ImportError, or an ABI mismatch surfacing as OSError
            _extension_error = f'{type(error).__name__}: {error}'
    return _extension


def extension_error() -> Optional[str]:
    load_extension()
    return _extension_error


def extension_available() -> bool:
    return load_extension() is not None


def extension_has_cuda() -> bool:
    ext = load_extension()
    return ext is not None and bool(ext.has_cuda())


def extension_has_cpu_bf16() -> bool:
    """Whether the extension has the CPU bfloat16 inference path (built from this version's sources)."""
    ext = load_extension()
    return ext is not None and hasattr(ext, 'cpu_capability')


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


def _is_tracing() -> bool:
    if torch.jit.is_tracing():
        return True
    onnx = getattr(torch, 'onnx', None)
    is_exporting = getattr(onnx, 'is_in_onnx_export', None)
    if is_exporting is not None and is_exporting():
        return True
    compiler = getattr(torch, 'compiler', None)
    is_compiling = getattr(compiler, 'is_compiling', None)
    return bool(is_compiling is not None and is_compiling())


def _report_fallback(chosen: str) -> None:
    global _fallback_reported
    if _fallback_reported:
        return
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
        return 'pytorch'
    ext = load_extension()
    if ext is not None and (device.type == 'cpu' or (device.type == 'cuda' and ext.has_cuda())):
        return 'extension'
    chosen = 'torchvision' if torchvision_available() else 'pytorch'
    _report_fallback(chosen)
    return chosen


def active_backend(device: torch.device | str = 'cpu') -> str:
    """Name of the backend used for tensors on ``device`` under the current selection."""
    return resolve_backend(torch.device(device))
