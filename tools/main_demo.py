"""The main job behind ``make demo``: synthetic data -> training from scratch -> evaluation -> pictures.

Every stage reuses what an earlier run left (the data set, the trained model) and says so; delete
``datasets/synthetic`` or ``workspace/synthetic_demo`` to redo a stage. ``--quick`` runs the same pipeline
at a reduced size (the slow test uses it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from typing import Dict, List, Optional, Sequence

EXPERIMENT = 'experiments/seg_detector/synthetic_resnet18_deform_thre.yaml'
README_PICTURE = 'docs/images/demo_detection.jpg'


def _say(message: str) -> None:
    print(f'[demo] {message}', flush=True)


def ensure_dataset(out: str, train: int, test: int, seed: int, test_seed: int, size: int) -> None:
    stamp_path = os.path.join(out, 'generated.json')
    wanted = {'train': train, 'test': test, 'seed': seed, 'test_seed': test_seed, 'size': size}
    if os.path.isfile(stamp_path):
        with open(stamp_path) as stream:
            if json.load(stream) == wanted:
                _say(f'reusing the synthetic data set in {out} ({train} train, {test} test images)')
                return
    from data import synthetic
    _say(f'generating the synthetic data set in {out} ({train} train, {test} test images, test seed {test_seed})')
    shutil.rmtree(out, ignore_errors=True)
    synthetic.main(['--out', out, '--train', str(train), '--test', str(test), '--seed', str(seed),
                    '--test_seed', str(test_seed), '--size', str(size)])
    with open(stamp_path, 'w') as stream:
        json.dump(wanted, stream)


def precision_flags() -> List[str]:
    """``--amp`` (bf16 autocast) where the CPU runs bf16 natively: there it and channels-last roughly halve a
    training step. On an AVX2-only CPU bf16 is emulated and about 9x slower than fp32, so the demo trains in fp32
    there (concern.device.cpu_bf16_is_native)."""
    from concern.device import cpu_bf16_is_native
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


def ensure_model(name: str, train_args: List[str]) -> str:
    """Train unless a finished run of the same experiment and arguments exists; the path of its final
    checkpoint."""
    workspace = os.path.join('workspace', name)
    final = os.path.join(workspace, 'model', 'final')
    stamp_path = os.path.join(workspace, 'demo_train_args.json')
    stamp = training_stamp(train_args)
    if os.path.isfile(final) and os.path.isfile(stamp_path):
        with open(stamp_path) as stream:
            if json.load(stream) == stamp:
                _say(f'reusing the trained model {final}')
                return final
        _say(f'the experiment or its arguments changed since {final} was trained: training again')
    import train
    _say(f'training: python train.py {" ".join(train_args)}')
    shutil.rmtree(workspace, ignore_errors=True)
    start = time.perf_counter()
    if train.main(train_args) != 0:
        raise SystemExit('[demo] training failed')
    _say(f'training took {time.perf_counter() - start:.0f} s')
    if not os.path.isfile(final):
        raise SystemExit(f'[demo] training finished without writing {final}')
    with open(stamp_path, 'w') as stream:
        json.dump(stamp, stream)
    return final


def evaluate(checkpoint: str, opts: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """P/R/F on the held-out test split in box and polygon mode, running the network once per image."""
    from concern.config import apply_overrides, load_config
    from concern.device import select_device
    from experiment import Experiment
    from inference.evaluation import evaluate_on_dataset
    from inference.runners import TorchRunner
    from structure.measurers import DetectionEvaluator
    from structure.weights import load_trained_model

    config = load_config(EXPERIMENT)
    apply_overrides(config, opts)
    experiment = Experiment.build(config, ('structure', 'evaluation'))
    assert experiment.structure is not None  # built: 'structure' is among the parts
    device = select_device(None)
    model = load_trained_model(experiment.structure.builder, checkpoint, device)
    representer, measurer = experiment.structure.representer, experiment.structure.measurer
    # one evaluator per mode, both at the representer's box_thresh, fed from the same forward pass
    evaluators = {mode: DetectionEvaluator(representer, measurer, is_output_polygon=polygon)
                  for mode, polygon in (('box', False), ('polygon', True))}
    runner = TorchRunner(model, device)
    images = 0
    start = time.perf_counter()
    for evaluator in evaluators.values():  # once: the loaders' images all count
        evaluator.reset()
    for loader in experiment.evaluation.data_loaders.values():
        images += evaluate_on_dataset(runner, loader, list(evaluators.values()), reset=False).images
    reports = {mode: evaluator.evaluate() for mode, evaluator in evaluators.items()}
    results = {mode: {key: report[key] for key in ('precision', 'recall', 'fmeasure')}
               for mode, report in reports.items()}
    skipped = reports['box']['skipped']
    _say(f'evaluated {images} held-out test images in {time.perf_counter() - start:.0f} s'
         + (f' ({len(skipped)} unusable skipped: {"; ".join(skipped)})' if skipped else ''))
    for mode, metrics in results.items():
        _say(f"{mode:7s} mode: precision {metrics['precision']:.3f}  recall {metrics['recall']:.3f}  "
             f"F-measure {metrics['fmeasure']:.3f}")
    return results


def draw(checkpoint: str, data_dir: str, result_dir: str, count: int, opts: Sequence[str],
         readme_picture: Optional[str]) -> None:
    import cv2
    import demo
    with open(os.path.join(data_dir, 'test_list.txt')) as stream:
        names = [line.strip() for line in stream if line.strip()][:count]
    picked = os.path.join(result_dir, 'inputs')
    shutil.rmtree(picked, ignore_errors=True)  # only the copies this function made; results are overwritten
    os.makedirs(picked)
    for name in names:
        shutil.copy(os.path.join(data_dir, 'test_images', name), picked)
    args = [EXPERIMENT, '--resume', checkpoint, '--image_path', picked, '--result_dir', result_dir,
            '--visualize', '--polygon', '--image_short_side', '384']
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='reduced size, for the slow test')
    parser.add_argument('--data_dir', default='datasets/synthetic')
    parser.add_argument('--name', default=None)
    parser.add_argument('--result_dir', default='demo_results')
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.quick:
        train_count, test_count, epochs, name, opts = 16, 4, 1, args.name or 'synthetic_demo_quick', [
            'train.data_loader.dataset.processes.1.size=[128, 128]', 'train.data_loader.num_workers=0']
    else:
        train_count, test_count, epochs, name, opts = 600, 100, None, args.name or 'synthetic_demo', []
    data_opts = [f'train.data_loader.dataset.data_dir=[{args.data_dir}]',
                 f'train.data_loader.dataset.data_list=[{args.data_dir}/train_list.txt]',
                 f'evaluation.data_loaders.synthetic.dataset.data_dir=[{args.data_dir}]',
                 f'evaluation.data_loaders.synthetic.dataset.data_list=[{args.data_dir}/test_list.txt]']
    ensure_dataset(args.data_dir, train_count, test_count, seed=0, test_seed=1000, size=640)
    train_args = [EXPERIMENT, '--name', name, '--seed', '0', *precision_flags(), '--channels_last',
                  *(['--epochs', str(epochs)] if epochs else []), '--opt', *opts, *data_opts]
    checkpoint = ensure_model(name, train_args)
    eval_opts = [opt for opt in data_opts if opt.startswith('evaluation.')]
    evaluate(checkpoint, eval_opts)
    draw(checkpoint, args.data_dir, args.result_dir, 2 if args.quick else 6, [],
         None if args.quick else README_PICTURE)
    _say(f'done in {time.perf_counter() - start:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
