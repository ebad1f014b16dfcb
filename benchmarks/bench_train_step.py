"""One training iteration on the CPU: forward + loss + backward + SGD step, batch 4, 640x640.

Deformable ResNet-18 DBNet (adaptive threshold, k = 50) with random targets of the real shapes, fp32 and
bf16 autocast, channels-last on and off. Prints a Markdown table of medians after warm-up and returns the rows.
Run: ``python -m benchmarks.bench_train_step [--repeats N] [--size 640] [--batch 4]``.
"""
from __future__ import annotations

import argparse
import contextlib
from typing import Dict, List, Optional, Sequence

import torch

from benchmarks.common import machine, median_ms, print_table
from structure.model import SegDetectorModel


def training_batch(batch: int, size: int) -> Dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shape = (batch, size, size)
    return {'image': torch.randn(batch, 3, size, size, generator=generator),
            'gt': (torch.rand(batch, 1, size, size, generator=generator) > 0.8).float(),
            'mask': torch.ones(shape),
            'thresh_map': 0.3 + 0.4 * torch.rand(shape, generator=generator),
            'thresh_mask': (torch.rand(shape, generator=generator) > 0.5).float()}


def step_ms(batch: Dict[str, torch.Tensor], dtype: str, channels_last: bool, repeats: int, warmup: int) -> float:
    torch.manual_seed(0)
    model = SegDetectorModel(backbone='deformable_resnet18', decoder='SegDetector',
                             decoder_args={'adaptive': True, 'k': 50}).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        batch = dict(batch, image=batch['image'].contiguous(memory_format=torch.channels_last))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.007, momentum=0.9, weight_decay=1e-4)
    autocast = torch.autocast('cpu', dtype=torch.bfloat16) if dtype == 'bf16' else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            loss, _, _ = model(batch, training=True)
        optimizer.zero_grad(set_to_none=True)
        loss.float().backward()
        optimizer.step()
    return median_ms(step, repeats, warmup)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--size', type=int, default=640)
    parser.add_argument('--batch', type=int, default=4)
    args = parser.parse_args(argv)
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
