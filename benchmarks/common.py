"""What every benchmark shares: the machine description and a median timer (warm-up first)."""
from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
import warnings
from typing import Callable, Dict, Iterator, List, Optional, Sequence


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as handle:
            for line in handle:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown CPU'


def cpu_flags() -> List[str]:
    """The vector instruction sets the CPU reports (/proc/cpuinfo): avx2, avx512f, avx512_bf16, amx_*, ..."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as handle:
            for line in handle:
                if line.startswith('flags'):
                    flags = line.split(':', 1)[1].split()
                    return sorted(f for f in flags if f in ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'avx512_vnni',
                                                            'avx512_fp16', 'amx_bf16', 'amx_tile', 'avx_vnni'))
    except OSError:
        pass
    return []


def instruction_sets() -> str:
    """What each library computes with: torch's ATen kernels (its capability), the DCN extension's row kernels,
    and the caps set on oneDNN and MKL (see ``force_isa``), next to what the CPU supports."""
    import torch
    parts = [f'torch ATen {torch.backends.cpu.get_cpu_capability()}']
    try:
        from assets.ops.dcn import _backend
        ext = _backend.load_extension()
        if ext is not None and hasattr(ext, 'cpu_capability'):
            parts.append(f'DCN kernels {ext.cpu_capability()} (products: {ext.cpu_gemm()})')
    except Exception:  # the machine line must never fail
        pass
    for name in ('ONEDNN_MAX_CPU_ISA', 'MKL_ENABLE_INSTRUCTIONS'):
        if os.environ.get(name):
            parts.append(f'{name}={os.environ[name]}')
    return ', '.join(parts) + f'; CPU flags: {" ".join(cpu_flags()) or "unknown"}'


def machine() -> str:
    """CPU, core count, thread count, instruction sets in use, GPU if any, and the versions that matter."""
    import cv2
    import numpy as np
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'
    return (f'{cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__} '
            f'({torch.get_num_threads()} threads), {gpu}, Python {platform.python_version()}, '
            f'NumPy {np.__version__}, OpenCV {cv2.__version__}; instruction sets: {instruction_sets()}')


# What each library is told for ``force_isa``: torch's ATen kernels and the DCN extension read
# ATEN_CPU_CAPABILITY / DCN_CPU_CAPABILITY, oneDNN ONEDNN_MAX_CPU_ISA, MKL MKL_ENABLE_INSTRUCTIONS.
ISA_ENVIRONMENT = {
    'avx512': {'ATEN_CPU_CAPABILITY': 'avx512', 'DCN_CPU_CAPABILITY': 'avx512', 'ONEDNN_MAX_CPU_ISA': 'AVX512_CORE',
               'MKL_ENABLE_INSTRUCTIONS': 'AVX512'},
    'avx2': {'ATEN_CPU_CAPABILITY': 'avx2', 'DCN_CPU_CAPABILITY': 'avx2', 'ONEDNN_MAX_CPU_ISA': 'AVX2',
             'MKL_ENABLE_INSTRUCTIONS': 'AVX2'},
}


def force_isa(isa: Optional[str], module: str, argv: Sequence[str]) -> None:
    """Run this benchmark again with every library capped at ``isa`` ('avx2' or 'avx512'): the variables must be set
    before torch loads, so the process replaces itself (``os.execve``) unless they are already in force. An AVX-512
    machine can thus show its AVX2 figures too; a cap above what the CPU supports changes nothing."""
    if not isa:
        return
    wanted = ISA_ENVIRONMENT[isa]
    if all(os.environ.get(key) == value for key, value in wanted.items()):
        return
    import sys
    environment = dict(os.environ, **wanted)
    from concern.config import project_module
    os.execve(sys.executable, [sys.executable, '-m', project_module(module), *argv], environment)


def interleaved_median_ms(functions: Dict[str, Callable[[], object]], repeats: int, warmup: int = 2,
                          clock: Callable[[], float] = time.perf_counter, rotate: bool = False) -> Dict[str, float]:
    """Median milliseconds of each function by ``clock`` (wall time by default), timed in rounds (each round calls
    every function once, in order; with ``rotate`` the order starts one later each round), after ``warmup`` rounds:
    load from other processes hits all contenders alike, so their ratios hold even on a shared machine where the
    absolute times drift."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    names = list(functions)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for index in range(repeats):
        shift = index % len(names) if rotate else 0
        for name in names[shift:] + names[:shift]:
            start = clock()
            functions[name]()
            times[name].append(clock() - start)
    return {name: 1000.0 * statistics.median(values) for name, values in times.items()}


def interleaved_median_cpu_ms(functions: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1
                              ) -> Dict[str, float]:
    """``interleaved_median_ms`` timed with this process's CPU time (``time.process_time``): on one thread that is the
    time the function computed, which other processes on a shared machine change far less than the wall time (they
    still share caches and memory bandwidth: the contenders run in interleaved rounds)."""
    return interleaved_median_ms(functions, repeats, warmup, clock=time.process_time)


def median_ms(function: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``function`` in milliseconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def print_table(rows: List[Dict[str, str]]) -> None:
    """Print ``rows`` (dicts of column -> text) as a Markdown table; columns in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    print('| ' + ' | '.join(columns) + ' |')
    print('|' + '---|' * len(columns))
    for row in rows:
        print('| ' + ' | '.join(str(row.get(column, '')) for column in columns) + ' |')


# ---------------------------------------------------------------------------------------------- devices
def resolve_device(name: str):
    """``concern.device.select_device(name)``; a clear exit when the device is not there."""
    from concern.device import select_device
    try:
        return select_device(name)
    except ValueError as error:
        raise SystemExit(f'--device: {error}') from None


def synchronize(device) -> None:
    import torch
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def device_median_ms(function: Callable[[], object], device, repeats: int, warmup: int = 3,
                     min_repeat_ms: float = 2.0, max_inner: int = 20) -> float:
    """Median milliseconds per call of ``function`` on ``device`` after ``warmup`` calls.

    CPU: ``median_ms``. CUDA: each repeat runs the call ``inner`` times back to back between two CUDA events
    (``inner`` chosen once, after warm-up, so that a repeat lasts about ``min_repeat_ms``, at most
    ``max_inner``), so the figure is the GPU time per call, or the launching thread's when that is longer.
    """
    import torch
    device = torch.device(device)
    if device.type != 'cuda':
        return median_ms(function, repeats, warmup)
    for _ in range(warmup):
        function()
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    function()
    torch.cuda.synchronize(device)
    one = (time.perf_counter() - start) * 1e3
    inner = max(1, min(int(max_inner), int(min_repeat_ms / max(one, 1e-3)) + 1))
    times = []
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(inner):
            function()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) / inner)
    return statistics.median(times)


def gpu_description(device) -> str:
    """GPU name, memory, CUDA / cuDNN versions and the float32 math settings in force."""
    import torch
    device = torch.device(device)
    if device.type != 'cuda':
        return f'device {device}'
    props = torch.cuda.get_device_properties(device)
    return (f'{props.name} ({props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor}), '
            f'CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, '
            f'cudnn.benchmark {torch.backends.cudnn.benchmark}, {tf32_description()}')


def tf32_description() -> str:
    import torch
    return (f'TF32: cuDNN convolutions {"on" if torch.backends.cudnn.allow_tf32 else "off"}, '
            f'cuBLAS matmuls {"on" if torch.backends.cuda.matmul.allow_tf32 else "off"}')


@contextlib.contextmanager
def tf32(enabled: Optional[bool]) -> Iterator[None]:
    """TF32 for float32 cuDNN convolutions and cuBLAS matmuls both on (True) or both off (False); None leaves
    PyTorch's setting (by default: on for convolutions, off for matmuls). Restored on exit."""
    import torch
    if enabled is None:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class Budget:
    """A wall-clock budget for a benchmark: what is not started before it runs out is reported as skipped."""

    def __init__(self, seconds: Optional[float]):
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def exhausted(self) -> bool:
        return self.seconds is not None and self.elapsed() > self.seconds


def release_cuda_memory() -> None:
    import gc
    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def error_text(error: BaseException) -> str:
    """One line for a table cell: the exception type and the first line of its message."""
    message = str(error).strip().splitlines()
    return f'{type(error).__name__}: {message[0][:160] if message else ""}'.replace('|', '/')
