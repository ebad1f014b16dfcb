"""Does torch.compile (Inductor) make the CPU forward of the deformable ResNet-18 DBNet faster?

Eager against ``torch.compile(runner.forward, fullgraph=True)`` (default backend: Inductor; ``fullgraph`` fails
on any graph break, so a number in the compiled column means one graph with the deformable convolutions in it as
``torch.ops.dbnet.modulated_deform_conv`` calls), batch 1 at 736x1280, fp32 and bf16. The model is wrapped as the
project runs it, ``inference.runners.TorchRunner``: bf16 converts weights and input to bfloat16 (the DCN layers
run the extension's bf16 inference path). Random-init weights with random offset convolutions.

Clock: process CPU time (``time.process_time``) of a process held to one thread (``torch.set_num_threads``), so
that other processes on a shared machine slow neither contender; eager and compiled calls alternate in rounds
(``--repeats`` rounds after ``--warmup``) and the table gives the medians, the wall-clock medians beside them,
the compile time (first call) and the largest difference between the compiled and the eager output.
Without bf16 instructions (AVX512-BF16 / AMX) bf16 is emulated and its rows are slow (on the AVX2 machine of
docs/benchmarks.md an eager bf16 forward at 736x1280 took minutes): ``--dtypes auto`` (the default) then times fp32
only. Run: ``python -m benchmarks.bench_compile [--dtypes fp32,bf16] [--size 736x1280] [--repeats 5] [--threads 1]``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from assets.ops.dcn import extension_available
from benchmarks.common import cpu_flags, error_text, machine, print_table
from structure.builder import Builder

MODEL_ARGS = {'backbone': 'deformable_resnet18', 'decoder': 'SegDetector',
              'decoder_args': {'adaptive': True, 'in_channels': [64, 128, 256, 512], 'k': 50}}


def build_runner(precision: str, channels_last: bool):
    """TorchRunner over the deformable ResNet-18 DBNet, seeded random weights; offset convolutions random too
    (as built they are zero, and every sample would fall on a pixel)."""
    from inference.runners import TorchRunner
    torch.manual_seed(0)
    model = Builder('SegDetectorModel', MODEL_ARGS).build().eval()
    for name, parameter in model.named_parameters():
        if 'conv2_offset' in name:
            torch.nn.init.normal_(parameter, std=0.01)
    return TorchRunner(model, 'cpu', precision, channels_last)


def interleaved_medians(functions: Dict[str, Callable[[], torch.Tensor]], repeats: int, warmup: int
                        ) -> Tuple[Dict[str, Tuple[float, float]], Dict[str, torch.Tensor]]:
    """(median process-CPU ms, median wall ms) of each function, called in rounds (each round calls every function
    once, in order) after ``warmup`` rounds; and the last result of each."""
    results: Dict[str, torch.Tensor] = {}
    for _ in range(warmup):
        for name, function in functions.items():
            results[name] = function()
    cpu: Dict[str, List[float]] = {name: [] for name in functions}
    wall: Dict[str, List[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            results[name] = function()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start_wall)
    medians = {name: (1e3 * statistics.median(cpu[name]), 1e3 * statistics.median(wall[name])) for name in functions}
    return medians, results


def measure(precision: str, size: Tuple[int, int], channels_last: bool, repeats: int, warmup: int) -> Dict[str, str]:
    runner = build_runner(precision, channels_last)
    image = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1)).to(runner.dtype)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    compiled_forward = torch.compile(runner.forward, fullgraph=True)

    def eager() -> torch.Tensor:
        with torch.inference_mode():
            return runner.forward(image)

    def compiled() -> torch.Tensor:
        with torch.inference_mode():
            return compiled_forward(image)

    row = {'dtype': precision, 'channels-last': 'yes' if channels_last else 'no'}
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    compiled()
    compile_wall, compile_cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    row['compile s (wall / main-process CPU)'] = f'{compile_wall:.0f} / {compile_cpu:.0f}'
    print(f'{precision}: compiled in {compile_wall:.0f} s, timing {warmup} + {repeats} rounds', flush=True)
    medians, results = interleaved_medians({'eager': eager, 'compiled': compiled}, max(repeats, 1), warmup)
    difference = (results['compiled'].float() - results['eager'].float()).abs().max().item()
    (eager_cpu, eager_wall), (compiled_cpu, compiled_wall) = medians['eager'], medians['compiled']
    row.update({'eager CPU ms': f'{eager_cpu:.0f}', 'compiled CPU ms': f'{compiled_cpu:.0f}',
                'eager / compiled (CPU)': f'{eager_cpu / compiled_cpu:.2f}x',
                'eager wall ms': f'{eager_wall:.0f}', 'compiled wall ms': f'{compiled_wall:.0f}',
                'max abs difference compiled - eager': f'{difference:.1e}'})
    return row


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dtypes', default='auto',
                        help='comma-separated fp32, bf16; auto: fp32, and bf16 where the CPU has bf16 instructions '
                             '(emulated bf16 at 736x1280 takes hours here: ask for it explicitly)')
    parser.add_argument('--size', default='736x1280', help='input HxW')
    parser.add_argument('--channels_last', action='store_true', help='model and input in channels-last order')
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds (eager and compiled once each)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed rounds after the compiling call')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (1: process CPU time is per call)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    height, width = (int(value) for value in args.size.lower().split('x'))
    size = (height, width)
    if not extension_available():
        print('warning: the dcn extension is not built: the deformable convolutions run on torchvision\'s op')
    native_bf16 = any(flag in cpu_flags() for flag in ('avx512_bf16', 'amx_bf16'))
    if args.dtypes == 'auto':
        precisions = ['fp32', 'bf16'] if native_bf16 else ['fp32']
    else:
        precisions = [name.strip() for name in args.dtypes.split(',')]
    rows: List[Dict[str, str]] = []
    for precision in precisions:
        try:
            row = measure(precision, size, args.channels_last, args.repeats, args.warmup)
        except Exception as error:  # noqa: BLE001 - one configuration failing must not lose the other
            row = {'dtype': precision, 'error': error_text(error)}
        rows.append(row)
        print(row, flush=True)
    bf16 = 'native (AVX512-BF16/AMX)' if native_bf16 else 'emulated: no AVX512-BF16/AMX on this CPU'
    print(f'\nDeformable ResNet-18 DBNet forward, batch 1, {size[0]}x{size[1]}, eager against '
          f'torch.compile(fullgraph=True, Inductor), TorchRunner precision (bf16: weights and input in bfloat16). '
          f'Clock: process CPU time (time.process_time) on {args.threads} thread(s), medians of {args.repeats} '
          f'interleaved rounds after {args.warmup}; wall medians beside. '
          f'torch.backends.cpu.get_cpu_capability() = {torch.backends.cpu.get_cpu_capability()}; bf16 {bf16}. '
          f'{machine()}\n')
    print_table(rows)
    return rows


if __name__ == '__main__':
    main(sys.argv[1:])
