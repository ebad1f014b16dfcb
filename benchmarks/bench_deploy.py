"""CPU deployment: our MobileNetV3-Large DBNet (ONNX, float and int8) beside RapidOCR's detector, end to end.

RapidOCR (``rapidocr-onnxruntime``, ``make bench-deps``) ships PP-OCRv4's DB-family detector as an ONNX file inside
its wheel; only its text detector runs here (``rapidocr_onnxruntime.ch_ppocr_det.TextDetector``, no recognition
or direction classifier). Every contender gets the same generated 1280x720 JPEG files (synthetic scene text, as
``bench_inference``), the same input size and the same threads, and is timed per image end to end the way a user
calls it, from the file to the boxes:

* RapidOCR: its own image loader (``rapidocr_onnxruntime.utils.LoadImage``), then its detector (resize,
  normalise, onnxruntime, DB post-processing). ``limit_type: min`` and ``limit_side_len: 736``: a short side under
  736 is scaled up to 736 and each side rounded to the nearest multiple of 32 (a 1280x720 image runs at
  736x1312); ``intra_op_num_threads: 2``. Everything else as its config.yaml ships it.
* ours: ``TextDetector(experiment, onnx=...)`` on the path: ``read_image``, ``InputSize('short_side', 736)``
  (736x1312 for 1280x720: the long side rounded up to 32), normalise, onnxruntime with 2 intra-op threads, the
  experiment's post-processing; the float export and its int8 model (``convert_to_onnx.py --int8``); optionally
  PyTorch fp32 (``--torch``, 2 threads).

The contenders alternate image by image (their order rotating each round), so load from elsewhere on the machine
falls on all alike; figures are medians over images and rounds after a warm-up pass over every image. Ratios are
of those medians, measured in this one run.

Models: ``--onnx`` / ``--int8`` when given; else exported here from ``--checkpoint`` (default: the trained model
of experiments/seg_detector/synthetic_mobilenet_v3_large_thre.yaml in workspace/synthetic_mbv3) and quantized with
calibration images from ``--calibration_dir`` (default datasets/synthetic/train_images); with no checkpoint,
random-init weights (said in the header: their maps are noise, so post-processing is not representative).
Run: ``python -m benchmarks.bench_deploy [--images 8] [--rounds 5] [--torch]``.

Second table (``--part deformable``; ``--part all``, the default, runs both): the deformable convolution in each
deployment form, fp32, batch 1, at 1 and 2 threads: the project's compiled kernel in PyTorch, onnxruntime on the
standard ``DeformConv`` node (``convert_to_onnx.py --deform_conv onnx``), onnxruntime on the portable formulation
(``--deform_conv portable``), and OpenVINO on the portable file when ``import openvino`` works (its ONNX frontend
has no ``DeformConv`` rule). Rows: one 3x3 modulated deformable convolution (stride 1, pad 1, offsets and mask as
inputs, offsets of about a pixel) at each deformable stage of a ResNet-18 DBNet at 736x1280 (128 channels at
92x160, 256 at 46x80, 512 at 23x40), and that whole DBNet forward (deformable ResNet-18, random weights with random
offset convolutions: the time does not depend on the weights). 1-thread rows are timed in process CPU time (load
elsewhere on the machine does not count), 2-thread rows in wall-clock time (CPU time would add the two threads up);
contenders interleaved round by round, medians after a warm-up call.
"""
from __future__ import annotations

import argparse
import functools
import importlib.metadata
import os
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(REPO_ROOT, 'experiments', 'seg_detector', 'synthetic_mobilenet_v3_large_thre.yaml')
CHECKPOINT = os.path.join(REPO_ROOT, 'workspace', 'synthetic_mbv3', 'model', 'final')
CALIBRATION_DIR = os.path.join(REPO_ROOT, 'datasets', 'synthetic', 'train_images')
RAPIDOCR_MISSING = ('RapidOCR skipped: rapidocr_onnxruntime is not installed (a benchmark-only dependency: '
                    '`make bench-deps`, or pip install --no-deps -r requirement-bench.txt)')


# ---------------------------------------------------------------------------------------------- contenders
class Contender:
    """A name, a dtype, the network input size of an image, and ``detect(path) -> number of detections``."""

    def __init__(self, name: str, dtype: str, detect: Callable[[str], int],
                 input_size: Callable[[int, int], Tuple[int, int]]):
        self.name, self.dtype, self.detect, self.input_size = name, dtype, detect, input_size
        self.times: List[float] = []
        self.detections: List[int] = []


def rapidocr_version() -> Optional[str]:
    try:
        return importlib.metadata.version('rapidocr-onnxruntime')
    except importlib.metadata.PackageNotFoundError:
        return None


def rapidocr_contender(short_side: int, threads: int) -> Optional[Contender]:
    """RapidOCR's text detector at ``limit_type: min``, ``limit_side_len: short_side``, ``threads`` intra-op
    threads; None when rapidocr_onnxruntime is not installed."""
    try:
        import rapidocr_onnxruntime
        import yaml
        from rapidocr_onnxruntime.ch_ppocr_det import TextDetector as RapidTextDetector
        from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess
        from rapidocr_onnxruntime.utils import LoadImage
    except ImportError:
        return None
    package = os.path.dirname(rapidocr_onnxruntime.__file__)
    with open(os.path.join(package, 'config.yaml'), encoding='utf-8') as stream:
        config = dict(yaml.safe_load(stream)['Det'])
    config.update(model_path=os.path.join(package, config['model_path']), limit_side_len=short_side,
                  limit_type='min', intra_op_num_threads=threads, use_cuda=False, use_dml=False)
    if not os.path.isfile(config['model_path']):
        raise FileNotFoundError(f'RapidOCR detector model missing from the installed wheel: {config["model_path"]}')
    detector = RapidTextDetector(config)
    load = LoadImage()

    def detect(path: str) -> int:
        boxes, _ = detector(load(path))
        return 0 if boxes is None else len(boxes)

    def input_size(height: int, width: int) -> Tuple[int, int]:
        resized = DetPreProcess(short_side, 'min').resize(np.zeros((height, width, 3), np.uint8))
        return resized.shape[:2]

    name = f'RapidOCR {rapidocr_version()} detector (PP-OCRv4 det, {os.path.basename(config["model_path"])})'
    return Contender(name, 'fp32', detect, input_size)


def our_contender(name: str, dtype: str, experiment: str, short_side: int, threads: int, onnx: Optional[str] = None,
                  checkpoint: Optional[str] = None) -> Contender:
    """``TextDetector`` on the path, onnxruntime (``onnx``) or PyTorch fp32 (``checkpoint``) with ``threads``."""
    from inference.detector import TextDetector
    from inference.engine import InferenceEngine
    from inference.runners import OnnxRunner
    if onnx is not None:
        detector = TextDetector(experiment, onnx=onnx, image_short_side=short_side)
        # TextDetector's runner uses onnxruntime's default thread count: pin it as RapidOCR's
        detector.runner = OnnxRunner(onnx, threads=threads)
        detector.engine = InferenceEngine(detector.runner, detector.representer, is_output_polygon=False)
    else:
        detector = TextDetector(experiment, checkpoint, device='cpu', image_short_side=short_side,
                                log=lambda message: None)

    def detect(path: str) -> int:
        return len(detector.detect(path))

    return Contender(name, dtype, detect, lambda height, width: detector.input_size(height, width))


# ---------------------------------------------------------------------------------------------- models
def prepare_models(args: argparse.Namespace, directory: str) -> Tuple[str, str, Optional[str], str]:
    """(float ONNX, int8 ONNX, checkpoint or None, note on where they came from)."""
    import torch
    from concern.config import load_config
    from experiment import Experiment
    checkpoint = args.checkpoint if args.checkpoint and os.path.isfile(args.checkpoint) else None
    if args.onnx and args.int8:
        return args.onnx, args.int8, checkpoint, f'models {args.onnx}, {args.int8}'
    import convert_to_onnx
    from structure.weights import load_trained_model
    from inference.preprocess import prepare_image
    from inference.onnx_quantize import CalibrationImages, calibration_paths, int8_path, quantize
    from data.input_size import DEFAULT_MAX_LONG_SIDE, InputSize
    structure = Experiment.build(load_config(args.experiment), ('structure',)).structure
    assert structure is not None  # built: 'structure' is among the parts
    if checkpoint:
        model = load_trained_model(structure.builder, checkpoint, 'cpu', log=lambda message: None)
        note = f'trained weights {os.path.relpath(checkpoint, REPO_ROOT)}'
    else:
        torch.manual_seed(0)
        model = structure.builder.build().eval()
        note = ('RANDOM-INIT weights (no checkpoint at --checkpoint: their maps are noise, so the post-processing '
                'times are not representative)')
    size = InputSize('short_side', args.short_side, DEFAULT_MAX_LONG_SIDE)
    float_path = args.onnx or os.path.join(directory, 'model.onnx')
    if not args.onnx:
        convert_to_onnx.export(model, float_path, prepare_image(np.zeros((720, 1280, 3), np.uint8), size(720, 1280)))
    int8 = args.int8 or int8_path(float_path)
    if not args.int8:
        if not os.path.isdir(args.calibration_dir):
            raise SystemExit(f'--calibration_dir {args.calibration_dir}: not a folder (generate the synthetic data '
                             'set with `python -m data.synthetic`, or give --int8 MODEL)')
        paths = calibration_paths(args.calibration_dir, args.calibration_images)
        quantize(float_path, int8, CalibrationImages(paths, input_size=size))
        note += f'; exported and quantized here ({len(paths)} calibration images of {args.calibration_dir})'
    return float_path, int8, checkpoint, note


# ---------------------------------------------------------------------------------------------- timing
def run_rounds(contenders: Sequence[Contender], paths: Sequence[str], rounds: int) -> None:
    """Warm-up (every contender on every image once), then ``rounds`` rounds; in each round every image goes
    through every contender, the contenders' order rotating from round to round."""
    for path in paths:
        for contender in contenders:
            contender.detect(path)
    for index in range(rounds):
        order = list(contenders[index % len(contenders):]) + list(contenders[:index % len(contenders)])
        for path in paths:
            for contender in order:
                start = time.perf_counter()
                count = contender.detect(path)
                contender.times.append(time.perf_counter() - start)
                contender.detections.append(count)


# ---------------------------------------------------------------------------------------------- deformable forms
LAYER_SHAPES = ((128, 92, 160), (256, 46, 80), (512, 23, 40))  # the deformable stages of ResNet-18 at 736x1280
MODEL_SIZE = (736, 1280)
OPENVINO_MISSING = 'not installed'


def one_layer(channels: int):
    """A 3x3 modulated deformable convolution (stride 1, pad 1, bias) taking offsets and mask as inputs."""
    import torch
    from assets.ops.dcn import ModulatedDeformConv

    class OneLayer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = ModulatedDeformConv(channels, channels, 3, padding=1)

        def forward(self, x, offset, mask):
            return self.conv(x, offset, mask)

    return OneLayer().eval()


def ort_session(model: str, threads: int):
    """An onnxruntime CPU session of the file ``model`` with ``threads`` intra-op threads and no inter-op pool."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    return onnxruntime.InferenceSession(model, options, providers=['CPUExecutionProvider'])


def openvino_version() -> Optional[str]:
    try:
        import openvino
    except ImportError:
        return None
    return str(getattr(openvino, '__version__', 'unknown version'))


def openvino_call(model: str, feeds: Dict[str, np.ndarray], threads: int) -> Callable[[], object]:
    """OpenVINO on the CPU with ``threads`` inference threads, reading the (portable) ONNX file ``model``."""
    import openvino
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(model), 'CPU', {'INFERENCE_NUM_THREADS': threads})
    request = compiled.create_infer_request()
    return lambda: request.infer(feeds)


def export_forms(module, inputs: Tuple, names: Sequence[str], directory: str, stem: str,
                 dynamic: bool = False) -> Dict[str, str]:
    """``module`` exported in both forms of the deformable convolution (opset 19): form -> path."""
    import torch
    from assets.ops.dcn.onnx_export import DEFORM_CONV_OPSET, onnx_deform_conv_format
    paths = {}
    for form in ('onnx', 'portable'):
        path = os.path.join(directory, f'{stem}_{form}.onnx')
        with onnx_deform_conv_format(form), torch.no_grad():
            torch.onnx.export(module, inputs, path, input_names=list(names), output_names=['output'],
                              opset_version=DEFORM_CONV_OPSET, do_constant_folding=True, dynamo=False)
        paths[form] = path
    return paths


def deformable_rows(rounds: int, model_rounds: int, directory: str) -> List[Dict[str, str]]:
    """The table of the deformable forms (see the module docstring): one row per (layer or model, threads)."""
    import warnings
    import torch
    from structure.model import SegDetectorModel
    import convert_to_onnx
    runs, why = convert_to_onnx.onnxruntime_runs_deform_conv()
    if not runs:
        raise SystemExit(f'the deformable table needs onnxruntime with DeformConv: {why}')
    openvino = openvino_version()
    cases: List[Tuple[str, Callable[..., object], Dict[str, str], Dict[str, np.ndarray], int]] = []
    generator = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the tracer's warnings and the exporter's deprecation notice
        for channels, height, width in LAYER_SHAPES:
            layer = one_layer(channels)
            x = torch.randn(1, channels, height, width, generator=generator)
            offset = torch.randn(1, 18, height, width, generator=generator)  # about a pixel
            mask = torch.sigmoid(torch.randn(1, 9, height, width, generator=generator))
            paths = export_forms(layer, (x, offset, mask), ('x', 'offset', 'mask'), directory, f'layer{channels}')

            def torch_layer(layer=layer, inputs=(x, offset, mask)):
                with torch.inference_mode():
                    return layer(*inputs)

            feeds = {'x': x.numpy(), 'offset': offset.numpy(), 'mask': mask.numpy()}
            cases.append((f'one layer, {channels} ch @ {height}x{width}', torch_layer, paths, feeds, rounds))
        torch.manual_seed(0)
        model = SegDetectorModel('deformable_resnet18', 'SegDetector', decoder_args={'adaptive': True, 'k': 50})
        model = model.eval()
        with torch.no_grad():
            for name, module in model.named_modules():
                if name.endswith('conv2_offset'):
                    module.weight.normal_(0, 0.03)  # offsets of a pixel or so instead of the zero init
        image = torch.randn(1, 3, *MODEL_SIZE, generator=generator)
        model_paths = {}
        for form in ('onnx', 'portable'):
            model_paths[form] = os.path.join(directory, f'model_{form}.onnx')
            convert_to_onnx.export(model, model_paths[form], image.numpy(), deform_conv=form)

        def torch_model(model=model, image=image):
            with torch.inference_mode():
                return model(image, training=False)

        cases.append((f'whole DBNet, deformable ResNet-18, {MODEL_SIZE[0]}x{MODEL_SIZE[1]}', torch_model, model_paths,
                      {'image': image.numpy()}, model_rounds))
    from benchmarks.common import interleaved_median_ms
    previous_threads = torch.get_num_threads()
    rows = []
    for what, torch_call, paths, feeds, case_rounds in cases:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            calls: Dict[str, Callable[[], object]] = {'torch': torch_call}
            for form, path in paths.items():
                session = ort_session(path, threads)
                calls[form] = functools.partial(session.run, None, feeds)
            if openvino is not None:
                calls['openvino'] = openvino_call(paths['portable'], feeds, threads)
            clock = time.process_time if threads == 1 else time.perf_counter
            medians = interleaved_median_ms(calls, case_rounds, warmup=1, clock=clock, rotate=True)
            rows.append({
                'what': what, 'threads': str(threads),
                'clock': 'process CPU' if threads == 1 else 'wall',
                'PyTorch, project kernel ms': f'{medians["torch"]:.1f}',
                'onnxruntime DeformConv ms': f'{medians["onnx"]:.1f}',
                'onnxruntime portable ms': f'{medians["portable"]:.1f}',
                'OpenVINO portable ms': f'{medians["openvino"]:.1f}' if openvino else OPENVINO_MISSING,
                'DeformConv vs portable': f'{medians["portable"] / medians["onnx"]:.2f}x',
                'DeformConv vs PyTorch': f'{medians["torch"] / medians["onnx"]:.2f}x'})
            print(f'  {what}, {threads} thread(s): ' + ', '.join(f'{k} {v:.1f} ms' for k, v in medians.items()),
                  flush=True)
    torch.set_num_threads(previous_threads)
    return rows


def print_deformable(args: argparse.Namespace) -> List[Dict[str, str]]:
    import onnxruntime
    import torch
    from benchmarks.common import machine, print_table
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix='bench-deploy-dcn-') as directory:
        rows = deformable_rows(args.dcn_rounds, args.model_rounds, directory)
    seconds, load_after = time.perf_counter() - start, os.getloadavg()[0]
    print(f'\nDeformable convolution in each deployment form. Machine: {machine()}; torch CPU capability '
          f'{torch.backends.cpu.get_cpu_capability()}; onnxruntime {onnxruntime.__version__}; OpenVINO '
          f'{openvino_version() or OPENVINO_MISSING}')
    print(f'fp32, batch 1, opset 19. One layer: 3x3 modulated deformable convolution, stride 1, pad 1, offsets '
          f'(about 1 px) and mask as inputs; whole DBNet: random weights, offset convolutions random (the time does '
          f'not depend on the weights), NCHW. 1 thread: torch.set_num_threads(1) / onnxruntime intra-op 1, timed in '
          f'process CPU time; 2 threads: wall-clock time. Contenders interleaved round by round, median of '
          f'{args.dcn_rounds} rounds per layer and {args.model_rounds} per model after a warm-up call ({seconds:.0f} s '
          f'with the exports); 1-minute load average {load_before:.1f} before, {load_after:.1f} after (above the '
          f'{os.cpu_count()} CPUs: other processes ran, which the wall-clock rows include)\n')
    print_table(rows)
    print('\nX vs Y: the median time of Y divided by X\'s, DeformConv being X (above 1: DeformConv is faster)')
    return rows


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, str]]:
    args = parse_args(argv)
    rows: List[Dict[str, str]] = []
    if args.part in ('all', 'rapidocr'):
        rows += rapidocr_part(args)
    if args.part in ('all', 'deformable'):
        rows += print_deformable(args)
    return rows


def rapidocr_part(args: argparse.Namespace) -> List[Dict[str, str]]:
    import onnxruntime
    import torch
    from benchmarks.bench_inference import write_jpegs
    from benchmarks.common import machine, print_table
    torch.set_num_threads(args.threads)
    rows: List[Dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix='bench-deploy-') as directory:
        paths = write_jpegs(directory, args.images, 1280, 720, args.images)
        float_path, int8_path, checkpoint, note = prepare_models(args, directory)
        contenders: List[Contender] = []
        rapid = rapidocr_contender(args.short_side, args.threads)
        if rapid is None:
            print(RAPIDOCR_MISSING)
        else:
            contenders.append(rapid)
        contenders.append(our_contender('ours, MobileNetV3-Large DBNet, onnxruntime', 'fp32', args.experiment,
                                        args.short_side, args.threads, onnx=float_path))
        contenders.append(our_contender('ours, MobileNetV3-Large DBNet, onnxruntime', 'int8 (QDQ: int8 weights, '
                                        'uint8 activations)', args.experiment, args.short_side, args.threads,
                                        onnx=int8_path))
        if args.torch:
            if checkpoint is None:
                print('PyTorch row skipped: no checkpoint (--checkpoint)')
            else:
                contenders.append(our_contender('ours, MobileNetV3-Large DBNet, PyTorch', 'fp32', args.experiment,
                                                args.short_side, args.threads, checkpoint=checkpoint))
        sizes = {contender.name + contender.dtype: contender.input_size(720, 1280) for contender in contenders}
        start = time.perf_counter()
        run_rounds(contenders, paths, args.rounds)
        seconds = time.perf_counter() - start
    reference = next((c for c in contenders if c is rapid), None)
    float_ours = next(c for c in contenders if c.name.endswith('onnxruntime') and c.dtype == 'fp32')
    medians = {id(c): 1e3 * statistics.median(c.times) for c in contenders}
    for contender in contenders:
        milliseconds = medians[id(contender)]
        height, width = sizes[contender.name + contender.dtype]
        rows.append({'detector': contender.name, 'dtype': contender.dtype, 'input': f'{height}x{width}',
                     'end-to-end ms / image': f'{milliseconds:.1f}', 'images / s': f'{1e3 / milliseconds:.2f}',
                     'speed vs RapidOCR': (f'{medians[id(reference)] / milliseconds:.2f}x' if reference is not None
                                           else '-'),
                     'speed vs ours fp32': f'{medians[id(float_ours)] / milliseconds:.2f}x',
                     'detections / image': f'{statistics.mean(contender.detections):.1f}'})
    cpu_capability = torch.backends.cpu.get_cpu_capability()
    print(f'\nMachine: {machine()}; torch CPU capability {cpu_capability}; onnxruntime {onnxruntime.__version__}; '
          f'rapidocr-onnxruntime {rapidocr_version() or "not installed"}')
    print(f'{args.images} generated 1280x720 JPEGs (synthetic scene text), short side {args.short_side}, '
          f'{args.threads} threads (onnxruntime intra-op, torch), batch 1, end to end per image (read, resize, '
          f'normalise, network, post-processing to boxes); contenders interleaved image by image, median of '
          f'{args.rounds} rounds x {args.images} images after one warm-up pass ({seconds:.0f} s timed); ours: '
          f'{note}\n')
    print_table(rows)
    print('\nspeed vs X: the median time of X divided by this row\'s (above 1: faster than X)')
    return rows


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=8, help='generated 1280x720 JPEGs (default 8)')
    parser.add_argument('--rounds', type=int, default=5, help='timed rounds over the images (default 5)')
    parser.add_argument('--threads', type=int, default=2, help='threads for every contender (default 2)')
    parser.add_argument('--short_side', type=int, default=736, help='input short side for every contender')
    parser.add_argument('--experiment', default=EXPERIMENT, help='our experiment file (post-processing settings)')
    parser.add_argument('--checkpoint', default=CHECKPOINT, help='our trained weights (exported here if no --onnx)')
    parser.add_argument('--onnx', default=None, help='our float ONNX model (default: exported from --checkpoint)')
    parser.add_argument('--int8', default=None, help='our int8 ONNX model (default: quantized from the float one)')
    parser.add_argument('--calibration_dir', default=CALIBRATION_DIR, help='calibration images for the int8 model')
    parser.add_argument('--calibration_images', type=int, default=64)
    parser.add_argument('--torch', action='store_true', help='also time PyTorch fp32 (TextDetector, checkpoint)')
    parser.add_argument('--part', choices=('all', 'rapidocr', 'deformable'), default='all',
                        help='rapidocr: the end-to-end table against RapidOCR; deformable: the deformable '
                             'convolution in each deployment form (PyTorch, onnxruntime DeformConv / portable, '
                             'OpenVINO); all: both (default)')
    parser.add_argument('--dcn_rounds', type=int, default=7, help='deformable table: rounds per layer (default 7)')
    parser.add_argument('--model_rounds', type=int, default=3,
                        help='deformable table: rounds of the whole-model forward (default 3)')
    args = parser.parse_args(argv)
    if min(args.images, args.rounds, args.threads, args.dcn_rounds, args.model_rounds) < 1:
        parser.error('--images, --rounds, --threads, --dcn_rounds and --model_rounds must be at least 1')
    return args


if __name__ == '__main__':
    main()
