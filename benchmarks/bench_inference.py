"""End-to-end inference speed (read + resize + normalise, network, post-processing) on the CPU: PyTorch and
onnxruntime, sequential and pipelined (data preparation and post-processing in their own threads while the
network runs the next image), deformable ResNet-18 DBNet at a 736 short side on generated synthetic scene-text
images. Random-init weights (speed does not depend on the values, but a random map gives more contours to
post-process than a trained one). Prints a Markdown table of medians after warm-up and returns the rows.
Run: ``python -m benchmarks.bench_inference [--images N] [--repeats N] [--short_side 736]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from typing import Dict, List

import numpy as np
import torch

from benchmarks.common import machine, print_table
from concern.inference import InferenceEngine, OnnxRunner, StageTimer, TorchRunner, prepare_image
from data.image_io import read_image
from data.input_size import DEFAULT_MAX_LONG_SIDE, InputSize
from structure.model import SegDetectorModel
from structure.representers import SegDetectorRepresenter


def write_images(directory: str, count: int, size: int = 1280) -> List[str]:
    import cv2
    from data.synthetic import FontBank, find_fonts, generate_image
    fonts = FontBank(find_fonts('builtin'))
    paths = []
    for index in range(count):
        image, _ = generate_image(np.random.default_rng(index), fonts, size)
        paths.append(os.path.join(directory, f'image_{index}.jpg'))
        cv2.imwrite(paths[-1], image)
    return paths


def batches(paths: List[str], short_side: int):
    for path in paths:
        image = read_image(path, orientation='displayed')  # DataError (names the file) if unreadable
        size = InputSize('short_side', short_side, DEFAULT_MAX_LONG_SIDE)(*image.shape[:2])  # demo.py's rule
        yield {'image': prepare_image(image, size), 'shape': [image.shape[:2]]}


def timed(engine: InferenceEngine, paths: List[str], short_side: int, pipelined: bool, repeats: int,
          warmup: int) -> Dict[str, float]:
    for _ in range(warmup):
        list(engine.run(batches(paths[:1], short_side)))
    runs = []
    for _ in range(repeats):
        timer = StageTimer()
        for _ in engine.run(batches(paths, short_side), pipelined=pipelined, timer=timer):
            pass
        runs.append(timer)
    result = {'end_to_end_ms': statistics.median(1e3 * t.total / t.images for t in runs)}
    if not pipelined:
        for stage in StageTimer.STAGES:
            result[f'{stage}_ms'] = statistics.median(1e3 * t.seconds[stage] / t.images for t in runs)
    return result


def main(images: int = 4, repeats: int = 3, warmup: int = 2, short_side: int = 736) -> List[Dict[str, str]]:
    torch.manual_seed(0)
    model = SegDetectorModel('deformable_resnet18', 'SegDetector', decoder_args={'adaptive': True, 'k': 50}).eval()
    representer = SegDetectorRepresenter(thresh=0.3, box_thresh=0.7, max_candidates=1000)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        paths = write_images(directory, images)
        import convert_to_onnx
        example = next(batches(paths[:1], short_side))['image']
        onnx_path = os.path.join(directory, 'model.onnx')
        convert_to_onnx.export(model, onnx_path, example)
        runners = {'PyTorch fp32': TorchRunner(model), 'PyTorch fp32 channels-last': None,
                   'onnxruntime fp32': OnnxRunner(onnx_path)}
        runners['PyTorch fp32 channels-last'] = TorchRunner(
            SegDetectorModel('deformable_resnet18', 'SegDetector', decoder_args={'adaptive': True, 'k': 50}),
            channels_last=True)
        size = next(batches(paths[:1], short_side))['image'].shape[2:]
        for name, runner in runners.items():
            engine = InferenceEngine(runner, representer)
            for pipelined in (False, True):
                result = timed(engine, paths, short_side, pipelined, repeats, warmup)
                milliseconds = result['end_to_end_ms']
                rows.append({'backend': name, 'mode': 'pipelined' if pipelined else 'sequential',
                             'data ms': f"{result['data_ms']:.1f}" if 'data_ms' in result else '-',
                             'forward ms': f"{result['forward_ms']:.1f}" if 'forward_ms' in result else '-',
                             'post ms': f"{result['postprocess_ms']:.1f}" if 'postprocess_ms' in result else '-',
                             'end-to-end ms': f'{milliseconds:.1f}', 'FPS': f'{1e3 / milliseconds:.2f}'})
    print(f'Machine: {machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads), '
          f'onnxruntime {rows and runners["onnxruntime fp32"].version}')
    print(f'deformable_resnet18 DBNet, {images} synthetic images, input {size[0]}x{size[1]} (short side {short_side}), '
          f'CPU, medians of {repeats} runs after {warmup} warm-up iterations\n')
    print_table(rows)
    return rows


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=4)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--short_side', type=int, default=736)
    arguments = parser.parse_args()
    main(arguments.images, arguments.repeats, arguments.warmup, arguments.short_side)
