"""Run every benchmark, print its table and write them all to docs/benchmarks.md.

    python -m benchmarks [--only dcn,model,...] [--output docs/benchmarks.md]

Each benchmark is also a script of its own (``python -m benchmarks.bench_<name> --help``).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import inspect
import io
import sys
import time
from typing import List, Optional, Sequence

from benchmarks.common import machine

BENCHMARKS = (
    ('dcn', 'Deformable convolution: project kernel vs torchvision vs F.conv2d'),
    ('model', 'Model forward: deformable DBNets vs their plain twins'),
    ('postprocess', 'Post-processing per image'),
    ('data', 'Training data pipeline and label generation per sample'),
    ('eval', 'Evaluator per image'),
    ('train_step', 'One training iteration on the CPU'),
    ('inference', 'End-to-end inference: sequential and pipelined, PyTorch and onnxruntime'),
)


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)


def run(name: str) -> str:
    import cv2
    import torch
    module = importlib.import_module(f'benchmarks.bench_{name}')
    captured = io.StringIO()
    start = time.perf_counter()
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
            if 'argv' in inspect.signature(module.main).parameters:
                module.main([])
            else:
                module.main()
    finally:  # a benchmark that measures single-threaded work must not slow down the next ones
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
    print(f'[bench] {name} took {time.perf_counter() - start:.0f} s', flush=True)
    return captured.getvalue()


def report_body(output: str) -> str:
    """The caption paragraph just before the first table, the tables and what follows them; all of
    ``output`` when it holds no table. Progress lines printed before the caption are left out."""
    table_start = output.find('\n|')
    if table_start < 0:
        return output.strip()
    caption_start = output.rfind('\n\n', 0, table_start)  # the blank line that ends the progress lines
    return output[max(caption_start, 0):].strip()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--only', default=None, help='comma-separated subset: ' + ','.join(n for n, _ in BENCHMARKS))
    parser.add_argument('--output', default='docs/benchmarks.md')
    args = parser.parse_args(argv)
    chosen = args.only.split(',') if args.only else [name for name, _ in BENCHMARKS]
    unknown = set(chosen) - {name for name, _ in BENCHMARKS}
    if unknown:
        parser.error(f'unknown benchmark(s) {sorted(unknown)}')
    sections: List[str] = [f'# Benchmarks\n\nWritten by `python -m benchmarks` on {datetime.date.today()}. '
                           f'Machine: {machine()}.\n']
    for name, title in BENCHMARKS:
        if name in chosen:
            output = run(name)
            body = report_body(output)
            sections.append(f'## {title}\n\n{body}\n')
            with open(args.output, 'w', encoding='utf-8') as stream:  # after each one: a crash keeps the rest
                stream.write('\n'.join(sections))
    print(f'[bench] tables written to {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
