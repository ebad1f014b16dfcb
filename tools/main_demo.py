"""The main job behind ``make demo``: synthetic data -> training from scratch -> evaluation -> pictures.

Every stage reuses what an earlier run left (the data set, the trained model) and says so; delete
``datasets/synthetic`` or ``workspace/synthetic_demo`` to redo a stage. ``--quick`` runs the same pipeline
at a reduced size (the slow test uses it). ``--experiment`` runs another experiment file through the same
pipeline (e.g. the paper's deformable ResNet-18, ``PAPER_EXPERIMENT``, which builds the deformable convolution op
first); its run and record names carry the file's stem.

Every run writes its measured figures (machine, instruction set, precision, seed, time per stage, P/R/F per mode)
to ``<result_dir>/figures.json``; ``--record docs/demo_runs`` keeps a copy there, from which
``python -m tools.demo_figures`` writes the README's table (no figure in it is typed by hand).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from concern.files import atomic_write

if TYPE_CHECKING:
    from experiment import Experiment

# the recipe that fits 20 minutes on a 2-core AVX2 CPU in fp32 (a plain ResNet-18 DBNet; the paper's deformable one
# does not fit there: docs/training.md, issue 24); the paper's model: --experiment <the deformable file>
EXPERIMENT = 'experiments/seg_detector/synthetic_resnet18_thre_budget.yaml'
PAPER_EXPERIMENT = 'experiments/seg_detector/synthetic_resnet18_deform_thre.yaml'
# held-out test images: 300 measure a model's F to about +-0.005 (one standard deviation; 100 gave +-0.009, which
# the seed spread the issue bounds, 0.02, cannot be told from: docs/training.md)
TEST_IMAGES = 300
README_PICTURE = 'docs/images/demo_detection.jpg'
TRAINING_FIGURES = 'demo_training.json'  # beside the model: the training time, kept for runs that reuse the model


def _say(message: str) -> None:
    print(f'[demo] {message}', flush=True)


def uses_deformable_op(experiment: 'Experiment') -> bool:
    """Whether ``experiment``'s model (built on the meta device without pretrained weights: nothing is allocated,
    loaded or downloaded) has deformable convolutions, i.e. needs the op of assets/ops/dcn for its speed."""
    import torch
    from assets.ops.dcn.modules import DeformConv, ModulatedDeformConv
    from structure.weights import build_without_pretrained
    assert experiment.structure is not None  # built: 'structure' is among the parts
    with torch.device('meta'):
        model = build_without_pretrained(experiment.structure.builder)
    return any(isinstance(module, (DeformConv, ModulatedDeformConv)) for module in model.modules())


def needs_deformable_op(experiment_path: str) -> Optional[bool]:
    """``uses_deformable_op`` for the experiment file, decided in a child process; None when the child could not
    tell (the experiment's error then shows where this process builds it). A child, because building the model
    imports assets/ops/dcn, which looks for the compiled extension once per process (``_backend.load_extension``):
    in this process the op must be built before that look, or training would run on torchvision's op beside a
    fresh build (and a stale extension already loaded would be rebuilt in place under it)."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ('import sys\nfrom tools.main_demo import build_evaluation, uses_deformable_op\n'
            'sys.exit(0 if uses_deformable_op(build_evaluation(sys.argv[1], [], ("structure",))) else 3)')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get('PYTHONPATH')])))
    child = subprocess.run([sys.executable, '-c', code, experiment_path], env=env, capture_output=True, text=True)
    if child.returncode in (0, 3):
        return child.returncode == 0
    last = (child.stderr.strip().splitlines() or ['no message'])[-1]
    _say(f'could not tell whether {experiment_path} needs the deformable convolution op ({last})')
    return None


def ensure_op() -> float:
    """Build the deformable convolution op in place (tools/build_op.sh auto: reuses an up-to-date build; CUDA
    kernels too where a GPU is visible); the seconds it took. Call it before anything in this process imports the
    model's modules (``needs_deformable_op``). A failed build is reported and the run goes on with torchvision's op
    (the same results, slower: docs/dcn.md)."""
    import subprocess
    start = time.perf_counter()
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'build_op.sh')
    status = subprocess.call(['bash', script, 'auto'], env=dict(os.environ, PYTHON=sys.executable))
    if status != 0:
        _say('the deformable convolution op did not build: training and evaluation use torchvision\'s op '
             '(the same results, slower)')
    return time.perf_counter() - start


def ensure_dataset(out: str, train: int, test: int, seed: int, test_seed: int, size: int) -> bool:
    """Generate the data set unless ``out`` holds one made with the same arguments; whether it was reused."""
    stamp_path = os.path.join(out, 'generated.json')
    wanted = {'train': train, 'test': test, 'seed': seed, 'test_seed': test_seed, 'size': size}
    if os.path.isfile(stamp_path):
        with open(stamp_path) as stream:
            if json.load(stream) == wanted:
                _say(f'reusing the synthetic data set in {out} ({train} train, {test} test images)')
                return True
    from data import synthetic
    _say(f'generating the synthetic data set in {out} ({train} train, {test} test images, test seed {test_seed})')
    shutil.rmtree(out, ignore_errors=True)
    synthetic.main(['--out', out, '--train', str(train), '--test', str(test), '--seed', str(seed),
                    '--test_seed', str(test_seed), '--size', str(size)])
    with open(stamp_path, 'w') as stream:
        json.dump(wanted, stream)
    return False


def trained_precision(flags: Sequence[str]) -> str:
    """The precision ``train.py`` trains in with these flags on this machine (what ``--amp`` resolves to)."""
    if '--amp' not in flags:
        return 'fp32'
    position = list(flags).index('--amp')
    choice = flags[position + 1] if position + 1 < len(flags) else 'auto'  # --amp takes an optional value
    if choice in ('bf16', 'fp16'):
        return choice
    import torch
    if torch.cuda.is_available():
        return 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
    return 'bf16'


def precision_flags(precision: str = 'auto') -> List[str]:
    """``--amp`` (bf16 autocast) where the CPU runs bf16 natively: there it and channels-last roughly halve a
    training step. On an AVX2-only CPU bf16 is emulated and about 9x slower than fp32, so the demo trains in fp32
    there (concern.device.cpu_bf16_is_native). ``precision`` 'fp32' or 'bf16' forces one (the seed/precision table
    of the README is made that way)."""
    from concern.device import cpu_bf16_is_native
    if precision == 'fp32':
        return []
    if precision == 'bf16':
        return ['--amp', 'bf16']
    if cpu_bf16_is_native():
        return ['--amp']
    import torch
    _say(f'this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bf16: training in fp32 '
         '(slower than the README figure, measured with bf16 on an AVX-512 CPU)')
    return []


def training_stamp(train_args: Sequence[str]) -> Dict[str, object]:
    """What a trained model depends on: the arguments and the compiled experiment (imports, flags and
    --opt applied), so that editing the experiment file retrains instead of reusing a stale model."""
    from tools.cli import apply_train_flags, compile_experiment, train_parser
    from concern.config import dump_config
    config = compile_experiment(train_parser().parse_args(list(train_args)), apply_train_flags)
    return {'train_args': list(train_args),
            'experiment_sha256': hashlib.sha256(dump_config(config).encode('utf-8')).hexdigest()}


def ensure_model(name: str, train_args: List[str], stamp: Dict[str, object], run_args: Sequence[str] = ()
                 ) -> Tuple[str, bool]:
    """Train unless a finished run with the same ``stamp`` (``training_stamp(train_args)``) exists; the path of its
    final checkpoint and whether it was reused. ``run_args`` go to train.py without entering the stamp (how to run,
    not what to train: ``--threads``). A run that trains leaves its time and machine in
    ``demo_training.json`` beside the model."""
    workspace = os.path.join('workspace', name)
    final = os.path.join(workspace, 'model', 'final')
    stamp_path = os.path.join(workspace, 'demo_train_args.json')
    if os.path.isfile(final) and os.path.isfile(stamp_path):
        with open(stamp_path) as stream:
            if json.load(stream) == stamp:
                _say(f'reusing the trained model {final}')
                return final, True
        _say(f'the experiment or its arguments changed since {final} was trained: training again')
    import train
    _say(f'training: python train.py {" ".join(list(train_args) + list(run_args))}')
    shutil.rmtree(workspace, ignore_errors=True)
    start = time.perf_counter()
    cpu_start = time.process_time()
    if train.main(list(train_args) + list(run_args)) != 0:
        raise SystemExit('[demo] training failed')
    seconds = time.perf_counter() - start
    _say(f'training took {seconds:.0f} s')
    if not os.path.isfile(final):
        raise SystemExit(f'[demo] training finished without writing {final}')
    with open(os.path.join(workspace, TRAINING_FIGURES), 'w') as stream:
        json.dump({'seconds': round(seconds, 1), 'process_cpu_seconds': round(time.process_time() - cpu_start, 1),
                   'machine': machine_figures()}, stream)
    with open(stamp_path, 'w') as stream:
        json.dump(stamp, stream)
    return final, False


def evaluation_short_side(experiment: 'Experiment') -> int:
    """The short side in pixels for the pictures of ``experiment`` (built with its 'evaluation' part): the height of
    its evaluation Resize ('height' or 'short_side' rule; the smaller side of a fixed size). demo.py knows only the
    short-side rule, so a landscape test image is drawn at exactly the evaluated input and a portrait one (about
    half of the synthetic test split) at a larger one: its width, not its height, becomes this value. ValueError
    when no evaluation loader resizes to a size in pixels."""
    from data.processes.augment_data import AugmentDetectionData
    assert experiment.evaluation is not None  # built: 'evaluation' is among the parts
    for loader in experiment.evaluation.data_loaders.values():
        for process in getattr(loader.dataset, 'processes', []):
            size = getattr(process, 'input_size', None)
            if isinstance(process, AugmentDetectionData) and size is not None:
                if size.mode in ('height', 'short_side'):
                    return int(size.size[0])
                if size.mode == 'fixed':
                    return int(min(size.size))
    raise ValueError('evaluation: expected a loader whose AugmentDetectionData resizes to a size in pixels '
                     "(only_resize with a 'height', or short_side)")


def build_evaluation(experiment_path: str, opts: Sequence[str], parts: Sequence[str] = ('structure', 'evaluation')
                     ) -> 'Experiment':
    """``experiment_path`` with the ``--opt`` overrides ``opts`` applied, built with ``parts``."""
    from concern.config import apply_overrides, load_config
    from experiment import Experiment
    config = load_config(experiment_path)
    apply_overrides(config, opts)
    return Experiment.build(config, parts)


def evaluate(checkpoint: str, opts: Sequence[str], threads: str = 'auto', experiment_path: str = EXPERIMENT
             ) -> Dict[str, Dict[str, float]]:
    """P/R/F on the held-out test split in box and polygon mode, running the network once per image: per mode
    ``{'precision', 'recall', 'fmeasure', 'box_thresh', 'images'}`` (images: how many were measured)."""
    from concern.device import select_device
    from inference.evaluation import evaluate_on_dataset
    from inference.runners import TorchRunner
    from structure.measurers import DetectionEvaluator
    from structure.weights import load_trained_model

    experiment = build_evaluation(experiment_path, opts)
    assert experiment.structure is not None  # built: 'structure' is among the parts
    device = select_device(None)
    model = load_trained_model(experiment.structure.builder, checkpoint, device)
    representer, measurer = experiment.structure.representer, experiment.structure.measurer
    # one evaluator per mode, each at the representer's threshold of its mode (box_thresh_for), fed from the same
    # forward pass
    evaluators = {mode: DetectionEvaluator(representer, measurer, is_output_polygon=polygon)
                  for mode, polygon in (('box', False), ('polygon', True))}
    runner = TorchRunner(model, device, threads=threads)
    images = 0
    start = time.perf_counter()
    for evaluator in evaluators.values():  # once: the loaders' images all count
        evaluator.reset()
    for loader in experiment.evaluation.data_loaders.values():
        images += evaluate_on_dataset(runner, loader, list(evaluators.values()), reset=False).images
    reports = {mode: evaluator.evaluate() for mode, evaluator in evaluators.items()}
    # each mode's P/R/F and the threshold it was measured at (the record says it; the experiment's version too)
    results = {mode: {key: report[key] for key in ('precision', 'recall', 'fmeasure', 'box_thresh', 'images')}
               for mode, report in reports.items()}
    skipped = reports['box']['skipped']
    _say(f'evaluated {images} held-out test images in {time.perf_counter() - start:.0f} s'
         + (f' ({len(skipped)} unusable skipped: {"; ".join(skipped)})' if skipped else ''))
    for mode, metrics in results.items():
        _say(f"{mode:7s} mode: precision {metrics['precision']:.3f}  recall {metrics['recall']:.3f}  "
             f"F-measure {metrics['fmeasure']:.3f}  (box_thresh {metrics['box_thresh']:g})")
    return results


def draw(checkpoint: str, data_dir: str, result_dir: str, count: int, opts: Sequence[str],
         readme_picture: Optional[str], threads: str = 'auto', experiment_path: str = EXPERIMENT,
         short_side: int = 384) -> None:
    """Detections drawn (polygon mode) on the first ``count`` test images, the network input's short side at
    ``short_side`` pixels (main() passes the experiment's evaluation size)."""
    import cv2
    import demo
    with open(os.path.join(data_dir, 'test_list.txt')) as stream:
        names = [line.strip() for line in stream if line.strip()][:count]
    picked = os.path.join(result_dir, 'inputs')
    shutil.rmtree(picked, ignore_errors=True)  # only the copies this function made; results are overwritten
    os.makedirs(picked)
    for name in names:
        shutil.copy(os.path.join(data_dir, 'test_images', name), picked)
    args = [experiment_path, '--resume', checkpoint, '--image_path', picked, '--result_dir', result_dir,
            '--visualize', '--polygon', '--image_short_side', str(short_side), '--threads', threads]
    if opts:
        args += ['--opt', *opts]
    if demo.main(args) != 0:
        raise SystemExit('[demo] demo.py failed')
    first = os.path.join(result_dir, os.path.splitext(names[0])[0] + '.jpg')
    from data.image_io import read_image
    if readme_picture:
        picture = read_image(first, orientation='stored')
        scale = 480 / max(picture.shape[:2])
        small = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        os.makedirs(os.path.dirname(readme_picture), exist_ok=True)
        cv2.imwrite(readme_picture, small, [cv2.IMWRITE_JPEG_QUALITY, 85])
    _say(f'detections drawn on {len(names)} test images: {os.path.abspath(result_dir)}/*.jpg'
         + (f' (README picture: {readme_picture})' if readme_picture else ''))


def machine_figures() -> Dict[str, object]:
    """What the figures were measured on: CPU model, cores, torch's kernel capability and the vector extensions
    the CPU reports, whether bf16 is native, the torch version and thread count, the GPU if any."""
    import platform
    import torch
    from benchmarks.common import cpu_flags, cpu_model
    from concern.device import cpu_bf16_is_native
    return {'cpu': cpu_model(), 'cpus': os.cpu_count(), 'isa': torch.backends.cpu.get_cpu_capability(),
            'cpu_flags': cpu_flags(), 'bf16_native': cpu_bf16_is_native(), 'torch': torch.__version__,
            'torch_threads': torch.get_num_threads(), 'python': platform.python_version(),
            'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            'isa_caps': {key: os.environ[key] for key in ('ATEN_CPU_CAPABILITY', 'ONEDNN_MAX_CPU_ISA',
                                                          'DCN_CPU_CAPABILITY', 'MKL_ENABLE_INSTRUCTIONS')
                         if os.environ.get(key)}}


def git_commit() -> Optional[str]:
    import subprocess
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def normalise_experiment_path(path: str) -> str:
    """``path`` normalised, relative to the working directory (the checkout) when it lies inside it, so that
    ``./x.yaml``, ``x.yaml`` and an absolute path to it name the same run and no record holds a local path."""
    absolute = os.path.abspath(path)
    inside = os.path.commonpath([absolute, os.getcwd()]) == os.getcwd()
    return os.path.relpath(absolute) if inside else absolute


def experiment_suffix(experiment_path: str) -> str:
    """The run-name and record-name part of an experiment: '' for the demo's, else '_' and the file's stem without
    'synthetic_' (two files of one stem in different folders share it: give ``--name`` to keep their runs apart)."""
    if os.path.normpath(experiment_path) == os.path.normpath(EXPERIMENT):
        return ''
    stem = os.path.splitext(os.path.basename(experiment_path))[0]
    return '_' + (stem[len('synthetic_'):] if stem.startswith('synthetic_') else stem)


def write_figures(path: str, figures: Dict[str, object], record: Optional[str]) -> None:
    """``figures`` as JSON at ``path`` (written whole, then renamed); with ``record`` a copy in that directory named
    by ``record_name`` (what tools.demo_figures renders into the README)."""
    text = json.dumps(figures, indent=1, sort_keys=True) + '\n'
    targets = [path] + ([os.path.join(record, record_name(figures))] if record else [])
    for target in targets:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        atomic_write(target, text)
    _say(f'figures written to {" and ".join(targets)}')


def record_name(figures: Dict[str, object]) -> str:
    """``<YYYYMMDDhhmm>_<cpu>_<isa>[<experiment suffix>]_<precision>_seed<N>.json`` for a figure record."""
    machine = figures['machine']
    assert isinstance(machine, dict)
    import re
    cpu = re.sub(r'[^a-z0-9]+', '-', str(machine['cpu']).lower()).strip('-')[:40] or 'cpu'
    stamp = re.sub(r'[^0-9]', '', str(figures['date']))[:12]  # YYYYMMDDhhmm
    experiment = str(figures.get('experiment') or EXPERIMENT)
    return (f"{stamp}_{cpu}_{str(machine['isa']).lower()}{experiment_suffix(experiment)}_{figures['precision']}"
            f"_seed{figures['seed']}.json")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='reduced size, for the slow test')
    parser.add_argument('--data_dir', default='datasets/synthetic')
    parser.add_argument('--experiment', default=EXPERIMENT,
                        help=f'the experiment to train and evaluate (default {EXPERIMENT}, the recipe that fits 20 '
                             f'minutes on a 2-core AVX2 CPU in fp32; e.g. {PAPER_EXPERIMENT}, the paper\'s deformable '
                             'model, slower: README, docs/training.md)')
    parser.add_argument('--name', default=None,
                        help='run name (default synthetic_demo, with _<experiment> for another experiment and '
                             '_seedN / _fp32 / _bf16 for other choices)')
    parser.add_argument('--result_dir', default='demo_results')
    parser.add_argument('--seed', type=int, default=0, help='training seed (the data set is the same for all)')
    parser.add_argument('--precision', choices=('auto', 'fp32', 'bf16'), default='auto',
                        help='auto (default): bf16 where the CPU runs it natively, else fp32')
    parser.add_argument('--setup_seconds', type=float, default=None,
                        help='time the set-up took (make demo passes it), recorded with the figures')
    parser.add_argument('--record', default=None, metavar='DIR',
                        help='also keep the figures in DIR (docs/demo_runs: the README table\'s source)')
    parser.add_argument('--threads', default='auto', metavar='auto|N',
                        help='CPU threads for training, evaluation and pictures (concern/threads.py); auto (default) '
                             'uses fewer while another process holds a core')
    args = parser.parse_args(argv)
    from concern.threads import parse_threads
    try:
        parse_threads(args.threads)
    except ValueError as error:
        parser.error(str(error))
    if not os.path.isfile(args.experiment):
        parser.error(f'--experiment {args.experiment}: no such file')
    # one spelling for the run name, the training stamp and the record: relative to the checkout when inside it
    args.experiment = normalise_experiment_path(args.experiment)
    if args.record and args.quick:
        parser.error('--record keeps full-size runs only (the README table); drop --quick')
    import torch
    threads_at_start = torch.get_num_threads()
    start = time.perf_counter()
    stages: Dict[str, Optional[float]] = {'setup': args.setup_seconds}
    if args.quick:
        name = args.name or 'synthetic_demo_quick' + experiment_suffix(args.experiment)
        train_count, test_count, epochs, opts = 16, 4, 1, [
            'train.data_loader.dataset.processes.1.size=[128, 128]', 'train.data_loader.num_workers=0']
    else:
        suffix = (experiment_suffix(args.experiment) + (f'_seed{args.seed}' if args.seed else '')
                  + (f'_{args.precision}' if args.precision != 'auto' else ''))
        train_count, test_count, epochs, name, opts = 600, TEST_IMAGES, None, args.name or 'synthetic_demo' + suffix, []
    data_opts = [f'train.data_loader.dataset.data_dir=[{args.data_dir}]',
                 f'train.data_loader.dataset.data_list=[{args.data_dir}/train_list.txt]',
                 f'evaluation.data_loaders.synthetic.dataset.data_dir=[{args.data_dir}]',
                 f'evaluation.data_loaders.synthetic.dataset.data_list=[{args.data_dir}/test_list.txt]']
    # first of all: the op is built before this process imports the model's modules (needs_deformable_op); the
    # Makefile leaves it to this step, as the default experiment does not need it
    tick = time.perf_counter()
    if needs_deformable_op(args.experiment):
        ensure_op()
    stages['op'] = time.perf_counter() - tick  # the check, and the build when there was one
    tick = time.perf_counter()
    data_reused = ensure_dataset(args.data_dir, train_count, test_count, seed=0, test_seed=1000, size=640)
    stages['data'] = time.perf_counter() - tick
    flags = precision_flags(args.precision)
    train_args = [args.experiment, '--name', name, '--seed', str(args.seed), *flags, '--channels_last',
                  *(['--epochs', str(epochs)] if epochs else []), '--opt', *opts, *data_opts]
    eval_opts = [opt for opt in data_opts if opt.startswith('evaluation.')]
    # before training: an experiment the pictures cannot be sized for fails here, not after the training
    short_side = evaluation_short_side(build_evaluation(args.experiment, eval_opts, ('evaluation',)))
    tick = time.perf_counter()
    # --threads is not part of the training stamp: it changes how long training takes, not the model
    stamp = training_stamp(train_args)
    checkpoint, model_reused = ensure_model(name, train_args, stamp, ['--threads', args.threads])
    stages['training_this_run'] = time.perf_counter() - tick
    training: Dict[str, object] = {}
    training_path = os.path.join('workspace', name, TRAINING_FIGURES)
    if os.path.isfile(training_path):
        with open(training_path) as stream:
            training = json.load(stream)
    stages['training'] = training.get('seconds')  # type: ignore[assignment]
    tick = time.perf_counter()
    results = evaluate(checkpoint, eval_opts, args.threads, args.experiment)
    stages['evaluation'] = time.perf_counter() - tick
    tick = time.perf_counter()
    readme_picture = README_PICTURE if (not args.quick and args.seed == 0 and args.precision == 'auto'
                                        and args.experiment == EXPERIMENT) else None
    draw(checkpoint, args.data_dir, args.result_dir, 2 if args.quick else 6, [], readme_picture, args.threads,
         args.experiment, short_side)
    stages['pictures'] = time.perf_counter() - tick
    stages['total_this_run'] = time.perf_counter() - start + (args.setup_seconds or 0.0)
    import datetime
    figures: Dict[str, object] = {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'commit': git_commit(), 'machine': dict(machine_figures(), torch_threads=threads_at_start),
        'threads': args.threads, 'seed': args.seed, 'precision': trained_precision(flags),
        'device': 'cuda' if torch.cuda.is_available() else 'cpu', 'experiment': args.experiment,
        'quick': bool(args.quick), 'experiment_sha256': stamp['experiment_sha256'],
        'test_images': results['box']['images'],  # the split the F-measures were measured on (README groups by it)
        'data_reused': data_reused, 'model_reused': model_reused,
        'training_machine': training.get('machine'), 'training_cpu_seconds': training.get('process_cpu_seconds'),
        'stages_seconds': {key: None if value is None else round(value, 1) for key, value in stages.items()},
        'results': {mode: {key: round(value, 4) for key, value in metrics.items()}
                    for mode, metrics in results.items()}}
    write_figures(os.path.join(args.result_dir, 'figures.json'), figures, args.record)
    _say(f'done in {time.perf_counter() - start:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
