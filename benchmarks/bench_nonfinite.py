"""What keeping non-finite numbers out of the weights costs per training step (training/nonfinite.py).

The paper's CPU demo configuration (synthetic_resnet18_deform_thre.yaml, ``make demo``'s default until 2026-12-07):
deformable ResNet-18 DBNet, batch 8, 256x256 crops, Adam, fp32, channels-last. Times, side by side in one run,
median after warm-up: the step without checks (forward, loss, backward, Adam step: what the trainer did before), the
same step with every check (inputs, snapshot of parameters / buffers / optimizer state, loss and buffers, gradients,
weights and optimizer state after the step), and the checks alone on the same model.
Run: ``python -m benchmarks.bench_nonfinite [--repeats N] [--batch 8] [--size 256]``.
"""
from __future__ import annotations

import argparse
from typing import Dict, List, Optional, Sequence

import torch

from benchmarks.bench_train_step import training_batch
from benchmarks.common import machine, median_ms, print_table
from structure.model import SegDetectorModel
from training.nonfinite import NonFiniteGuard, non_finite_inputs


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--batch', type=int, default=8)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = SegDetectorModel(backbone='deformable_resnet18', decoder='SegDetector',
                             decoder_args={'adaptive': True, 'k': 50}).train().to(memory_format=torch.channels_last)
    batch = training_batch(args.batch, args.size)
    batch['image'] = batch['image'].contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    guard = NonFiniteGuard(model, optimizer)

    def plain() -> None:
        loss, _, _ = model(batch, training=True)
        loss = loss.float().mean()
        bool(torch.isfinite(loss))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def guarded() -> None:
        non_finite_inputs(batch)
        guard.snapshot()
        loss, _, _ = model(batch, training=True)
        loss = loss.float().mean()
        assert guard.forward_ok(loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        assert guard.gradients_ok()
        optimizer.step()
        assert guard.state_ok()
        guard.commit()

    def checks_only() -> None:
        non_finite_inputs(batch)
        guard.snapshot()
        guard.forward_ok(torch.zeros(()))
        guard.gradients_ok()
        guard.state_ok()

    plain()  # Adam's state exists from here on, as in a run
    for parameter in model.parameters():  # gradients present for gradients_ok, as after a backward
        parameter.grad = torch.zeros_like(parameter)
    checks = median_ms(checks_only, args.repeats * 3, args.warmup)
    rounds_plain, rounds_guarded = [], []
    for _ in range(args.repeats):  # interleaved, so that drifts of a shared machine hit both alike
        rounds_plain.append(median_ms(plain, 1, 0))
        rounds_guarded.append(median_ms(guarded, 1, 0))
    def save_check() -> None:  # the commit rule at a save: the probability map of the last batch, in eval mode
        model.eval()
        with torch.no_grad():
            bool(torch.isfinite(model(batch, training=False)).all())
        model.train()

    save_checks = median_ms(save_check, args.repeats, 1)
    rounds_plain.sort()
    rounds_guarded.sort()
    step_plain, step_guarded = rounds_plain[len(rounds_plain) // 2], rounds_guarded[len(rounds_guarded) // 2]
    parameters = sum(parameter.numel() for parameter in model.parameters())
    rows = [{'step': 'without checks (before)', 'ms / iteration': f'{step_plain:.0f}'},
            {'step': 'with every check (after)', 'ms / iteration': f'{step_guarded:.0f}'},
            {'step': 'the checks alone', 'ms / iteration': f'{checks:.1f}',
             'share of a step': f'{100 * checks / step_plain:.1f} %'},
            {'step': 'the check before each save (eval forward)', 'ms / iteration': f'{save_checks:.0f} per save',
             'share of a step': f'{100 * save_checks / step_plain:.1f} % once per save_interval'}]
    print(f'\nNon-finite guard, deformable ResNet-18 DBNet ({parameters / 1e6:.1f} M parameters, Adam), batch '
          f'{args.batch}, {args.size}x{args.size}, fp32 channels-last, medians of {args.repeats} (steps, interleaved) '
          f'and {3 * args.repeats} (checks) after warm-up. torch capability '
          f'{torch.backends.cpu.get_cpu_capability()}. {machine()}\n')
    print_table(rows)
    return rows


if __name__ == '__main__':
    main()
