"""Training steps while other processes hold cores: a fixed thread count against ``--threads auto``.

Each mode runs ``--steps`` training iterations of the demo's model (deformable ResNet-18 DBNet, Adam, random
batch of the real shapes, fp32 channels-last) in a fresh process, while ``--busy`` other processes each spin one
core (a pure-Python loop, like any CPU-bound job sharing the machine). Modes: ``fixed N`` (torch's default count,
what a run without the governor uses), ``fixed 1`` and ``auto`` (``concern.threads.ThreadGovernor``, as train.py
runs it). Clock: wall time per step (what the user waits), median and total; the governor's choices are printed.

    python -m benchmarks.bench_threads [--busy 1] [--steps 30] [--size 192] [--batch 8] [--inner 128]

With ``--busy 0`` it shows the governor's cost on an idle machine (one window of three steps at one thread
fewer). Not in the default ``python -m benchmarks`` list: it loads the machine on purpose.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.common import machine, print_table

SPIN = 'import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n'


def run_mode(mode: str, args: argparse.Namespace) -> Dict[str, Any]:
    """One mode in a fresh process (its own OpenMP team); the per-step wall times and thread counts."""
    code = f"""
import json, sys, time, torch
sys.path.insert(0, {os.getcwd()!r})
from benchmarks.bench_train_step import training_batch
from concern.threads import thread_governor
from structure.model import SegDetectorModel
notes = []
governor = thread_governor({mode!r}, on_change=notes.append)
torch.manual_seed(0)
model = SegDetectorModel(backbone='deformable_resnet18', decoder='SegDetector',
                         decoder_args={{'adaptive': True, 'k': 50, 'inner_channels': {args.inner}}}).train()
model = model.to(memory_format=torch.channels_last)
batch = training_batch({args.batch}, {args.size})
batch['image'] = batch['image'].contiguous(memory_format=torch.channels_last)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
times, counts = [], []
for _ in range({args.steps}):
    start = time.perf_counter()
    loss, _, _ = model(batch, training=True)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    seconds = time.perf_counter() - start
    times.append(seconds)
    counts.append(torch.get_num_threads())
    if governor is not None:
        governor.observe(seconds)
print(json.dumps({{'times': times, 'counts': counts, 'notes': notes}}))
"""
    output = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--busy', type=int, default=1, help='processes spinning a core each during the runs')
    parser.add_argument('--steps', type=int, default=30)
    parser.add_argument('--size', type=int, default=192)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--inner', type=int, default=128, help="the decoder's inner_channels")
    args = parser.parse_args(argv)
    import torch
    full = torch.get_num_threads()
    print(f'machine: {machine()}')
    print(f'{args.busy} busy process(es); {args.steps} steps of batch {args.batch} at {args.size}x{args.size}')
    modes = [str(full), '1', 'auto'] if full > 1 else ['1', 'auto']
    rows = []
    for mode in modes:
        spinners = [subprocess.Popen([sys.executable, '-c', SPIN.format(seconds=3600)]) for _ in range(args.busy)]
        try:
            time.sleep(0.5 if args.busy else 0)
            result = run_mode(mode, args)
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
        times, counts = result['times'], result['counts']
        rows.append({'threads': f'fixed {mode}' if mode != 'auto' else 'auto (governor)',
                     'median s / step': f'{statistics.median(times):.2f}',
                     f'total s ({args.steps} steps)': f'{sum(times):.0f}',
                     'threads used (last step)': str(counts[-1])})
        for note in result['notes']:
            print(f'  auto: {note}')
    print_table(rows)
    return rows


if __name__ == '__main__':
    main()
