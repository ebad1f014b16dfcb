"""Deformable convolution on the CPU: the project's extension vs torchvision vs F.conv2d.

Shapes: the three DCN stages of ResNet18 on a 736x1280 input, batch 1, fp32, 3x3, stride 1,
padding 1, default thread count. Prints a Markdown table of medians (after warm-up) and
returns the rows. Run: ``python -m benchmarks.bench_dcn`` (needs the built extension).
"""
from __future__ import annotations

import argparse
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from benchmarks.common import machine, median_ms
from assets.ops.dcn import extension_available, extension_error, modulated_deform_conv, use_backend

SHAPES: Tuple[Tuple[int, int, int], ...] = ((128, 92, 160), (256, 46, 80), (512, 23, 40))


def make_case(channels: int, height: int, width: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, height, width, generator=generator)
    weight = torch.randn(channels, channels, 3, 3, generator=generator) * 0.05
    bias = torch.randn(channels, generator=generator)
    offset = torch.randn(1, 18, height, width, generator=generator) * 2.0
    mask = torch.rand(1, 9, height, width, generator=generator)
    return x, offset, mask, weight, bias


def time_dcn(backend: str, tensors, warmup: int, repeats: int) -> Tuple[float, float]:
    x, offset, mask, weight, bias = [t.clone().requires_grad_() for t in tensors]

    def forward():
        with torch.no_grad(), use_backend(backend):
            return modulated_deform_conv(x, offset, mask, weight, bias, 1, 1, 1, 1, 1)

    with use_backend(backend):
        out = modulated_deform_conv(x, offset, mask, weight, bias, 1, 1, 1, 1, 1)
    grad = torch.randn_like(out)

    def backward():
        with use_backend(backend):
            y = modulated_deform_conv(x, offset, mask, weight, bias, 1, 1, 1, 1, 1)
        torch.autograd.grad(y, (x, offset, mask, weight, bias), grad)

    forward_ms = median_ms(forward, repeats, warmup)
    # forward + backward, minus the forward: the backward pass alone
    backward_ms = median_ms(backward, repeats, warmup) - forward_ms
    return forward_ms, backward_ms


def time_conv(tensors, warmup: int, repeats: int) -> Tuple[float, float]:
    x, _, _, weight, bias = [t.clone().requires_grad_() for t in tensors]

    def forward():
        with torch.no_grad():
            return F.conv2d(x, weight, bias, 1, 1)

    out = F.conv2d(x, weight, bias, 1, 1)
    grad = torch.randn_like(out)

    def backward():
        torch.autograd.grad(F.conv2d(x, weight, bias, 1, 1), (x, weight, bias), grad)

    forward_ms = median_ms(forward, repeats, warmup)
    return forward_ms, median_ms(backward, repeats, warmup) - forward_ms


def main(argv: Sequence[str] | None = None) -> List[Dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=7)
    args = parser.parse_args(argv)
    if not extension_available():
        raise SystemExit(f'the dcn extension is not built ({extension_error()}); run '
                         '`cd assets/ops/dcn && python setup.py build_ext --inplace` first')
    rows = []
    for channels, height, width in SHAPES:
        tensors = make_case(channels, height, width)
        ext_f, ext_b = time_dcn('extension', tensors, args.warmup, args.repeats)
        tv_f, tv_b = time_dcn('torchvision', tensors, args.warmup, args.repeats)
        conv_f, conv_b = time_conv(tensors, args.warmup, args.repeats)
        rows.append({'channels': channels, 'height': height, 'width': width,
                     'ext_forward_ms': ext_f, 'tv_forward_ms': tv_f, 'conv_forward_ms': conv_f,
                     'ext_backward_ms': ext_b, 'tv_backward_ms': tv_b, 'conv_backward_ms': conv_b})
    print(machine())
    print(f'batch 1, fp32, 3x3, stride 1, padding 1, median of {args.repeats} after '
          f'{args.warmup} warm-up runs; backward = (forward+backward) - forward\n')
    print('| C, HxW | pass | extension ms | torchvision ms | F.conv2d ms | ext / conv2d | '
          'torchvision / ext |')
    print('|---|---|---|---|---|---|---|')
    for row in rows:
        shape = f"{row['channels']}, {row['height']}x{row['width']}"
        for name in ('forward', 'backward'):
            ext, tv, conv = (row[f'ext_{name}_ms'], row[f'tv_{name}_ms'], row[f'conv_{name}_ms'])
            print(f'| {shape} | {name} | {ext:.1f} | {tv:.1f} | {conv:.1f} | '
                  f'{ext / conv:.2f}x | {tv / ext:.1f}x |')
    return rows


if __name__ == '__main__':
    main()
