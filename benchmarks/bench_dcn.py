"""Deformable convolution: the project's extension vs torchvision vs F.conv2d, on the CPU or a GPU.

Shapes: the three DCN stages of ResNet18 on a 736x1280 input, 3x3, stride 1, padding 1. Without
``--device``: the CPU table of the README (batch 1, fp32, default thread count): the extension (with each choice of
library for its products: ``auto``, ``onednn``, ``blas``), F.conv2d and torchvision's op, NCHW and channels-last,
timed in interleaved rounds; ``--isa avx2`` caps every library at AVX2 (to show an AVX-512 machine's AVX2 figures).
With ``--device cuda``: the extension's CUDA kernels vs torchvision's CUDA op vs cuDNN (F.conv2d, cudnn.benchmark
on), batches 1 and 16, fp32 (TF32 off for both cuBLAS and cuDNN), tf32 (on for both), fp16 and bf16, timed with CUDA
events; ``--device cpu`` runs that table's code on the CPU (fp32, batch 1; with ``--shrink`` a quick check).
Prints a Markdown table of medians (after warm-up) and returns the rows.
Run: ``python -m benchmarks.bench_dcn [--isa avx2|avx512] [--device cuda [--quick]]`` (needs the built extension).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from benchmarks.common import (ISA_ENVIRONMENT, Budget, device_median_ms, error_text, force_isa, gpu_description,
                               interleaved_median_ms, machine, release_cuda_memory, resolve_device, tf32)
from assets.ops.dcn import (extension_available, extension_error, extension_has_cuda, modulated_deform_conv,
                            use_backend)
from assets.ops.dcn._backend import load_extension

SHAPES: Tuple[Tuple[int, int, int], ...] = ((128, 92, 160), (256, 46, 80), (512, 23, 40))


def make_case(channels: int, height: int, width: int, seed: int = 0, batch: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=generator)
    weight = torch.randn(channels, channels, 3, 3, generator=generator) * 0.05
    bias = torch.randn(channels, generator=generator)
    offset = torch.randn(batch, 18, height, width, generator=generator) * 2.0
    mask = torch.rand(batch, 9, height, width, generator=generator)
    return x, offset, mask, weight, bias


DTYPES = {'fp32': torch.float32, 'tf32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def device_times(backend: Optional[str], tensors, measure: Callable[[Callable[[], object]], float]
                 ) -> Tuple[float, float]:
    """(forward ms, backward ms) of the extension / torchvision (``backend``) or F.conv2d (None)."""
    x, offset, mask, weight, bias = [t.detach().clone().requires_grad_() for t in tensors]
    inputs: Tuple[torch.Tensor, ...]
    selection: Callable[[], ContextManager[Any]]
    if backend is None:
        def op():
            return F.conv2d(x, weight, bias, 1, 1)
        inputs = (x, weight, bias)
        selection = contextlib.nullcontext
    else:
        def op():
            return modulated_deform_conv(x, offset, mask, weight, bias, 1, 1, 1, 1, 1)
        inputs = (x, offset, mask, weight, bias)
        selection = functools.partial(use_backend, backend)

    def forward():
        with torch.no_grad(), selection():
            return op()

    with selection():
        grad = torch.randn_like(op())

    def backward():
        with selection():
            y = op()
        torch.autograd.grad(y, inputs, grad)

    forward_ms = measure(forward)
    return forward_ms, measure(backward) - forward_ms  # (forward + backward) - forward


def device_main(args: argparse.Namespace) -> List[Dict[str, object]]:
    device = resolve_device(args.device)
    cuda = device.type == 'cuda'
    quick = args.quick
    default_dtypes = ('fp32,fp16' if quick else 'fp32,tf32,fp16,bf16') if cuda else 'fp32'
    dtypes = [name.strip() for name in (args.dtypes or default_dtypes).split(',') if name.strip()]
    unknown = [name for name in dtypes if name not in DTYPES]
    if unknown:
        raise SystemExit(f'--dtypes: unknown {unknown}; expected some of {list(DTYPES)}')
    if not cuda and any(name != 'fp32' for name in dtypes):
        raise SystemExit('--dtypes: the CPU kernels take fp32 only (tf32, fp16 and bf16 are for --device cuda)')
    batches = [int(b) for b in (args.batches or ('1,16' if cuda else '1')).split(',')]
    warmup = args.warmup if args.warmup is not None else (2 if quick else 3)
    repeats = args.repeats if args.repeats is not None else (5 if quick else 10)
    budget = Budget(args.time_budget if args.time_budget is not None else (40.0 if quick and cuda else None))
    if not extension_available():
        print(f'warning: the dcn extension is not built ({extension_error()}): no extension column')
    elif cuda and not extension_has_cuda():
        print('warning: the dcn extension was built without CUDA kernels: no extension column '
              '(tools/build_op.sh full, with nvcc and a CUDA build of torch)')
    has_extension = extension_available() and (not cuda or extension_has_cuda())
    if cuda:
        torch.backends.cudnn.benchmark = True

    def measure(function):
        return device_median_ms(function, device, repeats, warmup)

    rows: List[Dict[str, Any]] = []  # figures (float ms), labels and sizes, read back by key for the table
    skipped = []
    for dtype_name in dtypes:
        for batch in batches:
            for channels, height, width in SHAPES:
                height, width = max(1, height // args.shrink), max(1, width // args.shrink)
                label = f'{dtype_name}, batch {batch}, {channels}, {height}x{width}'
                if budget.exhausted():
                    skipped.append(label)
                    continue
                tensors = [t.to(device, DTYPES[dtype_name])
                           for t in make_case(channels, height, width, batch=batch)]
                row: Dict[str, Any] = {'dtype': dtype_name, 'batch': batch, 'channels': channels,
                                       'height': height, 'width': width}
                with tf32({'fp32': False, 'tf32': True}.get(dtype_name) if cuda else None):
                    for key, backend in (('ext', 'extension'), ('tv', 'torchvision'), ('conv', None)):
                        if key == 'ext' and not has_extension:
                            continue
                        try:
                            row[f'{key}_forward_ms'], row[f'{key}_backward_ms'] = device_times(backend, tensors,
                                                                                             measure)
                        except (RuntimeError, NotImplementedError, TypeError) as error:  # e.g. no bf16 kernel
                            row[f'{key}_error'] = error_text(error)
                            if cuda:
                                torch.cuda.synchronize(device)
                rows.append(row)
                print({k: (f'{v:.3f}' if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
                del tensors
                release_cuda_memory()
    print()
    print(f'{machine()}')
    print(f'device {device}: {gpu_description(device)}' if cuda else f'device {device}')
    print(f'3x3, stride 1, padding 1, median of {repeats} after {warmup} warm-up runs'
          + (' (CUDA events; a repeat = the call back to back for >= 2 ms)' if cuda else '')
          + '; backward = (forward+backward) - forward'
          + ('; fp32: TF32 off for cuBLAS and cuDNN, tf32: on for both, fp16 / bf16: all tensors in that dtype'
             if cuda else ''))
    print('issue 17 targets (GPU): forward extension / conv2d <= 1.5x, torchvision / extension >= 3x\n')

    def cell(value: Optional[float], digits: int = 3) -> str:
        return '-' if value is None else f'{value:.{digits}f}'

    def ratio(numerator: Optional[float], denominator: Optional[float], digits: int) -> str:
        if numerator is None or denominator is None or denominator <= 0:
            return '-'
        return f'{numerator / denominator:.{digits}f}x'

    print('| dtype | batch | C, HxW | pass | extension ms | torchvision ms | F.conv2d ms | ext / conv2d | '
          'torchvision / ext |')
    print('|---|---|---|---|---|---|---|---|---|')
    for row in rows:
        shape = f"{row['channels']}, {row['height']}x{row['width']}"
        for name in ('forward', 'backward'):
            ext, tv, conv = (row.get(f'ext_{name}_ms'), row.get(f'tv_{name}_ms'), row.get(f'conv_{name}_ms'))
            print(f"| {row['dtype']} | {row['batch']} | {shape} | {name} | {cell(ext)} | {cell(tv)} | {cell(conv)} | "
                  f'{ratio(ext, conv, 2)} | {ratio(tv, ext, 1)} |')
    errors = sorted({f"{key[:-6]}: {value}" for row in rows for key, value in row.items() if key.endswith('_error')})
    for line in errors:
        print(f'\nnot measured: {line}')
    if skipped:
        print(f'\nskipped (time budget of {budget.seconds:.0f} s spent): ' + '; '.join(skipped))
    return rows


def cpu_contenders(tensors, channels_last: bool, torchvision: bool, products: Sequence[str]
                   ) -> Dict[str, Callable[[], object]]:
    """The timed calls of one shape on the CPU: for each contender a forward (no grad) and a forward + backward."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x, offset, mask, weight, bias = [t.detach().clone() for t in tensors]
    x = x.contiguous(memory_format=memory_format)
    leaves = [t.requires_grad_() for t in (x, offset, mask, weight, bias)]
    ext = load_extension()
    with torch.no_grad():
        grad = torch.randn_like(F.conv2d(x, weight, bias, 1, 1)).contiguous(memory_format=memory_format)
    layout = 'channels-last' if channels_last else 'NCHW'
    functions: Dict[str, Callable[[], object]] = {}

    def add(name: str, op: Callable[[], torch.Tensor], inputs) -> None:
        def forward():
            with torch.no_grad():
                return op()

        def forward_backward():
            return torch.autograd.grad(op(), inputs, grad)
        functions[f'{name}|{layout}|forward'] = forward
        functions[f'{name}|{layout}|forward+backward'] = forward_backward

    for product in products:
        def extension_op(product=product):
            ext.set_cpu_gemm(product)
            with use_backend('extension'):
                return modulated_deform_conv(x, offset, mask, weight, bias, 1, 1, 1, 1, 1)
        add(f'extension ({product})', extension_op, leaves)
    add('F.conv2d', lambda: F.conv2d(x, weight, bias, 1, 1), (x, weight, bias))
    if torchvision:
        def torchvision_op():
            with use_backend('torchvision'):
                return modulated_deform_conv(x, offset, mask, weight, bias, 1, 1, 1, 1, 1)
        add('torchvision', torchvision_op, leaves)
    return functions


def cpu_main(args: argparse.Namespace) -> List[Dict[str, object]]:
    """The CPU table: every contender of a shape timed in interleaved rounds (common.interleaved_median_ms)."""
    if not extension_available():
        raise SystemExit(f'the dcn extension is not built ({extension_error()}); run `make setup` '
                         '(or `cd assets/ops/dcn && python setup.py build_ext --inplace`) first')
    products = [name.strip() for name in args.products.split(',') if name.strip()]
    ext = load_extension()
    default_product = ext.cpu_gemm()
    rows: List[Dict[str, Any]] = []  # figures (float ms), labels and sizes, read back by key for the table
    for channels, height, width in SHAPES:
        tensors = make_case(channels, height, width)
        functions: Dict[str, Callable[[], object]] = {}
        for channels_last in (False, True):
            functions.update(cpu_contenders(tensors, channels_last, not args.no_torchvision and not channels_last,
                                            products if not channels_last else products[:1]))
        medians = interleaved_median_ms(functions, args.repeats, args.warmup)
        ext.set_cpu_gemm(default_product)
        for key, forward in medians.items():
            name, layout, kind = key.split('|')
            if kind != 'forward':
                continue
            backward = medians[f'{name}|{layout}|forward+backward'] - forward
            rows.append({'channels': channels, 'height': height, 'width': width, 'contender': name,
                         'layout': layout, 'forward_ms': forward, 'backward_ms': backward})
        print(f'{channels}, {height}x{width}: ' + ', '.join(f'{k}: {v:.1f}' for k, v in medians.items()), flush=True)
    print()
    print(machine())
    print(f'batch 1, fp32, 3x3, stride 1, padding 1; every contender of a shape timed in interleaved rounds, median '
          f'of {args.repeats} rounds after {args.warmup}; backward = median(forward+backward) - median(forward); '
          f'the ratio divides by F.conv2d in the same layout')
    print('issue 16 targets (CPU, AVX2 and AVX-512): extension / F.conv2d <= 1.3x forward, <= 2.0x backward\n')
    print('| C, HxW | layout | contender | forward ms | backward ms | forward / conv2d | backward / conv2d |')
    print('|---|---|---|---|---|---|---|')
    for row in rows:
        conv = next(r for r in rows if r['contender'] == 'F.conv2d' and r['layout'] == row['layout']
                    and r['channels'] == row['channels'])
        ratio = ('-', '-') if row is conv else (f"{row['forward_ms'] / conv['forward_ms']:.2f}x",
                                                f"{row['backward_ms'] / conv['backward_ms']:.2f}x")
        print(f"| {row['channels']}, {row['height']}x{row['width']} | {row['layout']} | {row['contender']} | "
              f"{row['forward_ms']:.1f} | {row['backward_ms']:.1f} | {ratio[0]} | {ratio[1]} |")
    return rows


def main(argv: Sequence[str] | None = None) -> List[Dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--warmup', type=int, default=None, help='warm-up rounds (CPU table: 2)')
    parser.add_argument('--repeats', type=int, default=None, help='timed rounds (CPU table: 7)')
    parser.add_argument('--device', default=None,
                        help='cuda (or cpu): the device table (batches, dtypes, CUDA events); absent: the CPU table')
    parser.add_argument('--quick', action='store_true',
                        help='fewer repeats; with --device cuda: fp32 and fp16 only, a 40 s time budget')
    parser.add_argument('--isa', choices=sorted(ISA_ENVIRONMENT), default=None,
                        help='CPU table: cap torch, oneDNN, MKL and the DCN kernels at this instruction set '
                             '(the benchmark restarts itself with the variables set)')
    parser.add_argument('--products', default='auto,onednn,blas',
                        help='CPU table: which libraries compute the extension\'s products (comma-separated; the '
                             'first is also timed channels-last)')
    parser.add_argument('--no_torchvision', action='store_true', help='CPU table: leave torchvision\'s op out')
    parser.add_argument('--batches', default=None, help='device table: comma-separated batch sizes (cuda: 1,16)')
    parser.add_argument('--dtypes', default=None, help='device table: some of fp32,tf32,fp16,bf16')
    parser.add_argument('--shrink', type=int, default=1, help='device table: divide the spatial sizes by this')
    parser.add_argument('--time_budget', type=float, default=None,
                        help='device table: seconds after which the remaining cases are skipped')
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.device is not None:
        return device_main(args)
    force_isa(args.isa, 'benchmarks.bench_dcn', argv)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.repeats = args.repeats if args.repeats is not None else (3 if args.quick else 7)
    return cpu_main(args)


if __name__ == '__main__':
    main()
