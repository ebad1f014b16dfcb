"""End-to-end inference speed (read + resize + normalise, network, post-processing): PyTorch and onnxruntime on
the CPU, or ``TextDetector.detect_many`` on a device with batches and worker threads.

Without ``--device`` (the README's CPU table): PyTorch and onnxruntime, sequential and pipelined (data
preparation and post-processing in their own threads while the network runs the next image), deformable
ResNet-18 DBNet at a 736 short side on generated synthetic scene-text images. Random-init weights (speed does
not depend on the values, but a random map gives more contours to post-process than a trained one).

With ``--device cuda`` (or ``cpu``): ``TextDetector.detect_many`` on a folder of generated 1280x720 JPEGs
(ic15_resnet18_deform_thre.yaml, random-init weights), per precision: the sequential batch-1 pass (latency;
data / forward / post-processing per image), the sequential pass at ``--batch`` (where the time goes at that
batch), the pipelined pass at ``--batch`` with ``--workers`` threads (images/s end to end), and on CUDA the same
with CUDA graphs; each pass's detections are checked against the pass it should equal. A random-init network's
map is noise (tens of thousands of contours, 0.3-0.7 s of post-processing per image), so by default
(``--maps text``) the post-processing runs on a text-like map per image (60 regions, as the post-processing
benchmark) instead of the network's map; the network still runs on every image (``--maps network``: its own map).
Prints a Markdown table of medians after warm-up and returns the rows.
Run: ``python -m benchmarks.bench_inference [--images N] [--repeats N] [--short_side 736]`` or
``python -m benchmarks.bench_inference --device cuda --batch 16 --images 64 [--quick]``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from benchmarks.common import (Budget, error_text, gpu_description, machine, print_table, release_cuda_memory,
                               resolve_device)
from inference.engine import InferenceEngine, StageTimer
from inference.runners import OnnxRunner, TorchRunner
from inference.preprocess import prepare_image
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


DEMO_EXPERIMENT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments',
                               'seg_detector', 'synthetic_resnet18_deform_thre.yaml')
# the paper's demo model trained by `make demo DEMO_ARGS="--experiment <DEMO_EXPERIMENT>"` (make demo's default run,
# workspace/synthetic_demo, is the plain ResNet-18 budget model since 2026-12-07: its weights do not fit this one)
DEMO_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'workspace',
                               'synthetic_demo_resnet18_deform_thre', 'model', 'final')


def cpu_model(checkpoint: Optional[str]) -> Tuple[Any, str]:
    """The deformable ResNet-18 DBNet: the paper's demo model's trained weights when they exist (a trained model's
    map has the contours of the text, as in use), else random weights (their map is noise: many more contours)."""
    if checkpoint and os.path.isfile(checkpoint):
        from concern.config import load_config
        from structure.weights import load_trained_model
        from experiment import Experiment
        structure = Experiment.build(load_config(DEMO_EXPERIMENT), ('structure',)).structure
        assert structure is not None  # built: 'structure' is among the parts
        model = load_trained_model(structure.builder, checkpoint, torch.device('cpu'))
        return model, f'trained weights {os.path.relpath(checkpoint)}'
    torch.manual_seed(0)
    model = SegDetectorModel('deformable_resnet18', 'SegDetector', decoder_args={'adaptive': True, 'k': 50}).eval()
    return model, 'random weights (no trained demo model found)'


def main(images: int = 6, repeats: int = 3, warmup: int = 2, short_side: int = 736,
         checkpoint: Optional[str] = DEMO_CHECKPOINT, onnx: bool = True) -> List[Dict[str, str]]:
    """The CPU table: 1280x720 JPEGs end to end (read, resize, normalise, forward, post-process) per backend."""
    import copy
    from inference.runners import resolve_precision
    model, weights = cpu_model(checkpoint)
    representer = SegDetectorRepresenter(thresh=0.3, box_thresh=0.7, max_candidates=1000)
    auto_precision, reason = resolve_precision('cpu')
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        paths = write_jpegs(directory, images, 1280, 720, unique=images)
        example = next(batches(paths[:1], short_side))['image']
        size = example.shape[2:]
        runners: Dict[str, Any] = {
            f'PyTorch auto -> {auto_precision}, channels-last': TorchRunner(copy.deepcopy(model), precision='auto',
                                                                            channels_last=True),
            'PyTorch fp32 NCHW': TorchRunner(copy.deepcopy(model)),
            'PyTorch fp32 channels-last': TorchRunner(copy.deepcopy(model), channels_last=True)}
        if auto_precision == 'fp32':
            # the auto row is this runner; bf16 is not timed where it is emulated (several times slower)
            del runners['PyTorch fp32 channels-last']
        if onnx:
            import convert_to_onnx
            onnx_path = os.path.join(directory, 'model.onnx')
            convert_to_onnx.export(copy.deepcopy(model), onnx_path, example)
            runners['onnxruntime fp32'] = OnnxRunner(onnx_path, threads=torch.get_num_threads())
        for name, runner in runners.items():
            engine = InferenceEngine(runner, representer)
            for pipelined in (False, True):
                result = timed(engine, paths, short_side, pipelined, repeats, warmup)
                milliseconds = result['end_to_end_ms']
                rows.append({'backend': name, 'mode': 'pipelined' if pipelined else 'sequential',
                             'data ms': f"{result['data_ms']:.1f}" if 'data_ms' in result else '-',
                             'forward ms': f"{result['forward_ms']:.1f}" if 'forward_ms' in result else '-',
                             'post ms': f"{result['postprocess_ms']:.1f}" if 'postprocess_ms' in result else '-',
                             'end-to-end ms': f'{milliseconds:.1f}', 'images/s': f'{1e3 / milliseconds:.2f}'})
                print(rows[-1], flush=True)
    print(f'\n{machine()}' + (f', onnxruntime {runners["onnxruntime fp32"].version}' if onnx else ''))
    print(f'deformable_resnet18 DBNet ({weights}), {images} generated 1280x720 JPEGs, input {size[0]}x{size[1]} '
          f'(short side {short_side}), batch 1, CPU; end to end = read + resize + normalise + forward + '
          f'post-processing per image; medians of {repeats} passes after {warmup} warm-up images')
    print(f'precision auto: {auto_precision} ({reason})')
    print('issue 16 target: >= 2.5 images/s end to end at short side 736 on 2 cores (fp32 or bf16, picked '
          'automatically)\n')
    print_table(rows)
    return rows


# ---------------------------------------------------------------------------------------------- device mode
EXPERIMENT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments', 'seg_detector',
                          'ic15_resnet18_deform_thre.yaml')


def write_jpegs(directory: str, count: int, width: int, height: int, unique: int) -> List[str]:
    """``count`` JPEGs of width x height: ``unique`` generated synthetic scenes (resized to that size), repeated.
    Generated one after the other: the scenes share FreeType fonts, which are not to be used by two threads."""
    import cv2
    from data.synthetic import FontBank, find_fonts, generate_image
    fonts = FontBank(find_fonts('builtin'))
    scenes = []
    for index in range(max(1, min(unique, count))):
        image, _ = generate_image(np.random.default_rng(index), fonts, max(width, height))
        scenes.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
    paths = []
    for index in range(count):
        paths.append(os.path.join(directory, f'image_{index:04d}.jpg'))
        cv2.imwrite(paths[-1], scenes[index % len(scenes)], [cv2.IMWRITE_JPEG_QUALITY, 95])
    return paths


def text_postprocess(representer: Any, maps: Dict[str, np.ndarray]) -> Callable[[Any, np.ndarray], Any]:
    """Post-processing of the text-like map of each image (by file name) instead of the network's map."""
    def postprocess(batch: Any, prob: np.ndarray) -> Any:
        names = batch['filename']
        stacked = maps[names[0]][None] if len(names) == 1 else np.stack([maps[name] for name in names])
        return representer.represent(batch, stacked)
    return postprocess


def summary(results: Sequence[Any]) -> List[Tuple[Any, ...]]:
    """What must be identical between two passes: per image the source, polygons, scores and map digest."""
    return [(r.source, tuple(p.tobytes() for p in r.polygons), tuple(r.scores),
             hashlib.sha1(np.ascontiguousarray(r.probability).tobytes()).hexdigest()) for r in results]


def compare(first: Sequence[Any], second: Sequence[Any]) -> str:
    """'yes' when detections and maps are identical; else what differs (detections, largest map difference)."""
    a, b = summary(first), summary(second)
    if a == b:
        return 'yes'
    same_detections = [x[:3] for x in a] == [y[:3] for y in b]
    difference = max(float(np.abs(x.probability.astype(np.float64) - y.probability).max())
                     for x, y in zip(first, second)) if len(first) == len(second) else float('nan')
    return (f"{'detections yes' if same_detections else 'detections no'}, maps differ by up to {difference:.1e}")


def device_main(args: argparse.Namespace) -> List[Dict[str, str]]:
    import torch
    from inference.detector import TextDetector
    from inference.engine import InferenceEngine
    from data.input_size import DEFAULT_MAX_LONG_SIDE as MAX_LONG_SIDE
    from structure.representers.reference import random_probability_map
    device = resolve_device(args.device)
    cuda = device.type == 'cuda'
    quick = args.quick
    if cuda:
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
        torch.backends.cudnn.deterministic = args.cudnn_deterministic
    default_precisions = ('fp16,fp32' if quick else 'fp16,bf16,fp32') if cuda else 'fp32'
    precisions = [name.strip() for name in (args.precisions or default_precisions).split(',') if name.strip()]
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    batch = args.batch
    repeats = args.repeats if args.repeats is not None else (1 if quick else 3)
    graphs = cuda and not args.no_graphs
    channels_last = not args.no_channels_last
    width, height = (int(v) for v in args.image_size.lower().split('x'))
    budget = Budget(args.time_budget if args.time_budget is not None else (45.0 if quick and cuda else None))
    input_size = InputSize('short_side', args.short_side, MAX_LONG_SIDE)(height, width)
    rows: List[Dict[str, str]] = []
    skipped: List[str] = []
    best: Dict[str, Tuple[float, str]] = {}
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        paths = write_jpegs(directory, args.images, width, height, args.unique)
        maps: Dict[str, np.ndarray] = {}
        if args.maps == 'text':
            unique = [random_probability_map(input_size[0], input_size[1], args.regions, seed=seed)
                      for seed in range(min(args.unique, len(paths)))]
            maps = {path: unique[index % len(unique)] for index, path in enumerate(paths)}
        torch.manual_seed(0)
        checkpoint = os.path.join(directory, 'model.pth')
        torch.save(SegDetectorModel('deformable_resnet18', 'SegDetector',
                                    decoder_args={'adaptive': True, 'k': 50}).state_dict(), checkpoint)
        print(f'set-up: {len(paths)} JPEGs ({min(args.unique, len(paths))} distinct scenes), '
              f'{time.perf_counter() - start:.1f} s', flush=True)

        def detector_for(precision: str, cuda_graphs: bool) -> Any:
            detector = TextDetector(EXPERIMENT, checkpoint, device=str(device), precision=precision,
                                    channels_last=channels_last, image_short_side=args.short_side,
                                    log=lambda message: None, cuda_graphs=cuda_graphs)
            if maps:
                detector.engine = InferenceEngine(detector.runner, postprocess=text_postprocess(detector.representer,
                                                                                                maps))
            return detector

        def timed_pass(detector: Any, **options: Any) -> Tuple[Any, List[Any]]:
            timer = StageTimer()
            results = list(detector.detect_many(paths, timer=timer, **options))
            return timer, results

        def add_row(precision: str, name: str, size: int, threads: int, timer: Any, pipelined: bool,
                    identical: str) -> None:
            count = max(timer.images, 1)
            per_image = {stage: 1e3 * timer.seconds[stage] / count for stage in StageTimer.STAGES}
            end_to_end = 1e3 * timer.total / count
            row = {'precision': precision, 'pass': name, 'batch': str(size), 'workers': str(threads),
                   'data ms': f"{per_image['data']:.2f}", 'forward ms': f"{per_image['forward']:.2f}",
                   'post ms': f"{per_image['postprocess']:.2f}", 'end-to-end ms / image': f'{end_to_end:.2f}',
                   'images / s': f'{1e3 / end_to_end:.1f}',
                   'waits data / post ms': (f"{1e3 * timer.waits['data'] / count:.2f} / "
                                            f"{1e3 * timer.waits['postprocess'] / count:.2f}" if pipelined else '-'),
                   'identical': identical}
            rows.append(row)
            print(row, flush=True)
            key = 'latency' if size == 1 and not pipelined else 'throughput' if size > 1 and pipelined else None
            if key == 'latency' and (key not in best or end_to_end < best[key][0]):
                best[key] = (end_to_end, f'{precision} {name}')
            if key == 'throughput' and (key not in best or 1e3 / end_to_end > best[key][0]):
                best[key] = (1e3 / end_to_end, f'{precision} {name}')

        def warm_up(detector: Any) -> None:
            """Every input shape of the timed passes once (cuDNN autotuning, CUDA-graph capture)."""
            list(detector.detect_many(paths[:2]))
            list(detector.detect_many(paths[:batch], batch_size=batch))
            if len(paths) % batch:
                list(detector.detect_many(paths[:len(paths) % batch], batch_size=batch))

        def median_pipelined(detector: Any) -> Tuple[Any, List[Any]]:
            runs = [timed_pass(detector, batch_size=batch, workers=workers, pipelined=True) for _ in range(repeats)]
            runs.sort(key=lambda run: run[0].total)
            return runs[len(runs) // 2]

        for precision in precisions:
            if budget.exhausted():
                skipped.append(precision)
                continue
            try:
                detector = detector_for(precision, False)
                warm_up(detector)
                timer, single = timed_pass(detector)
                add_row(precision, 'sequential', 1, 0, timer, False, 'reference')
                timer, batched = timed_pass(detector, batch_size=batch)
                add_row(precision, 'sequential', batch, 0, timer, False, 'batch 1: ' + compare(single, batched))
                timer, pipelined = median_pipelined(detector)
                add_row(precision, 'pipelined', batch, workers, timer, True,
                        f'sequential batch {batch}: ' + compare(batched, pipelined))
                del pipelined, detector
                release_cuda_memory()
                if graphs and not budget.exhausted():
                    detector = detector_for(precision, True)
                    warm_up(detector)
                    timer, results = timed_pass(detector)
                    add_row(precision, 'sequential, CUDA graphs', 1, 0, timer, False,
                            'eager: ' + compare(single, results))
                    timer, results = median_pipelined(detector)
                    add_row(precision, 'pipelined, CUDA graphs', batch, workers, timer, True,
                            'eager: ' + compare(batched, results))
                    del results, detector
                del single, batched
            except Exception as error:  # noqa: BLE001 - one precision failing must not lose the others
                rows.append({'precision': precision, 'pass': 'error', 'identical': error_text(error)})
                print(rows[-1], flush=True)
            release_cuda_memory()
    print(f"\nTextDetector.detect_many, deformable ResNet-18 DBNet (random-init weights), {len(paths)} generated "
          f"{width}x{height} JPEGs, input {input_size[0]}x{input_size[1]} (short side {args.short_side}), device "
          f"{device}{', channels-last' if channels_last else ''}; post-processing of "
          + (f'a text-like map per image ({args.regions} regions; so the detections depend on the image only and '
             '"identical" checks the network through its maps)' if maps else "the network's map")
          + f'; pipelined: median of {repeats} pass(es). Per image: data = read + decode + resize + normalise '
          '(pipelined: producer busy time), forward = network incl. copies, post = post-processing (pipelined: summed '
          'over its threads); waits = the main thread waiting for data / post-processing. '
          f'{machine()}' + (f'; {gpu_description(device)}' if cuda else '') + '\n')
    print_table(rows)
    if 'throughput' in best or 'latency' in best:
        print()
        if 'throughput' in best:
            print(f"best throughput: {best['throughput'][0]:.1f} images/s ({best['throughput'][1]}, batch {batch}); "
                  'issue 17 target on an H200: >= 300')
        if 'latency' in best:
            print(f"best batch-1 latency: {best['latency'][0]:.2f} ms ({best['latency'][1]}); "
                  'issue 17 target on an H200: <= 10 ms')
    if skipped:
        print(f'\nskipped (time budget of {budget.seconds:.0f} s spent): ' + ', '.join(skipped))
    return rows


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=None, help='images (CPU table: 4; device mode: 64)')
    parser.add_argument('--repeats', type=int, default=None, help='CPU table: 3; device mode: pipelined passes (3)')
    parser.add_argument('--warmup', type=int, default=2, help='CPU table: warm-up iterations')
    parser.add_argument('--short_side', type=int, default=736)
    parser.add_argument('--device', default=None,
                        help='cuda (or cpu): detect_many with batches and workers on that device; '
                             'absent: the CPU table')
    parser.add_argument('--quick', action='store_true',
                        help='device mode: one pipelined pass, fp16 and fp32 only (CUDA), a 45 s budget on CUDA')
    parser.add_argument('--batch', type=int, default=16, help='device mode: batch size')
    parser.add_argument('--workers', type=int, default=None, help='device mode: data / post threads (CPU count)')
    parser.add_argument('--precisions', default=None, help='device mode: some of fp16,bf16,fp32')
    parser.add_argument('--image_size', default='1280x720', help='device mode: WxH of the generated JPEGs')
    parser.add_argument('--unique', type=int, default=8, help='device mode: distinct generated scenes')
    parser.add_argument('--maps', default='text', choices=('text', 'network'),
                        help="device mode: post-process a text-like map per image (default) or the network's map")
    parser.add_argument('--regions', type=int, default=60, help='device mode: text regions per text-like map')
    parser.add_argument('--no_graphs', action='store_true', help='device mode: no CUDA-graph passes')
    parser.add_argument('--no_channels_last', action='store_true', help='device mode: contiguous NCHW')
    parser.add_argument('--no_cudnn_benchmark', action='store_true')
    parser.add_argument('--cudnn_deterministic', action='store_true',
                        help='device mode: deterministic cuDNN kernels (if "identical" says no without it)')
    parser.add_argument('--time_budget', type=float, default=None,
                        help='device mode: seconds after which the remaining precisions are skipped')
    return parser.parse_args(argv)


if __name__ == '__main__':
    arguments = parse_args()
    if arguments.device is not None:
        arguments.images = 64 if arguments.images is None else arguments.images
        device_main(arguments)
    else:
        main(6 if arguments.images is None else arguments.images, 3 if arguments.repeats is None else arguments.repeats,
             arguments.warmup, arguments.short_side)
