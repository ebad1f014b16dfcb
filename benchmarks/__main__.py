"""Run every benchmark, print its table and write them all to docs/benchmarks.md.

    python -m benchmarks [--only dcn,model,...] [--output docs/benchmarks.md]

Each benchmark is also a script of its own (``python -m benchmarks.bench_<name> --help``).
"""
from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from concern.config import project_module


# Written after the header of docs/benchmarks.md: how the GPU rows are made (they need a lent device).
GPU_CHECK_NOTE = """## GPU check (`tools/gpu_check.sh`)

The GPU rows come from one prepared run on a machine with a GPU (the device lent to some sessions: one NVIDIA
H200, 16 CPU cores, its own python3 3.12 and torch 2.11), which must fit in a few minutes of device time:

```bash
make gpu-wheels          # here: the wheels the device image lacks (shapely, pyclipper for CPython 3.12) into .whl/
tools/gpu_check.sh       # there, from the repository root, .whl/ carried along; report and logs in $OUT
tools/gpu_check.sh --cpu # the dry run of the stages that need no GPU (tests/test_gpu_check.py runs it in CI)
```

Stages, each timed and reported `ok`, `FAILED` or `skipped (why)` in `$OUT/report.md` (one log per stage beside it;
a failing stage does not stop the others; budget 450 s): the environment; the carried wheels; the op built in
place with CUDA kernels for the device's architecture (9.0 on an H200); `pytest -m cuda` (the DCN kernels against
the CPU kernels and torchvision's CUDA op, forward and backward, gradcheck, fp16 / bf16, layouts, empty batch, the
ResNet-50 offset modes, the models on CUDA against the CPU); 100 training iterations of the synthetic experiment
with `--amp fp16` (GradScaler) and `--amp bf16` (loss must decrease, weights stay finite), `--num_gpus 1`
(DataParallel) and `torchrun --nproc_per_node 1 ... -d` (NCCL), a checkpoint written on the GPU loaded on the CPU
giving the same map; and `bench_dcn`, `bench_model`, `bench_inference --batch 16` with `--device cuda --quick`.

"""

BENCHMARKS = (
    ('dcn', 'Deformable convolution: project kernel vs torchvision vs F.conv2d'),
    ('model', 'Model forward: deformable DBNets vs their plain twins'),
    ('compile', 'torch.compile of the deformable model (CPU)'),
    ('postprocess', 'Post-processing per image'),
    ('data', 'Training data pipeline and label generation per sample'),
    ('eval', 'Evaluator per image'),
    ('train_step', 'One training iteration on the CPU'),
    ('nonfinite', 'What the non-finite guard costs per training step'),
    ('inference', 'End-to-end inference: sequential and pipelined, PyTorch and onnxruntime'),
    ('deploy', 'CPU deployment: our MobileNetV3 DBNet (ONNX, float and int8) against RapidOCR'),
)


def run(name: str) -> str:
    """Run ``benchmarks.bench_<name>`` in a fresh interpreter, echoing its output; return that output.

    A process per benchmark keeps one benchmark's state (thread pools and their settings, a heap grown by
    the model runs) out of the next one's numbers: in one process the post-processing rows came out 5-10 %
    slower after the model benchmarks than in a process of their own.
    """
    start = time.perf_counter()
    command = [sys.executable, '-m', project_module(f'benchmarks.bench_{name}')]
    lines: List[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as child:
        assert child.stdout is not None  # stdout=PIPE
        for line in child.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    if child.returncode != 0:
        raise SystemExit(f'[bench] {name} failed with exit code {child.returncode}: {" ".join(command)}')
    print(f'[bench] {name} took {time.perf_counter() - start:.0f} s', flush=True)
    return ''.join(lines)


def report_body(output: str) -> str:
    """The caption paragraph just before the first table, the tables and what follows them; all of
    ``output`` when it holds no table. Progress lines printed before the caption are left out."""
    table_start = output.find('\n|')
    if table_start < 0:
        return output.strip()
    caption_start = output.rfind('\n\n', 0, table_start)  # the blank line that ends the progress lines
    return output[max(caption_start, 0):].strip()


def existing_sections(path: str) -> Dict[str, str]:
    """The benchmark sections of an earlier report (``## title`` -> body), so that ``--only`` keeps the rest."""
    try:
        with open(path, encoding='utf-8') as stream:
            text = stream.read()
    except OSError:
        return {}
    titles = {title for _, title in BENCHMARKS}
    sections: Dict[str, str] = {}
    for chunk in text.split('\n## ')[1:]:
        title, _, body = chunk.partition('\n')
        if title.strip() in titles:
            sections[title.strip()] = body.strip()
    return sections


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--only', default=None, help='comma-separated subset: ' + ','.join(n for n, _ in BENCHMARKS))
    parser.add_argument('--output', default='docs/benchmarks.md')
    args = parser.parse_args(argv)
    chosen = args.only.split(',') if args.only else [name for name, _ in BENCHMARKS]
    unknown = set(chosen) - {name for name, _ in BENCHMARKS}
    if unknown:
        parser.error(f'unknown benchmark(s) {sorted(unknown)}')
    header = ('# Benchmarks\n\nWritten by `python -m benchmarks`; each section says when and on which machine it '
              'was run (`--only` reruns some sections and keeps the others).\n')
    kept = existing_sections(args.output)
    bodies = {}
    for name, title in BENCHMARKS:
        if name in chosen:
            output = run(name)
            bodies[title] = f'Run on {datetime.date.today()}.\n\n{report_body(output)}'
        elif title in kept:
            bodies[title] = kept[title]
        else:
            continue
        with open(args.output, 'w', encoding='utf-8') as stream:  # after each one: a crash keeps the rest
            stream.write('\n'.join([header, GPU_CHECK_NOTE] + [f'## {t}\n\n{b}\n' for t, b in bodies.items()]))
    print(f'[bench] tables written to {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
