"""Model forward speed: deformable ResNet-18/50 DBNets against their plain-convolution twins.

Batch 1 inference at 736x1280 and 640x640, fp32 and bf16 (autocast), channels-last on and off, with the
project's DCN kernel and, for the ResNet-18 twin comparison, torchvision's op. Random-init weights (speed
does not depend on the values). Prints a Markdown table of medians after warm-up and returns the rows.
Run: ``python -m benchmarks.bench_model [--repeats N] [--quick]``.
"""
from __future__ import annotations

import argparse
import contextlib
from typing import Dict, List, Optional, Sequence

import torch

from assets.ops.dcn import extension_available, use_backend
from benchmarks.common import machine, median_ms, print_table
from structure.model import SegDetectorModel

RESNET_CHANNELS = {18: [64, 128, 256, 512], 50: [256, 512, 1024, 2048]}


def build(depth: int, deformable: bool) -> torch.nn.Module:
    backbone = f'deformable_resnet{depth}' if deformable else f'resnet{depth}'
    model = SegDetectorModel(backbone=backbone, decoder='SegDetector',
                             decoder_args={'adaptive': True, 'k': 50, 'in_channels': RESNET_CHANNELS[depth]})
    return model.eval()


def forward_ms(model: torch.nn.Module, size: Sequence[int], dtype: str, channels_last: bool, repeats: int,
               warmup: int, backend: Optional[str]) -> float:
    image = torch.randn(1, 3, *size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    else:
        model = model.to(memory_format=torch.contiguous_format)
    def run() -> None:
        autocast = torch.autocast('cpu', dtype=torch.bfloat16) if dtype == 'bf16' else contextlib.nullcontext()
        op = use_backend(backend) if backend else contextlib.nullcontext()
        with torch.inference_mode(), autocast, op:
            model(image, training=False)
    return median_ms(run, repeats, warmup)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--quick', action='store_true', help='736x1280 fp32 only')
    args = parser.parse_args(argv)
    sizes = [(736, 1280)] if args.quick else [(736, 1280), (640, 640)]
    variants = [('fp32', False), ('fp32', True)] if args.quick else \
        [('fp32', False), ('fp32', True), ('bf16', False), ('bf16', True)]
    dcn_backend = 'extension' if extension_available() else 'torchvision'
    rows: List[Dict[str, str]] = []
    for depth in (18, 50):
        plain, deformable = build(depth, False), build(depth, True)
        for size in sizes:
            for dtype, channels_last in variants:
                plain_ms = forward_ms(plain, size, dtype, channels_last, args.repeats, args.warmup, None)
                dcn_ms = forward_ms(deformable, size, dtype, channels_last, args.repeats, args.warmup, dcn_backend)
                row = {'model': f'ResNet-{depth}', 'input': f'{size[0]}x{size[1]}', 'dtype': dtype,
                       'channels-last': 'yes' if channels_last else 'no', 'plain ms': f'{plain_ms:.0f}',
                       f'DCN ({dcn_backend}) ms': f'{dcn_ms:.0f}', 'DCN / plain': f'{dcn_ms / plain_ms:.2f}x'}
                if depth == 18 and dtype == 'fp32':
                    tv_ms = forward_ms(deformable, size, dtype, channels_last, args.repeats, args.warmup,
                                       'torchvision')
                    row['DCN (torchvision) ms'] = f'{tv_ms:.0f}'
                    row['torchvision / plain'] = f'{tv_ms / plain_ms:.2f}x'
                rows.append(row)
                print(row, flush=True)
    print(f'\nModel forward, batch 1, medians of {args.repeats} after {args.warmup} warm-up. {machine()}\n')
    print_table(rows)
    return rows


if __name__ == '__main__':
    main()
