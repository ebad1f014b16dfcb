"""What every benchmark shares: the machine description and a median timer (warm-up first)."""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Dict, List


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
