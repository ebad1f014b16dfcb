"""The GPU check: one prepared run that proves the CUDA path and measures GPU speed (tools/gpu_check.sh runs it).

    python3 tools/gpu_check.py [--out DIR] [--cpu] [--budget SECONDS]

Stages, each timed, each ending ``ok``, ``FAILED`` or ``skipped (why)`` in the report (nothing is skipped
silently); a failing stage does not stop the later ones, and the report is rewritten after every stage, so a run
cut short still leaves one:

1. ``environment``: Python, torch, CUDA, the GPU (nvidia-smi);
2. ``wheels``: the packages the device image lacks (shapely, pyclipper), installed from the carried ``.whl/`` folder
   (``make gpu-wheels`` fills it here) into a private folder put on PYTHONPATH;
3. ``build``: the deformable-convolution op built in place with its CUDA kernels for the device's architecture
   (``TORCH_CUDA_ARCH_LIST``, 9.0 on an H200);
4. ``cuda tests``: ``pytest -m cuda`` (the DCN kernels against the CPU kernels and torchvision, the models on CUDA
   against the CPU);
5. ``training``: the synthetic experiment for 100 iterations with fp16 AMP + GradScaler and with bf16 (loss must
   decrease, every weight stay finite), ``--num_gpus 1`` (DataParallel) and ``torchrun --nproc_per_node 1 ... -d``
   (NCCL), and a checkpoint written on the GPU loaded on the CPU giving the same output;
6. ``benchmarks``: ``bench_dcn``, ``bench_model`` and ``bench_inference`` with ``--device cuda --quick``.

``--cpu`` is the dry run of this machine's CI: the stages that need no GPU run on the CPU at a reduced size (a few
training iterations in fp32, torchrun with Gloo), the others are reported as skipped with the reason. Output under
``--out`` (default ``$OUT``, else ``gpu_check_out``): ``report.md`` and one log per stage (at most 8 files, as the
device tool brings back).
The training runs go to ``workspace/gpu_check_*`` (their checkpoints are too large to bring back) and are deleted
when the training stage passes; a failed stage keeps them for inspection.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = 'experiments/seg_detector/synthetic_resnet18_deform_thre.yaml'
WHEELS = os.path.join(ROOT, '.whl')


class Check:
    """The run's state: where it writes, what it found, and the report's rows."""

    def __init__(self, out: str, cpu: bool, budget: float, python: str):
        self.out, self.cpu, self.budget, self.python = out, cpu, budget, python
        self.start = time.perf_counter()
        self.rows: List[Tuple[str, str, float, str]] = []
        self.details: List[str] = []
        self.env = dict(os.environ, PYTHONUNBUFFERED='1')
        self.work = os.path.join(out, 'work') if cpu else '/tmp/gpu_check_work'
        self.facts: Dict[str, str] = {}

    # -- running commands ---------------------------------------------------------------------
    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def run(self, stage: str, command: Sequence[str], timeout: float,
            env: Optional[Dict[str, str]] = None) -> Tuple[int, str]:
        """Run ``command`` from the repository root, its output appended to ``<out>/<stage>.log``; (status, output).
        A command past ``timeout`` (or the budget left) is killed and gives status 124."""
        timeout = max(5.0, min(timeout, self.left()))
        log = os.path.join(self.out, f'{stage.replace(" ", "_")}.log')
        with open(log, 'a', encoding='utf-8') as stream:
            stream.write(f'\n$ {" ".join(command)}  (timeout {timeout:.0f} s)\n')
            stream.flush()
            try:
                done = subprocess.run(list(command), cwd=ROOT, env=env or self.env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, timeout=timeout)
                output, status = done.stdout, done.returncode
            except subprocess.TimeoutExpired as expired:
                output = expired.stdout if isinstance(expired.stdout, str) else (expired.stdout or b'').decode()
                output, status = output + f'\n[gpu_check] killed after {timeout:.0f} s\n', 124
            stream.write(output)
            stream.write(f'[gpu_check] exit status {status}\n')
        return status, output

    def python_command(self, *arguments: str) -> List[str]:
        return [self.python, *arguments]

    # -- the report ------------------------------------------------------------------------------
    def record(self, stage: str, status: str, seconds: float, summary: str) -> None:
        self.rows.append((stage, status, seconds, summary))
        self.write_report()

    def write_report(self) -> None:
        total = time.perf_counter() - self.start
        lines = ['# GPU check' + (' (CPU dry run)' if self.cpu else ''), '',
                 f'{len(self.rows)} stage(s), {total:.0f} s in all (budget {self.budget:.0f} s).', '']
        lines += [f'- {key}: {value}' for key, value in self.facts.items()]
        lines += ['', '| stage | result | seconds | summary |', '|---|---|---|---|']
        lines += [f'| {stage} | {status} | {seconds:.1f} | {summary} |'
                  for stage, status, seconds, summary in self.rows]
        lines += ['', *self.details]
        with open(os.path.join(self.out, 'report.md'), 'w', encoding='utf-8') as stream:
            stream.write('\n'.join(lines) + '\n')


# ---------------------------------------------------------------------------------------------- stages
def stage_environment(check: Check) -> Tuple[str, str]:
    probe = ('import json, platform, torch; print(json.dumps({"python": platform.python_version(), '
             '"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) '
             'if torch.cuda.is_available() else None, "capability": ".".join(map(str, '
             'torch.cuda.get_device_capability(0))) if torch.cuda.is_available() else None, '
             '"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpus": __import__("os").cpu_count()}))')
    status, output = check.run('environment', check.python_command('-c', probe), 60)
    if status:
        return 'FAILED', 'python3 / torch did not start'
    facts = json.loads(output.strip().splitlines()[-1])
    check.facts.update({'Python': facts['python'], 'torch': f"{facts['torch']} (CUDA {facts['cuda']})",
                        'GPU': f"{facts['gpu']} (compute capability {facts['capability']})" if facts['gpu'] else 'none',
                        'CPU': f"{facts['cpus']} cores, torch capability {facts['cpu_capability']}"})
    if shutil.which('nvidia-smi'):
        check.run('environment', ['nvidia-smi'], 30)
    if not check.cpu and not facts['gpu']:
        return 'FAILED', 'no CUDA device visible to torch (use --cpu for the dry run)'
    if facts['capability']:
        check.env.setdefault('TORCH_CUDA_ARCH_LIST', facts['capability'])
    return 'ok', f"{facts['gpu'] or 'CPU only'}, torch {facts['torch']}"


def stage_wheels(check: Check) -> Tuple[str, str]:
    missing = _missing_modules(check, ('shapely', 'pyclipper'))
    if not missing:
        return 'ok', 'shapely and pyclipper already importable'
    wheels = sorted(name for name in os.listdir(WHEELS) if name.endswith('.whl')) if os.path.isdir(WHEELS) else []
    if not wheels:
        return 'FAILED', f'{", ".join(missing)} missing and no wheels in .whl/ (make gpu-wheels here, carry .whl)'
    target = os.path.join(check.work, 'site')
    status, _ = check.run('wheels', check.python_command(
        '-m', 'pip', 'install', '-q', '--no-index', '--no-deps', '--no-compile', '--no-cache-dir', '--upgrade',
        '--target', target, *[os.path.join(WHEELS, name) for name in wheels]), 120)
    if status:
        return 'FAILED', 'pip could not install the carried wheels'
    check.env['PYTHONPATH'] = target + os.pathsep + check.env.get('PYTHONPATH', '')
    still = _missing_modules(check, ('shapely', 'pyclipper'))
    return ('FAILED', f'{", ".join(still)} still missing') if still else ('ok', f'installed {len(wheels)} wheel(s)')


def _missing_modules(check: Check, names: Sequence[str]) -> List[str]:
    missing = []
    for name in names:
        status, _ = check.run('wheels', check.python_command('-c', f'import {name}'), 60)
        if status:
            missing.append(name)
    return missing


def stage_build(check: Check) -> Tuple[str, str]:
    env = dict(check.env, PYTHON=check.python, MAX_JOBS=str(os.cpu_count() or 4))
    status, output = check.run('build', ['bash', 'tools/build_op.sh', 'cpu' if check.cpu else 'full'], 300, env)
    if status:
        return 'FAILED', 'the op did not build (build.log)'
    if check.cpu:
        return 'ok', 'CPU kernels (dry run)'
    probe = 'from assets.ops.dcn import extension_has_cuda; import sys; sys.exit(0 if extension_has_cuda() else 1)'
    status, _ = check.run('build', check.python_command('-c', probe), 60)
    arch = check.env.get('TORCH_CUDA_ARCH_LIST', 'default')
    return ('ok', f'CPU + CUDA kernels (arch {arch})') if not status else ('FAILED', 'built without CUDA kernels')


def stage_cuda_tests(check: Check) -> Tuple[str, str]:
    if check.cpu:
        status, output = check.run('cuda_tests', check.python_command(
            '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '--collect-only', '-m', 'cuda', 'tests'), 120)
        count = _count(r'(\d+)(?:/\d+)? tests? collected', output) or _count(r'(\d+) tests? selected', output)
        return ('ok' if not status else 'FAILED'), f'{count} CUDA tests collected (they run on a GPU only)'
    status, output = check.run('cuda_tests', check.python_command(
        '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-m', 'cuda', '-ra', 'tests'), 240)
    summary = (output.strip().splitlines() or ['no output'])[-1]
    check.details += ['## CUDA tests', '', '```', *output.strip().splitlines()[-25:], '```', '']
    return ('ok' if status == 0 else 'FAILED'), summary


def _count(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else 0


def stage_training(check: Check) -> Tuple[str, str]:
    data = os.path.join(check.work, 'synthetic')
    train_images = 16 if check.cpu else 80
    if not os.path.isfile(os.path.join(data, 'train_list.txt')):
        status, _ = check.run('training', check.python_command(
            '-m', 'data.synthetic', '--out', data, '--train', str(train_images), '--test', '4', '--size', '256',
            '--fonts', 'builtin'), 120)
        if status:
            return 'FAILED', 'the synthetic data set was not generated'
    opts = [f'train.data_loader.dataset.data_dir=[{data}]',
            f'train.data_loader.dataset.data_list=[{data}/train_list.txt]',
            f'evaluation.data_loaders.synthetic.dataset.data_dir=[{data}]',
            f'evaluation.data_loaders.synthetic.dataset.data_list=[{data}/test_list.txt]',
            f'logger.log_interval={1 if check.cpu else 10}']
    if check.cpu:
        opts += ['train.data_loader.dataset.processes.1.size=[128, 128]', 'train.data_loader.num_workers=0']
        runs = [('fp32', ['--epochs', '1'], 'cpu')]
        skipped = ['fp16 AMP, bf16, --num_gpus 1 and the GPU-to-CPU checkpoint need a GPU']
    else:
        opts += ['train.data_loader.num_workers=4']
        runs = [('fp16', ['--amp', 'fp16', '--epochs', '10'], 'cuda'),
                ('bf16', ['--amp', 'bf16', '--epochs', '10'], 'cuda'),
                ('dataparallel', ['--num_gpus', '1', '--epochs', '2'], 'cuda')]
        skipped = []
    results, failed, trained = [], False, []
    for name, flags, device in runs:
        workspace_name = f'gpu_check_{name}'
        trained.append(workspace_name)
        shutil.rmtree(_run_folder(workspace_name), ignore_errors=True)
        status, _ = check.run('training', check.python_command(
            'train.py', EXPERIMENT, '--name', workspace_name, '--device', device, '--seed', '0', *flags,
            '--opt', *opts), 240)
        verdict = _training_verdict(check, workspace_name, status, need_decrease=not check.cpu)
        failed = failed or not verdict.startswith('ok')
        results.append(f'{name}: {verdict}')
    # torchrun, one process: NCCL on the GPU, Gloo on the CPU
    workspace_name = 'gpu_check_torchrun'
    trained.append(workspace_name)
    shutil.rmtree(_run_folder(workspace_name), ignore_errors=True)
    status, _ = check.run('training', check.python_command(
        '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '1', 'train.py', EXPERIMENT, '-d',
        '--name', workspace_name, '--device', 'cpu' if check.cpu else 'cuda', '--seed', '0', '--epochs', '1',
        '--opt', *opts), 240)
    verdict = _training_verdict(check, workspace_name, status, need_decrease=False)
    failed = failed or not verdict.startswith('ok')
    results.append(f"torchrun -d ({'Gloo' if check.cpu else 'NCCL'}): {verdict}")
    if not check.cpu:
        status, output = check.run('training', check.python_command(
            'tools/gpu_check.py', '--compare-devices', os.path.join('workspace', 'gpu_check_fp16', 'model', 'final')),
            120)
        line = (output.strip().splitlines() or ['no output'])[-1]
        failed = failed or status != 0
        results.append(f'GPU checkpoint on the CPU: {line}')
    check.details += ['## Training', '', *[f'- {line}' for line in results + [f'skipped: {s}' for s in skipped]], '']
    if not failed:   # the runs' checkpoints (about 150 MB each) are kept only for a failure's inspection
        for workspace_name in trained:
            shutil.rmtree(_run_folder(workspace_name), ignore_errors=True)
    return ('FAILED' if failed else 'ok'), '; '.join(results) + (f' (skipped: {"; ".join(skipped)})' if skipped else '')


def _run_folder(name: str) -> str:
    """The workspace folder of the training run ``--name name`` (train.py's workspace/<name>)."""
    return os.path.join(ROOT, 'workspace', name)


def _training_verdict(check: Check, name: str, status: int, need_decrease: bool = True) -> str:
    workspace = _run_folder(name)
    if status:
        return f'FAILED (exit status {status}; training.log)'
    final = os.path.join(workspace, 'model', 'final')
    probe = ('import sys, torch; from concern.checkpoint_io import read_weights_file; '
             'from training.nonfinite import all_finite; c = read_weights_file(sys.argv[1]); '
             'print("finite" if all_finite(c["model"].values()) else "NON-FINITE")')
    code, output = check.run('training', check.python_command('-c', probe, final), 60)
    finite = not code and output.strip().endswith('finite') and 'NON' not in output
    losses = _losses(os.path.join(workspace, 'output.log'))
    decreased = len(losses) >= 2 and losses[-1] < losses[0]
    verdict = f'loss {losses[0]:.3f} -> {losses[-1]:.3f}' if losses else 'no loss logged'
    verdict += ', weights finite' if finite else ', NON-FINITE WEIGHTS'
    ok = finite and bool(losses) and (decreased or not need_decrease)
    return ('ok: ' if ok else 'FAILED: ') + verdict


def _losses(log: str) -> List[float]:
    if not os.path.isfile(log):
        return []
    with open(log, encoding='utf-8') as stream:
        return [float(match.group(1)) for match in re.finditer(r' loss=([0-9.eE+-]+)', stream.read())]


def stage_benchmarks(check: Check) -> Tuple[str, str]:
    if check.cpu:
        return 'skipped', 'GPU benchmarks need a GPU (their CPU rows come from python -m benchmarks)'
    outputs, failed = [], []
    for name, extra in (('bench_dcn', []), ('bench_model', []), ('bench_inference', ['--batch', '16'])):
        status, output = check.run('benchmarks', check.python_command(
            '-m', f'benchmarks.{name}', '--device', 'cuda', '--quick', *extra), 150)
        if status:
            failed.append(name)
        outputs += [f'### {name}', '', *output.strip().splitlines()[-30:], '']
    check.details += ['## GPU benchmarks', '', *outputs]
    return ('FAILED' if failed else 'ok'), ('failed: ' + ', '.join(failed)) if failed else 'tables below'


STAGES: Sequence[Tuple[str, Callable[[Check], Tuple[str, str]]]] = (
    ('environment', stage_environment), ('wheels', stage_wheels), ('build', stage_build),
    ('cuda tests', stage_cuda_tests), ('training', stage_training), ('benchmarks', stage_benchmarks))


# ---------------------------------------------------------------------------------------------- devices
def compare_devices(checkpoint: str) -> int:
    """Load ``checkpoint`` (written on the GPU) on the CPU and on the GPU; the same probability map within
    float32 tolerance (max abs difference <= 1e-3 on a map in [0, 1]: cuDNN and oneDNN sum in other orders)."""
    sys.path.insert(0, ROOT)
    import torch
    from concern.config import load_config
    from structure.weights import load_trained_model
    from experiment import Experiment
    structure = Experiment.build(load_config(EXPERIMENT), ('structure',)).structure
    assert structure is not None  # built: 'structure' is among the parts
    builder = structure.builder
    image = torch.rand(1, 3, 256, 320, generator=torch.Generator().manual_seed(0)) - 0.5
    maps = {}
    for device in ('cpu', 'cuda'):
        model = load_trained_model(builder, checkpoint, device, log=lambda message: None)
        with torch.no_grad():
            maps[device] = model(image.to(device), training=False).float().cpu()
    difference = float((maps['cpu'] - maps['cuda']).abs().max())
    ok = difference <= 1e-3 and bool(torch.isfinite(maps['cpu']).all())
    print(f"{'ok' if ok else 'FAILED'}: max abs difference {difference:.2e} between the CPU and GPU maps")
    return 0 if ok else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default=os.environ.get('OUT') or 'gpu_check_out')
    parser.add_argument('--cpu', action='store_true', help='dry run on this machine: the stages that need no GPU')
    parser.add_argument('--budget', type=float, default=450.0, help='seconds for the whole check (default 450)')
    parser.add_argument('--python', default=sys.executable, help='the interpreter the stages run with')
    parser.add_argument('--compare-devices', dest='compare_devices', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.compare_devices:
        return compare_devices(args.compare_devices)
    os.makedirs(args.out, exist_ok=True)
    check = Check(os.path.abspath(args.out), args.cpu, args.budget, args.python)
    os.makedirs(check.work, exist_ok=True)
    check.env['PYTHONPATH'] = ROOT + os.pathsep + check.env.get('PYTHONPATH', '')
    failures = 0
    for name, stage in STAGES:
        start = time.perf_counter()
        if check.left() < 10:
            check.record(name, 'skipped', 0.0, 'the time budget is spent')
            failures += 1
            continue
        try:
            status, summary = stage(check)
        except Exception as error:  # a broken stage is reported, the others still run
            status, summary = 'FAILED', f'{type(error).__name__}: {error}'
        check.record(name, status, time.perf_counter() - start, summary.replace('|', '/'))
        print(f'[gpu_check] {name}: {status} ({time.perf_counter() - start:.0f} s) {summary}', flush=True)
        failures += status == 'FAILED'
    print(f'[gpu_check] report: {os.path.join(check.out, "report.md")}')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
