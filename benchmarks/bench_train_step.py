"""One training iteration on the CPU: forward + loss + backward + optimizer step.

Four modes. The default: deformable ResNet-18 DBNet (adaptive threshold, k = 50), batch 4, 640x640, random targets
of the real shapes, SGD, fp32 and bf16 autocast, channels-last on and off, wall-clock medians after warm-up.

``--demo``: the paper's demo step (experiments/seg_detector/synthetic_resnet18_deform_thre.yaml, `make demo`'s default
until 2026-12-07: batch 8, 256x256 crops, inner_channels 256, Adam), fp32, NCHW and channels-last interleaved round by
round, timed in process CPU seconds on ``--threads`` (default 1) threads, so that the figures hold on a shared machine.
Beside each layout's time it prints the step's floating-point work (``torch.utils.flop_counter``; the deformable layers
counted through their pure-PyTorch formulation, whose products are the extension's), the rate this gives, and, measured
in the same run on the same core, the rate of a large single-precision matrix product (MKL) and of the step's largest
convolution (oneDNN): the step's ceiling. ``--profile N`` adds the N operators that take the most time (torch.profiler,
channels-last, grouped by input shape). ``--isa avx2`` caps every library at AVX2.
Run: ``python -m benchmarks.bench_train_step [--repeats N] [--size 640] [--batch 4]`` or
``python -m benchmarks.bench_train_step --demo [--isa avx2] [--profile 12]``.

``--optimizer``: the plain budget step (`make demo`'s model, channels-last) and its Adam step alone with each of
torch's Adam implementations (single-tensor, torch's CPU default; foreach; fused), interleaved: wall milliseconds on
``--threads`` (default 2) threads and process CPU milliseconds on one, with the time each saves against the first.
``--size``, ``--batch``, ``--inner_channels`` and ``--profile`` do not apply to it.

``--budget``: the step of the 20-minute budget recipes (batch 4, 192x192 crops, Adam, fp32) for the paper's model, the
deformable model at FPN width 128 and the plain ResNet-18 at 128 and 64, interleaved: wall seconds on ``--threads``
(default 2) threads and process CPU seconds on one, with ratios to the paper's model (issue 24; docs/training.md);
the models' order rotates round by round. ``--size``, ``--batch``, ``--inner_channels`` and ``--profile`` do not
apply to it.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from benchmarks.common import (force_isa, interleaved_median_cpu_ms, interleaved_median_ms, machine, median_ms,
                               print_table)
from structure.model import SegDetectorModel

# The paper's demo model and step (experiments/seg_detector/synthetic_resnet18_deform_thre.yaml, `make demo`'s
# default until 2026-12-07).
DEMO_BATCH, DEMO_SIZE, DEMO_INNER_CHANNELS, DEMO_LR, DEMO_WEIGHT_DECAY = 8, 256, 256, 0.001, 0.0001


def training_batch(batch: int, size: int) -> Dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shape = (batch, size, size)
    return {'image': torch.randn(batch, 3, size, size, generator=generator),
            'gt': (torch.rand(batch, 1, size, size, generator=generator) > 0.8).float(),
            'mask': torch.ones(shape),
            'thresh_map': 0.3 + 0.4 * torch.rand(shape, generator=generator),
            'thresh_mask': (torch.rand(shape, generator=generator) > 0.5).float()}


def build_model(inner_channels: int = 256, backbone: str = 'deformable_resnet18') -> SegDetectorModel:
    torch.manual_seed(0)
    return SegDetectorModel(backbone=backbone, decoder='SegDetector',
                            decoder_args={'adaptive': True, 'k': 50, 'in_channels': [64, 128, 256, 512],
                                          'inner_channels': inner_channels}).train()


def step_function(batch: Dict[str, torch.Tensor], channels_last: bool, optimizer_name: str = 'SGD',
                  dtype: str = 'fp32', inner_channels: int = 256,
                  backbone: str = 'deformable_resnet18', optimizer_args: Optional[Dict[str, Any]] = None,
                  step_only: bool = False) -> Callable[[], None]:
    """One training step of a fresh model on ``batch`` (the model and optimizer live in the closure).
    ``optimizer_args``: extra arguments of the optimizer (``{'fused': True}``); ``step_only``: the function runs the
    optimizer step alone, on the gradients of one backward made here."""
    model = build_model(inner_channels, backbone)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        batch = dict(batch, image=batch['image'].contiguous(memory_format=torch.channels_last))
    extra: Dict[str, Any] = dict(optimizer_args or {})
    if optimizer_name == 'Adam':
        optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=DEMO_LR,
                                                            weight_decay=DEMO_WEIGHT_DECAY, **extra)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.007, momentum=0.9, weight_decay=1e-4, **extra)
    autocast = torch.autocast('cpu', dtype=torch.bfloat16) if dtype == 'bf16' else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            loss, _, _ = model(batch, training=True)
        optimizer.zero_grad(set_to_none=True)
        loss.float().backward()
        optimizer.step()
    if step_only:
        step()  # gradients and the optimizer's state exist from here on
        return optimizer.step
    return step


def step_ms(batch: Dict[str, torch.Tensor], dtype: str, channels_last: bool, repeats: int, warmup: int) -> float:
    return median_ms(step_function(batch, channels_last, dtype=dtype), repeats, warmup)


def step_gflop(batch: Dict[str, torch.Tensor], inner_channels: int) -> float:
    """Floating-point work of one training step (forward, loss, backward) in GFLOP, counted by
    ``torch.utils.flop_counter``: products and convolutions only (elementwise work is left out). The deformable
    layers run through their pure-PyTorch formulation here, whose matrix products are the ones the extension
    computes (the bilinear sampling is elementwise and not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    from assets.ops.dcn import use_backend
    model = build_model(inner_channels)
    with use_backend('pytorch'), FlopCounterMode(display=False) as counter:
        loss, _, _ = model(batch, training=True)
        loss.backward()
    return counter.get_total_flops() / 1e9


def peak_rates(repeats: int) -> Dict[str, float]:
    """GFLOP/s of a 2048^3 single-precision matrix product (MKL) and of the demo step's largest convolution
    (3x3, 256 -> 64 channels, 8x256x64x64, oneDNN, channels-last forward) on the current threads."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    x = torch.randn(8, 256, 64, 64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 256, 3, 3).contiguous(memory_format=torch.channels_last)
    ms = interleaved_median_cpu_ms({'matmul': lambda: a @ b,
                                    'conv': lambda: torch.nn.functional.conv2d(x, w, padding=1)}, repeats, warmup=1)
    return {'matmul': 2 * 2048 ** 3 / ms['matmul'] / 1e6,
            'conv': 2 * 8 * 64 * 64 * 64 * 256 * 9 / ms['conv'] / 1e6}


def profile_table(batch: Dict[str, torch.Tensor], inner_channels: int, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile
    step = step_function(batch, True, 'Adam', inner_channels=inner_channels)
    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        step()
    return profiler.key_averages(group_by_input_shape=True).table(
        sort_by='self_cpu_time_total', row_limit=rows, max_name_column_width=36, max_shapes_column_width=70)


def demo_main(args: argparse.Namespace) -> List[Dict[str, str]]:
    torch.set_num_threads(args.threads)
    batch = training_batch(DEMO_BATCH, DEMO_SIZE)
    inner = args.inner_channels
    work = step_gflop(batch, inner)
    ms = interleaved_median_cpu_ms({layout: step_function(batch, layout == 'channels-last', 'Adam',
                                                          inner_channels=inner)
                                    for layout in ('NCHW', 'channels-last')}, args.repeats, args.warmup)
    seconds = {layout: value / 1000 for layout, value in ms.items()}
    rates = peak_rates(3)
    rows = []
    for layout, value in seconds.items():
        rate = work / value
        rows.append({'layout': layout, 'CPU s / step': f'{value:.2f}', 'GFLOP / step': f'{work:.0f}',
                     'GFLOP/s': f'{rate:.1f}', 'share of the matmul rate': f'{rate / rates["matmul"]:.0%}',
                     'floor at the matmul rate, s': f'{work / rates["matmul"]:.2f}'})
        print(rows[-1], flush=True)
    print(f'\nThe paper\'s demo training step: deformable ResNet-18 DBNet, inner_channels {inner}, batch '
          f'{DEMO_BATCH}, {DEMO_SIZE}x{DEMO_SIZE}, Adam, fp32, {args.threads} thread(s), process CPU '
          f'seconds, medians of {args.repeats} interleaved rounds after {args.warmup}. Same core, same run: '
          f'2048^3 sgemm (MKL) {rates["matmul"]:.1f} GFLOP/s, the step\'s largest convolution (oneDNN, 3x3 '
          f'256->64 at 8x64x64) {rates["conv"]:.1f} GFLOP/s. {machine()}\n')
    print_table(rows)
    if args.profile:
        print(f'\nThe {args.profile} operators with the most self CPU time in one channels-last step:\n')
        print('```\n' + profile_table(batch, inner, args.profile) + '\n```')
    return rows


# The 20-minute budget recipes (issue 24): batch 4, 192x192 crops, Adam, fp32. (backbone, FPN width) per model;
# the first is the paper's model of synthetic_resnet18_deform_thre_budget.yaml, the third
# synthetic_resnet18_thre_budget.yaml's.
BUDGET_BATCH, BUDGET_SIZE = 4, 192
BUDGET_MODELS = (('deformable_resnet18', 256), ('deformable_resnet18', 128), ('resnet18', 128), ('resnet18', 64))


def wall_and_cpu_ms(steps: Dict[str, Callable[[], object]], args: argparse.Namespace
                    ) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Median milliseconds of each of ``steps``, interleaved round by round with the order rotating: wall clock on
    ``args.threads`` threads (needs an otherwise idle machine), then process CPU time on one thread (robust to other
    load)."""
    torch.set_num_threads(args.threads)
    wall = interleaved_median_ms(steps, args.repeats, args.warmup, rotate=True)
    torch.set_num_threads(1)
    cpu = interleaved_median_ms(steps, args.repeats, args.warmup, clock=time.process_time, rotate=True)
    return wall, cpu


def budget_main(args: argparse.Namespace) -> List[Dict[str, str]]:
    """The budget step of each model in ``BUDGET_MODELS``, interleaved round by round: wall seconds on
    ``--threads`` threads (what `make demo` runs on; needs an otherwise idle machine) and process CPU seconds on
    one thread (robust to other load), each with its ratio to the paper's model."""
    batch = training_batch(BUDGET_BATCH, BUDGET_SIZE)
    steps: Dict[str, Callable[[], object]] = {}
    for backbone, width in BUDGET_MODELS:
        steps[f'{backbone}, width {width}'] = step_function(batch, False, 'Adam', inner_channels=width,
                                                            backbone=backbone)
    wall, cpu = wall_and_cpu_ms(steps, args)
    first = next(iter(steps))
    rows = []
    for name in steps:
        rows.append({'model': name, f'wall s / step, {args.threads} threads': f'{wall[name] / 1000:.3f}',
                     'ratio (wall)': f'{wall[name] / wall[first]:.2f}',
                     'CPU s / step, 1 thread': f'{cpu[name] / 1000:.3f}',
                     'ratio (CPU)': f'{cpu[name] / cpu[first]:.2f}'})
        print(rows[-1], flush=True)
    print(f'\nThe budget training step: DBNet, batch {BUDGET_BATCH}, {BUDGET_SIZE}x{BUDGET_SIZE}, random targets, '
          f'Adam, fp32, NCHW; medians of {args.repeats} interleaved rounds after {args.warmup}. {machine()}\n')
    print_table(rows)
    return rows


# Adam's three implementations in torch.optim: the single-tensor loop (torch's default on the CPU, what the original
# and every experiment without ``fused`` run), the multi-tensor one (torch's default on CUDA) and the fused kernel.
ADAM_IMPLEMENTATIONS = (('single-tensor (CPU default)', {'foreach': False}), ('foreach', {'foreach': True}),
                        ('fused', {'fused': True}))


def optimizer_main(args: argparse.Namespace) -> List[Dict[str, str]]:
    """The plain budget model's training step (`make demo`: ResNet-18, FPN width 128, batch 4, 192x192, fp32,
    channels-last) and its Adam step alone, with each of torch's Adam implementations, interleaved round by round:
    wall milliseconds on ``--threads`` threads and process CPU milliseconds on one."""
    batch = training_batch(BUDGET_BATCH, BUDGET_SIZE)
    rows = []
    for part, step_only in (('optimizer step', True), ('training step', False)):
        steps: Dict[str, Callable[[], object]] = {
            name: step_function(batch, True, 'Adam', inner_channels=128, backbone='resnet18', optimizer_args=extra,
                                step_only=step_only)
            for name, extra in ADAM_IMPLEMENTATIONS}
        wall, cpu = wall_and_cpu_ms(steps, args)
        first = next(iter(steps))
        for name in steps:
            rows.append({'part': part, 'Adam': name, f'wall ms, {args.threads} threads': f'{wall[name]:.1f}',
                         'wall saved, ms': f'{wall[first] - wall[name]:.1f}', 'CPU ms, 1 thread': f'{cpu[name]:.1f}',
                         'CPU saved, ms': f'{cpu[first] - cpu[name]:.1f}'})
            print(rows[-1], flush=True)
    print(f'\nAdam\'s implementations in the plain budget step (ResNet-18 DBNet, FPN width 128, batch {BUDGET_BATCH}, '
          f'{BUDGET_SIZE}x{BUDGET_SIZE}, random targets, fp32, channels-last); medians of {args.repeats} interleaved '
          f'rounds after {args.warmup}, the order rotating. {machine()}\n')
    print_table(rows)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=None,
                        help='timed rounds (default 5; --demo 3; --budget 5; --optimizer 9)')
    parser.add_argument('--warmup', type=int, default=None,
                        help='warm-up rounds (default 2; --demo, --budget and --optimizer 1)')
    parser.add_argument('--size', type=int, default=640)
    parser.add_argument('--batch', type=int, default=4)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--demo', action='store_true',
                      help="the paper's demo step (synthetic_resnet18_deform_thre.yaml), CPU seconds, with its ceiling")
    mode.add_argument('--budget', action='store_true',
                        help='the 20-minute budget step of four models (issue 24), wall and CPU seconds')
    mode.add_argument('--optimizer', action='store_true',
                      help="Adam's single-tensor, foreach and fused implementations in the plain budget step")
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads: --demo default 1; --budget, --optimizer: the wall-clock column, default 2')
    parser.add_argument('--inner_channels', type=int, default=DEMO_INNER_CHANNELS, help='--demo: decoder width')
    parser.add_argument('--profile', type=int, default=0, metavar='N', help='--demo: print the N costliest ops')
    parser.add_argument('--isa', choices=('avx2', 'avx512'), default=None,
                        help='cap every library at this instruction set (the process restarts itself)')
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads must be at least 1, got {args.threads}')
    force_isa(args.isa, 'benchmarks.bench_train_step', sys.argv[1:] if argv is None else argv)
    if args.budget:
        args.repeats = args.repeats or 5
        args.warmup = 1 if args.warmup is None else args.warmup
        args.threads = 2 if args.threads is None else args.threads
        return budget_main(args)
    if args.optimizer:
        args.repeats = args.repeats or 9
        args.warmup = 1 if args.warmup is None else args.warmup
        args.threads = 2 if args.threads is None else args.threads
        return optimizer_main(args)
    if args.demo:
        args.threads = 1 if args.threads is None else args.threads
        args.repeats = args.repeats or 3
        args.warmup = 1 if args.warmup is None else args.warmup
        return demo_main(args)
    args.repeats = args.repeats or 5
    args.warmup = 2 if args.warmup is None else args.warmup
    batch = training_batch(args.batch, args.size)
    rows = []
    for dtype, channels_last in (('fp32', False), ('fp32', True), ('bf16', False), ('bf16', True)):
        ms = step_ms(batch, dtype, channels_last, args.repeats, args.warmup)
        rows.append({'dtype': dtype, 'channels-last': 'yes' if channels_last else 'no',
                     'ms / iteration': f'{ms:.0f}', 'samples / s': f'{1000 * args.batch / ms:.2f}'})
        print(rows[-1], flush=True)
    print(f'\nTraining iteration, deformable ResNet-18 DBNet, batch {args.batch}, {args.size}x{args.size}, '
          f'SGD, medians of {args.repeats} after {args.warmup} warm-up. {machine()}\n')
    print_table(rows)
    return rows


if __name__ == '__main__':
    main()
