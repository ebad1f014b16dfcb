"""Model forward speed: deformable ResNet-18/50 DBNets against their plain-convolution twins, on the CPU or a GPU.

Without ``--device``: the CPU table of the README: batch 1 inference at 736x1280 and 640x640, fp32 and bf16
(autocast), channels-last on and off, with the project's DCN kernel and, for the ResNet-18 twin comparison,
torchvision's op. With ``--device cuda``: the deformable ResNet-18 DBNet at 736x1280, batches 1 and 16, fp32 /
fp16 / bf16 (weights and input converted to that dtype, as ``TorchRunner`` does; the DCN extension's CUDA
kernels run in that dtype too), channels-last on and off, eager and replayed from a CUDA graph of the whole
forward (``inference.runners.CudaGraphForward``), timed with CUDA events, cudnn.benchmark on; ``--compile``
adds torch.compile in a child process with a time limit. ``--device cpu`` runs that table's code on the CPU
(fp32, no graphs; with ``--size`` small, a quick check). Random-init weights (speed does not depend on the
values). Prints a Markdown table of medians after warm-up and returns the rows.
``--fold_batchnorm``: BatchNorm folded into the convolutions against not; ``--scaling``: forward time per megapixel
at several input sizes; both one thread (``--threads``), timed with process CPU time. The CPU table takes ``--fold``
(both models folded, as ``TorchRunner`` runs them), ``--cpu_time`` (process CPU time on ``--threads`` threads),
``--dtypes fp32`` (no emulated bf16 on an AVX2 CPU) and ``--depths 18 --no_torchvision`` (the issue-26 row).
Run: ``python -m benchmarks.bench_model [--repeats N] [--quick]`` or ``... --device cuda [--quick]``, ``...
--fold_batchnorm``, ``... --scaling [--short_sides 512,736,1024,1536] [--channels_last on|off|both] [--fold]``.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from assets.ops.dcn import extension_available, extension_has_cuda, use_backend
from benchmarks.common import (ISA_ENVIRONMENT, Budget, device_median_ms, error_text, force_isa, gpu_description,
                               interleaved_median_cpu_ms, interleaved_median_ms, machine, print_table,
                               release_cuda_memory, resolve_device, synchronize)
from structure.model import SegDetectorModel

RESNET_CHANNELS = {18: [64, 128, 256, 512], 50: [256, 512, 1024, 2048]}


def build(depth: int, deformable: bool) -> torch.nn.Module:
    backbone = f'deformable_resnet{depth}' if deformable else f'resnet{depth}'
    model = SegDetectorModel(backbone=backbone, decoder='SegDetector',
                             decoder_args={'adaptive': True, 'k': 50, 'in_channels': RESNET_CHANNELS[depth]})
    return model.eval()


def forward_call(model: torch.nn.Module, size: Sequence[int], dtype: str, channels_last: bool,
                 backend: Optional[str]):
    """A no-argument call running ``model`` once on a random (1, 3, *size) image: fp32, or bf16 autocast."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    image = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=memory_format)

    def run() -> None:
        autocast = torch.autocast('cpu', dtype=torch.bfloat16) if dtype == 'bf16' else contextlib.nullcontext()
        op = use_backend(backend) if backend else contextlib.nullcontext()
        with torch.inference_mode(), autocast, op:
            model(image, training=False)
    return run


# ---------------------------------------------------------------------------------------------- device table
def device_runner(deformable: bool, device: torch.device, dtype: str, channels_last: bool, batch: int,
                  size: Tuple[int, int]):
    """(TorchRunner, input tensor on the device in the runner's dtype and layout), seeded random weights."""
    from inference.runners import TorchRunner
    torch.manual_seed(0)
    runner = TorchRunner(build(18, deformable), device, dtype, channels_last)
    image = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(1)).to(device).to(runner.dtype)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    return runner, image


def eager(runner, image):
    def run():
        with torch.inference_mode():
            return runner.forward(image)
    return run


def compile_child(args: argparse.Namespace) -> None:
    """--compile_child DTYPE,CHANNELS_LAST,BATCH: compile the deformable ResNet-18 forward, time it, print JSON."""
    device = resolve_device(args.device)
    dtype, channels_last, batch = args.compile_child.split(',')
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    runner, image = device_runner(True, device, dtype, channels_last == '1', int(batch), parse_size(args.size))
    compiled = torch.compile(runner.forward, dynamic=False)

    def run():
        with torch.inference_mode():
            return compiled(image)

    start = time.perf_counter()
    run()
    synchronize(device)
    compile_s = time.perf_counter() - start
    milliseconds = device_median_ms(run, device, args.repeats or 5, args.warmup or 2)
    print('COMPILE_RESULT ' + json.dumps({'compile_s': compile_s, 'ms': milliseconds}), flush=True)


def compiled_ms(args: argparse.Namespace, dtype: str, channels_last: bool, batch: int, repeats: int, warmup: int
                ) -> str:
    command = [sys.executable, '-m', 'benchmarks.bench_model', '--device', args.device, '--size', args.size,
               '--compile_child', f'{dtype},{int(channels_last)},{batch}', '--repeats', str(repeats),
               '--warmup', str(warmup)] + (['--no_cudnn_benchmark'] if args.no_cudnn_benchmark else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.compile_timeout)
    except subprocess.TimeoutExpired:
        return f'not compiled within {args.compile_timeout:.0f} s'
    for line in done.stdout.splitlines():
        if line.startswith('COMPILE_RESULT '):
            result = json.loads(line[len('COMPILE_RESULT '):])
            return f"{result['ms']:.2f} (compiled in {result['compile_s']:.0f} s)"
    tail = (done.stderr or done.stdout).strip().splitlines()
    return 'failed: ' + (tail[-1][:160].replace('|', '/') if tail else f'exit code {done.returncode}')


def parse_size(text: str) -> Tuple[int, int]:
    height, width = (int(value) for value in text.lower().split('x'))
    return height, width


def device_main(args: argparse.Namespace) -> List[Dict[str, str]]:
    from inference.runners import CudaGraphForward
    device = resolve_device(args.device)
    cuda = device.type == 'cuda'
    quick = args.quick
    if cuda:
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    size = parse_size(args.size)
    batches = [int(b) for b in (args.batches or ('1,16' if cuda else '1')).split(',')]
    if args.dtypes:
        dtypes = [name.strip() for name in args.dtypes.split(',')]
        layouts = {'both': (False, True), 'on': (True,), 'off': (False,)}[args.channels_last]
        variants = [(dtype, layout) for dtype in dtypes for layout in layouts]
    elif cuda:
        variants = ([('fp16', True), ('fp32', False), ('fp16', False), ('bf16', True)] if quick else
                    [(dtype, layout) for dtype in ('fp16', 'bf16', 'fp32') for layout in (True, False)])
    else:
        variants = [('fp32', True)] if quick else [('fp32', False), ('fp32', True)]
    graphs = cuda and not args.no_graphs
    twin = not quick and not args.no_twin
    warmup = args.warmup if args.warmup is not None else (2 if quick else 3) if cuda else (1 if quick else 2)
    repeats = args.repeats if args.repeats is not None else (5 if quick else 10) if cuda else (3 if quick else 5)
    budget = Budget(args.time_budget if args.time_budget is not None else (40.0 if quick and cuda else None))
    if cuda and not extension_has_cuda():
        print('warning: the dcn extension has no CUDA kernels here: the deformable convolutions run on '
              'torchvision\'s op, in float32 (tools/build_op.sh full builds the kernels)')
    elif not extension_available():
        print('warning: the dcn extension is not built: the deformable convolutions run on torchvision\'s op')
    rows: List[Dict[str, str]] = []
    skipped = []
    for dtype, channels_last in variants:
        for batch in batches:
            label = f"{dtype} batch {batch}{' channels-last' if channels_last else ''}"
            if budget.exhausted():
                skipped.append(label)
                continue
            row = {'batch': str(batch), 'dtype': dtype, 'channels-last': 'yes' if channels_last else 'no'}
            runner = image = graph = reference = None
            try:
                runner, image = device_runner(True, device, dtype, channels_last, batch, size)
                eager_ms = device_median_ms(eager(runner, image), device, repeats, warmup)
                row['eager ms'] = f'{eager_ms:.2f}'
                best = eager_ms
                if graphs:
                    with torch.inference_mode():
                        reference = runner.forward(image).clone()
                    graph = CudaGraphForward(runner.forward, image)
                    # partial, not a lambda: the call must not close over names the finally clause deletes
                    graph_ms = device_median_ms(functools.partial(graph, image), device, repeats, warmup)
                    same = torch.equal(graph(image), reference)
                    row['CUDA graph ms'] = f'{graph_ms:.2f}'
                    row['graph speed-up'] = f'{eager_ms / graph_ms:.2f}x'
                    row['graph = eager'] = 'yes' if same else \
                        f'no (max diff {(graph(image).float() - reference.float()).abs().max().item():.1e})'
                    best = min(best, graph_ms)
                row['images / s'] = f'{1e3 * batch / best:.1f}'
                row['ms / image'] = f'{best / batch:.2f}'
                del graph, reference
                graph = reference = None
                if twin:
                    plain, plain_image = device_runner(False, device, dtype, channels_last, batch, size)
                    plain_ms = device_median_ms(eager(plain, plain_image), device, repeats, warmup)
                    row['plain twin eager ms'] = f'{plain_ms:.2f}'
                    row['DCN / plain'] = f'{eager_ms / plain_ms:.2f}x'
                    del plain, plain_image
                if args.compile:
                    row['torch.compile ms'] = compiled_ms(args, dtype, channels_last, batch, repeats, warmup)
            except Exception as error:  # noqa: BLE001 - one configuration failing must not lose the others
                row['error'] = error_text(error)
            finally:
                del runner, image, graph, reference
                release_cuda_memory()
            rows.append(row)
            print(row, flush=True)
    print(f'\nDeformable ResNet-18 DBNet forward at {size[0]}x{size[1]}, medians of {repeats} after {warmup} warm-up'
          + (' (CUDA events)' if cuda else '') + '. Weights and input in the dtype (no autocast); '
          f'{machine()}' + (f'; {gpu_description(device)}' if cuda else '') + '\n')
    print_table(rows)
    if skipped:
        print(f'\nskipped (time budget of {budget.seconds:.0f} s spent): ' + '; '.join(skipped))
    return rows


# ------------------------------------------------------------------- one-thread CPU tables: BN folding, scaling
def fold_main(args: argparse.Namespace) -> List[Dict[str, str]]:
    """--fold_batchnorm: the deformable ResNet-18 DBNet and its plain twin, fp32 NCHW and channels-last, with their
    BatchNorms (as trained) against folded into the convolutions (``structure.batchnorm_folding``, what
    ``TorchRunner`` runs by default), one thread, process CPU time, interleaved rounds."""
    from structure.batchnorm_folding import count_batchnorms, fold_batchnorm
    torch.set_num_threads(args.threads)
    size = parse_size(args.size)
    rows: List[Dict[str, str]] = []
    for deformable in (True, False):
        torch.manual_seed(0)
        model = build(18, deformable)
        folded = fold_batchnorm(model)
        for channels_last in (False, True):
            medians = interleaved_median_cpu_ms(
                {'BN': forward_call(model, size, 'fp32', channels_last, None),
                 'folded': forward_call(folded, size, 'fp32', channels_last, None)}, args.repeats, args.warmup)
            row = {'model': f'{"deformable " if deformable else ""}ResNet-18 DBNet', 'input': f'{size[0]}x{size[1]}',
                   'channels-last': 'yes' if channels_last else 'no',
                   f'with {count_batchnorms(model)} BN ms': f"{medians['BN']:.0f}",
                   'BN folded ms': f"{medians['folded']:.0f}",
                   'folded / BN': f"{medians['folded'] / medians['BN']:.3f}"}
            rows.append(row)
            print(row, flush=True)
    print(f'\nBatchNorm folding, fp32, batch 1, random weights, {args.threads} thread(s), process CPU time, medians of '
          f'{args.repeats} interleaved rounds after {args.warmup}. {machine()}\n')
    print_table(rows)
    return rows


def scaling_sizes(short_sides: Sequence[int]) -> List[Tuple[int, int]]:
    """The network input of a 1280x720 photo at each short side (``InputSize``, no long-side cap)."""
    from data.input_size import InputSize
    return [InputSize('short_side', side, None)(720, 1280) for side in short_sides]


def scaling_main(args: argparse.Namespace) -> List[Dict[str, str]]:
    """--scaling: forward time per megapixel of the deformable ResNet-18 DBNet at several short sides of a 16:9
    photo, fp32, NCHW and channels-last, one thread, process CPU time; the sizes of a layout run in interleaved
    rounds. Flat means the cost is linear in the pixels (the issue's goal: within 10 % from 512 to 1536)."""
    from structure.batchnorm_folding import fold_batchnorm
    torch.set_num_threads(args.threads)
    short_sides = [int(side) for side in args.short_sides.split(',')]
    sizes = scaling_sizes(short_sides)
    torch.manual_seed(0)
    model = build(18, True)
    if args.fold:
        model = fold_batchnorm(model)
    layouts = {'both': (False, True), 'on': (True,), 'off': (False,)}[args.channels_last]
    rows: List[Dict[str, str]] = []
    for channels_last in layouts:
        names = [f'{h}x{w}' for h, w in sizes]
        functions = {name: forward_call(model, size, 'fp32', channels_last, None) for name, size in zip(names, sizes)}
        medians = interleaved_median_cpu_ms(functions, args.repeats, args.warmup)
        per_megapixel = [medians[name] / (h * w / 1e6) for name, (h, w) in zip(names, sizes)]
        reference = per_megapixel[short_sides.index(736)] if 736 in short_sides else per_megapixel[0]
        for side, name, (h, w), per in zip(short_sides, names, sizes, per_megapixel):
            row = {'channels-last': 'yes' if channels_last else 'no', 'short side': str(side), 'input': name,
                   'megapixels': f'{h * w / 1e6:.2f}', 'ms': f'{medians[name]:.0f}', 'ms / megapixel': f'{per:.0f}',
                   f'against {short_sides[0]}': f'{per / per_megapixel[0]:.2f}x',
                   'against 736': f'{per / reference:.2f}x'}
            rows.append(row)
            print(row, flush=True)
    print(f'\nDeformable ResNet-18 DBNet forward per megapixel, fp32, batch 1, random weights'
          f'{", BN folded" if args.fold else ""}, {args.threads} thread(s), process CPU time, medians of '
          f'{args.repeats} interleaved rounds after {args.warmup}. {machine()}\n')
    print_table(rows)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=None, help='timed runs (CPU table: 5)')
    parser.add_argument('--warmup', type=int, default=None, help='warm-up runs (CPU table: 2)')
    parser.add_argument('--quick', action='store_true',
                        help='CPU table: 736x1280 fp32 only; device table: fewer configurations, a 40 s budget on CUDA')
    parser.add_argument('--device', default=None, help='cuda (or cpu): the device table; absent: the CPU table')
    parser.add_argument('--size', default='736x1280', help='device table: input HxW')
    parser.add_argument('--batches', default=None, help='device table: comma-separated batch sizes (cuda: 1,16)')
    parser.add_argument('--dtypes', default=None,
                        help='device table: some of fp32,fp16,bf16 (with --channels_last); CPU table: fp32 and/or bf16')
    parser.add_argument('--sizes', default=None, help='CPU table: comma-separated HxW (default 736x1280,640x640)')
    parser.add_argument('--channels_last', default='both', choices=('both', 'on', 'off'),
                        help='device table with --dtypes: which memory formats')
    parser.add_argument('--no_graphs', action='store_true', help='device table: no CUDA-graph column')
    parser.add_argument('--no_twin', action='store_true', help='device table: no plain-twin column')
    parser.add_argument('--no_cudnn_benchmark', action='store_true', help='device table: cudnn.benchmark off')
    parser.add_argument('--compile', action='store_true',
                        help='device table: add torch.compile '
                             '(a child process per configuration, see --compile_timeout)')
    parser.add_argument('--compile_timeout', type=float, default=90.0)
    parser.add_argument('--time_budget', type=float, default=None,
                        help='device table: seconds after which the remaining configurations are skipped')
    parser.add_argument('--compile_child', default=None, help=argparse.SUPPRESS)
    parser.add_argument('--isa', choices=sorted(ISA_ENVIRONMENT), default=None,
                        help='CPU table: cap torch, oneDNN, MKL and the DCN kernels at this instruction set')
    parser.add_argument('--depths', default='18,50', help='CPU table: ResNet depths (comma-separated)')
    parser.add_argument('--no_torchvision', action='store_true', help='CPU table: no torchvision column')
    parser.add_argument('--fold_batchnorm', action='store_true',
                        help='one-thread table: BN folded against not (ResNet-18 DBNets, at --size)')
    parser.add_argument('--scaling', action='store_true',
                        help='one-thread table: deformable ResNet-18 forward time per megapixel at --short_sides')
    parser.add_argument('--short_sides', default='512,736,1024,1536', help='--scaling: short sides of a 16:9 photo')
    parser.add_argument('--fold', action='store_true',
                        help='--scaling and the CPU table: with the BatchNorms folded (as TorchRunner)')
    parser.add_argument('--cpu_time', action='store_true',
                        help='CPU table: process CPU time on --threads threads instead of wall clock')
    parser.add_argument('--threads', type=int, default=1,
                        help='--fold_batchnorm / --scaling / --cpu_time: torch threads')
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.fold_batchnorm or args.scaling:
        args.repeats = 3 if args.repeats is None else args.repeats
        args.warmup = 1 if args.warmup is None else args.warmup
        return fold_main(args) if args.fold_batchnorm else scaling_main(args)
    if args.compile_child:
        compile_child(args)
        return []
    if args.device is not None:
        return device_main(args)
    force_isa(args.isa, 'benchmarks.bench_model', argv)
    args.repeats = 5 if args.repeats is None else args.repeats
    args.warmup = 2 if args.warmup is None else args.warmup
    sizes = [(736, 1280)] if args.quick else [(736, 1280), (640, 640)]
    variants = [('fp32', False), ('fp32', True)] if args.quick else \
        [('fp32', False), ('fp32', True), ('bf16', False), ('bf16', True)]
    if args.dtypes:
        wanted = {name.strip() for name in args.dtypes.split(',')}
        variants = [(dtype, channels_last) for dtype, channels_last in variants if dtype in wanted]
    if args.sizes:
        sizes = [parse_size(text) for text in args.sizes.split(',')]
    depths = [int(d) for d in args.depths.split(',')]
    dcn_backend = 'extension' if extension_available() else 'torchvision'
    rows: List[Dict[str, str]] = []
    if args.cpu_time:
        torch.set_num_threads(args.threads)
    for depth in depths:
        torch.manual_seed(0)
        plain, deformable = build(depth, False), build(depth, True)
        if args.fold:  # as TorchRunner runs them (fold_batchnorm=True)
            from structure.batchnorm_folding import fold_batchnorm
            plain, deformable = fold_batchnorm(plain), fold_batchnorm(deformable)
        for size in sizes:
            for dtype, channels_last in variants:
                # Each configuration's contenders run in interleaved rounds (load hits them alike).
                functions = {'plain': forward_call(plain, size, dtype, channels_last, None),
                             'dcn': forward_call(deformable, size, dtype, channels_last, dcn_backend)}
                if depth == 18 and dtype == 'fp32' and not args.no_torchvision:
                    functions['torchvision'] = forward_call(deformable, size, dtype, channels_last, 'torchvision')
                medians = (interleaved_median_cpu_ms(functions, args.repeats, args.warmup) if args.cpu_time
                           else interleaved_median_ms(functions, args.repeats, args.warmup))
                plain_ms, dcn_ms = medians['plain'], medians['dcn']
                row = {'model': f'ResNet-{depth}', 'input': f'{size[0]}x{size[1]}', 'dtype': dtype,
                       'channels-last': 'yes' if channels_last else 'no', 'plain ms': f'{plain_ms:.0f}',
                       f'DCN ({dcn_backend}) ms': f'{dcn_ms:.0f}', 'DCN / plain': f'{dcn_ms / plain_ms:.2f}x'}
                if 'torchvision' in medians:
                    row['DCN (torchvision) ms'] = f"{medians['torchvision']:.0f}"
                    row['torchvision / plain'] = f"{medians['torchvision'] / plain_ms:.2f}x"
                rows.append(row)
                print(row, flush=True)
    clock = (f'process CPU time on {args.threads} thread(s)' if args.cpu_time else 'wall clock')
    folded = ', BatchNorm folded into the convolutions (as TorchRunner runs them)' if args.fold else ''
    print(f'\nModel forward, batch 1, random weights{folded}; each configuration\'s contenders timed in interleaved '
          f'rounds ({clock}), median of {args.repeats} rounds after {args.warmup}. bf16: autocast (the DCN layers '
          f'in bfloat16 through the extension\'s bf16 path). {machine()}')
    print('issue 16 target: deformable ResNet-18 DBNet / plain twin <= 1.1x (736x1280 and 640x640; fp32 NCHW, '
          'channels-last, bf16)\n')
    print_table(rows)
    return rows


if __name__ == '__main__':
    main()
