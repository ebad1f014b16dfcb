"""Shared fixtures of the tests/test_inference_*.py files: a tiny synthetic data set, a tiny experiment YAML and a
random-init checkpoint of it."""
from __future__ import annotations

import os
import textwrap
from typing import Tuple

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_synthetic_set(directory: str, test: int = 3, size: int = 128, seed: int = 0) -> str:
    from data.synthetic import main as synthetic_main
    synthetic_main(['--out', directory, '--train', '0', '--test', str(test), '--seed', str(seed),
                    '--size', str(size), '--fonts', 'builtin'])
    return directory


def write_experiment(directory: str, data_dir: str, backbone: str = 'deformable_resnet18', height: int = 96,
                     width: int = 128, box_thresh: float = 0.6, thresh: float = 0.3) -> str:
    """A small evaluation experiment over ``data_dir``'s test split; returns the YAML path."""
    path = os.path.join(directory, f'tiny_{backbone}.yaml')
    text = f"""\
    import:
      - {os.path.join(REPO_ROOT, 'experiments', 'base.yaml')}
    package:
      - decoders.seg_detector_loss
    define:
      - name: test_data
        class: ImageDataset
        data_dir: [{data_dir}]
        data_list: [{os.path.join(data_dir, 'test_list.txt')}]
        is_training: false
        processes:
          - class: AugmentDetectionData
            augmenter_args:
              - ['Resize', {{'width': {width}, 'height': {height}}}]
            only_resize: true
            keep_ratio: false
          - class: MakeICDARData
          - class: MakeSegDetectionData
          - class: NormalizeImage
      - name: Experiment
        class: Experiment
        structure:
          class: Structure
          builder:
            class: Builder
            model: SegDetectorModel
            model_args:
              backbone: {backbone}
              decoder: SegDetector
              decoder_args:
                adaptive: true
                k: 50
          representer:
            class: SegDetectorRepresenter
            thresh: {thresh}
            box_thresh: {box_thresh}
            max_candidates: 1000
          measurer:
            class: QuadMeasurer
          visualizer:
            class: SegDetectorVisualizer
        evaluation:
          class: EvaluationSettings
          data_loaders:
            synthetic:
              class: DataLoader
              dataset: ^test_data
              batch_size: 1
              num_workers: 0
              is_training: false
              collect_fn:
                class: ICDARCollectFN
    """
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(textwrap.dedent(text))
    return path


def tiny_model(backbone: str = 'deformable_resnet18', seed: int = 0) -> torch.nn.Module:
    """A random-init model (seeded). Its probability map is noisy around 0.5, so thresh 0.5 / box_thresh 0.4
    give a handful of detections per synthetic image."""
    from structure.model import SegDetectorModel
    torch.manual_seed(seed)
    model = SegDetectorModel(backbone, 'SegDetector', decoder_args={'adaptive': True, 'k': 50}).eval()
    return model


def save_checkpoint(model: torch.nn.Module, path: str) -> str:
    torch.save(model.state_dict(), path)
    return path


def small_evaluation(directory: str, backbone: str = 'resnet18', test: int = 2, thresh: float = 0.5,
                     box_thresh: float = 0.4) -> Tuple[str, str, str]:
    """Everything eval.py needs, under ``directory``: a synthetic test split of ``test`` 128-px images, an
    evaluation experiment over it (``write_experiment``) and a random checkpoint of ``backbone`` (``tiny_model``).
    Returns (experiment path, checkpoint path, data directory)."""
    data_dir = make_synthetic_set(os.path.join(directory, 'data'), test=test, size=128)
    experiment = write_experiment(directory, data_dir, backbone, thresh=thresh, box_thresh=box_thresh)
    checkpoint = save_checkpoint(tiny_model(backbone), os.path.join(directory, 'model.pth'))
    return experiment, checkpoint, data_dir


def export_tiny_onnx(tmp, test_images: int, output: str, short_side: int = 96) -> dict:
    """A synthetic set of ``test_images`` images under ``tmp``, its experiment and a tiny deformable ResNet-18
    checkpoint, exported with ``convert_to_onnx.main`` (run from the repository root) to ``output``: the paths, the
    command's exit code ('code') and what it printed ('out')."""
    import contextlib
    import io
    import convert_to_onnx
    data_dir = make_synthetic_set(str(tmp / 'data'), test=test_images, size=128)
    experiment = write_experiment(str(tmp), data_dir, 'deformable_resnet18', thresh=0.5, box_thresh=0.4)
    checkpoint = save_checkpoint(tiny_model('deformable_resnet18'), str(tmp / 'model.pth'))
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            code = convert_to_onnx.main([experiment, '--resume', checkpoint, '--output', output,
                                         '--image_short_side', str(short_side)])
    finally:
        os.chdir(cwd)
    return {'tmp': tmp, 'data': data_dir, 'exp': experiment, 'ckpt': checkpoint, 'onnx': output, 'code': code,
            'out': stdout.getvalue()}
