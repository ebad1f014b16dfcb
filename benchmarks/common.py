"""What every benchmark shares: the machine description and a median timer (warm-up first)."""
from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
import warnings
from typing import Callable, Dict, Iterator, List, Optional


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as handle:
            for line in handle:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown CPU'


def machine() -> str:
    """CPU, core count, thread count, GPU if any, and the versions that matter for speed."""
    import cv2
    import numpy as np
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'
    return (f'{cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__} '
            f'({torch.get_num_threads()} threads), {gpu}, Python {platform.python_version()}, '
            f'NumPy {np.__version__}, OpenCV {cv2.__version__}')


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
    """``torch.device(name)``; a clear exit when CUDA is asked for and absent."""
    import torch
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f'--device {name}: no CUDA device is available on this machine')
    return device


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
