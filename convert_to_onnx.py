"""Export a trained DBNet to ONNX: ``python convert_to_onnx.py EXP.yaml --resume CKPT --output model.onnx``.

The graph maps a normalised image batch ``image`` (B, 3, H, W) float32 to the probability map ``probability``
(B, 1, H, W), with dynamic batch, height and width (multiples of 32). The export is verified before the command
returns: onnxruntime must match PyTorch within ``--tolerance`` (1e-4) max abs difference on a real image at two
different sizes, or the command fails.

Deformable convolutions (``--deform_conv``; assets/ops/dcn/onnx_export.py writes them):

* ``onnx``: one standard ``DeformConv`` node each (ai.onnx, opset 19 and later). onnxruntime 1.32 runs a layer
  1.4-4x faster than the portable form, depending on the CPU and the layer (docs/benchmarks.md, deployment section).
  OpenVINO's ONNX frontend has no rule for it.
* ``portable``: the pure-PyTorch formulation (bilinear gathers and a MatMul) in operators of every opset: what
  OpenVINO, older onnxruntime versions and other runtimes without ``DeformConv`` need.
* ``auto`` (the default): ``onnx`` when ``--opset`` is at least 19 and the installed onnxruntime runs a one-node
  ``DeformConv`` model as this op computes it (probed once), else ``portable``, saying why.

The default opset is 19, the first with ``DeformConv``, so that ``auto`` gives the fast graph; ``--opset 17`` (the
earlier default) gives the portable one. Models without deformable convolutions export the same either way.

``--int8 --calibration_dir DIR`` also writes an int8 model beside it (``model_int8.onnx``; ``inference.onnx_quantize``:
onnxruntime static quantization, QDQ, calibrated on ``--calibration_images`` images of DIR read and sized as every
input is), and reports how far its map is from the float model's. ``--evaluate`` then measures PyTorch, the float
and the int8 model on the experiment's evaluation data (box and polygon mode, each at the representer's threshold of
its mode), one table, so the F-measure cost of int8 is known before the file is deployed.

The file describes itself: ``metadata_props`` key ``dbnet`` holds a versioned JSON object
(``inference.detector.model_metadata``: the experiment's representer class and every constructor argument, the
normalisation, the input-size rule with ``--image_short_side`` as its short side, the output, the deformable-
convolution form, the opset, the torch version, the project commit, the experiment file and its sha256), so that
``TextDetector(onnx=...)`` and ``demo.py --onnx`` run it without the experiment file (docs/inference.md). The
file is written whole under a temporary name and renamed (``concern.files.atomic_write``): never left half-written.
``--output`` and ``--int8_output`` must not name an input (the checkpoint, the experiment file, the verification or
a calibration image): refused before any work.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from assets.ops.dcn.onnx_export import DEFORM_CONV_OPSET, onnx_deform_conv_format, onnxruntime_runs_deform_conv
from concern.files import atomic_write
from inference.onnx_quantize import DEFAULT_CALIBRATION_IMAGES

DEFAULT_OPSET = DEFORM_CONV_OPSET  # 19: the first opset with DeformConv, so that --deform_conv auto can use it
DEFORM_CONV_CHOICES = ('auto', 'onnx', 'portable')


def build_parser() -> argparse.ArgumentParser:
    from concern.config import add_override_argument
    parser = argparse.ArgumentParser(description='Export a DBNet checkpoint to ONNX (probability map output).')
    parser.add_argument('exp', type=str, help='experiment YAML file')
    parser.add_argument('--resume', type=str, required=True, help='checkpoint to export')
    parser.add_argument('--output', type=str, required=True, help='path of the .onnx file to write')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, help=f'ONNX opset (default {DEFAULT_OPSET})')
    parser.add_argument('--deform_conv', choices=DEFORM_CONV_CHOICES, default='auto',
                        help='how deformable convolutions are written: onnx = standard DeformConv nodes (opset >= 19; '
                             'onnxruntime 1.32 runs them 1.4-4x faster; OpenVINO cannot read them), portable = gathers '
                             'and MatMul in '
                             'standard operators of every opset (what OpenVINO and older runtimes need), auto = onnx '
                             'when the opset is >= 19 and the installed onnxruntime runs DeformConv, else portable '
                             '(default auto)')
    parser.add_argument('--image_short_side', type=int, default=736,
                        help='short side of the example input used for tracing and the first check size; also '
                             "recorded in the file's description as the short side the model runs at by default")
    parser.add_argument('--verify_image', type=str, default=None,
                        help='image for the parity check (default: the first evaluation image of the '
                             'experiment, else a generated synthetic scene-text image)')
    parser.add_argument('--tolerance', type=float, default=1e-4, help='max abs difference allowed (default 1e-4)')
    parser.add_argument('--int8', action='store_true',
                        help='also write an int8 model (onnxruntime static quantization, QDQ) to --int8_output')
    parser.add_argument('--int8_output', type=str, default=None,
                        help='path of the int8 model (default: the --output name with _int8, e.g. model_int8.onnx)')
    parser.add_argument('--calibration_dir', type=str, default=None,
                        help='--int8: folder of calibration images (e.g. the training images), read and sized as '
                             'every input (short side --image_short_side)')
    parser.add_argument('--calibration_images', type=int, default=DEFAULT_CALIBRATION_IMAGES,
                        help=f'--int8: how many images of --calibration_dir, spread over its sorted list '
                             f'(default {DEFAULT_CALIBRATION_IMAGES})')
    parser.add_argument('--int8_float_nodes', nargs='+', default=[], metavar='NAME_PREFIX',
                        help='--int8: leave the nodes whose names start with these prefixes in float (e.g. '
                             '/model/model/module/decoder/binarize/ for the probability head)')
    parser.add_argument('--int8_per_tensor', action='store_true',
                        help='--int8: one weight scale per tensor instead of per output channel')
    parser.add_argument('--int8_full_range', action='store_true',
                        help='--int8: 8-bit weights instead of 7-bit (only for CPUs with VNNI: without it, '
                             "onnxruntime's uint8 x int8 kernels can saturate)")
    parser.add_argument('--evaluate', action='store_true',
                        help="after the export: P/R/F of PyTorch, the ONNX model and (--int8) the int8 model on "
                             "the experiment's evaluation data, box and polygon mode")
    add_override_argument(parser, 'experiment overrides')
    return parser


class ProbabilityMap(torch.nn.Module):
    """The model as image -> probability map: the signature exported."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pred = self.model(image, training=False)
        return pred['binary'] if isinstance(pred, dict) else pred


def choose_deform_conv(choice: str, opset: int) -> Tuple[str, str]:
    """(the form of the deformable convolutions, 'onnx' or 'portable'; why) for ``--deform_conv choice`` at
    ``opset``. Raises ValueError for 'onnx' below opset 19."""
    if choice not in DEFORM_CONV_CHOICES:
        raise ValueError(f'--deform_conv {choice!r}: expected one of {DEFORM_CONV_CHOICES}')
    if choice == 'portable':
        return 'portable', 'asked for'
    if opset < DEFORM_CONV_OPSET:
        if choice == 'onnx':
            raise ValueError(f'--deform_conv onnx needs --opset {DEFORM_CONV_OPSET} or later (DeformConv is an opset '
                             f'{DEFORM_CONV_OPSET} operator), got --opset {opset}')
        return 'portable', f'opset {opset} has no DeformConv (opset {DEFORM_CONV_OPSET} has)'
    runs, why = onnxruntime_runs_deform_conv()
    if choice == 'onnx':
        return 'onnx', 'asked for' + ('' if runs else f'; note: {why}, so the check below will fail')
    if not runs:
        return 'portable', f'{why}; --deform_conv onnx writes DeformConv nodes anyway'
    return 'onnx', f'opset {opset} and {why}'


def export(model, output: str, example: np.ndarray, opset: int = DEFAULT_OPSET, deform_conv: str = 'auto',
           metadata: Optional[Dict[str, Any]] = None) -> str:
    """Write ``model`` (eval mode) to ``output`` with dynamic batch / height / width axes; deformable convolutions
    as ``choose_deform_conv(deform_conv, opset)`` says; ``metadata`` (``model_metadata``, with the deformable form
    and the opset added) as the file's description. The model is exported into a scratch folder, described, and
    written whole (``concern.files.atomic_write``): a failure leaves ``output`` as it was. Returns the form used
    ('onnx' or 'portable')."""
    import onnx
    form, _ = choose_deform_conv(deform_conv, opset)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='dbnet-onnx-') as work:  # torch.onnx.export writes to a path
        graph = os.path.join(work, 'model.onnx')
        _export_graph(model, graph, example, opset, form)
        exported = onnx.load(graph)
    if metadata is not None:
        set_metadata(exported, {**metadata, 'deform_conv': form, 'opset': opset})
    atomic_write(output, exported.SerializeToString())
    return form


def set_metadata(model: Any, description: Dict[str, Any]) -> None:
    """Put ``description`` into the ONNX ``model`` (a ModelProto): key ``METADATA_KEY`` of ``metadata_props`` as
    JSON, and the standard fields ``producer_name``, ``producer_version`` (the project commit), ``doc_string`` and
    ``model_version`` (the description's format)."""
    import onnx
    from inference.detector import METADATA_KEY
    props = {entry.key: entry.value for entry in model.metadata_props}
    props[METADATA_KEY] = json.dumps(description, sort_keys=True)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    model.producer_name = 'dbnet convert_to_onnx.py'
    model.producer_version = str(description.get('project_commit') or '')
    model.model_version = int(description['format'])
    representer = description['representer']
    model.doc_string = (f"DBNet text detector exported from {description.get('experiment', {}).get('path')}: "
                        'image (B, 3, H, W) float32, BGR, (pixel - mean) / 255, H and W multiples of 32 -> '
                        f'probability (B, 1, H, W); post-processing {representer["class"]} (metadata_props '
                        f'{METADATA_KEY!r}, JSON format {description["format"]})')


def copy_metadata(source: str, target: str) -> None:
    """Give ``target`` (e.g. the int8 model) the description of ``source`` when it has none, written whole
    (``concern.files.atomic_write``)."""
    import onnx
    from inference.detector import METADATA_KEY
    stored = {entry.key: entry.value for entry in onnx.load(source, load_external_data=False).metadata_props}
    if METADATA_KEY not in stored:
        return
    model = onnx.load(target)
    if any(entry.key == METADATA_KEY for entry in model.metadata_props):
        return
    set_metadata(model, json.loads(stored[METADATA_KEY]))
    atomic_write(target, model.SerializeToString())


def export_facts(args: argparse.Namespace) -> Dict[str, Any]:
    """What the export adds to the description: the experiment file (path, sha256 of its bytes, the --opt
    overrides), the torch version and the project commit (None outside a git checkout)."""
    from concern.config import PROJECT_DIR, find_experiment_file
    path = find_experiment_file(args.exp)
    with open(path, 'rb') as stream:
        digest = hashlib.sha256(stream.read()).hexdigest()
    try:
        commit: Optional[str] = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=PROJECT_DIR, capture_output=True,
                                               text=True, timeout=10, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {'experiment': {'path': args.exp, 'name': os.path.splitext(os.path.basename(args.exp))[0],
                           'sha256': digest, 'opt': list(args.opt or [])},
            'torch_version': torch.__version__, 'project_commit': commit}


def _export_graph(model, output: str, example: np.ndarray, opset: int, form: str) -> None:
    wrapper = ProbabilityMap(model.eval()).eval()
    dynamic = {0: 'batch', 2: 'height', 3: 'width'}
    with warnings.catch_warnings():
        # Shape checks inside the model become constants of the trace (they only guard against bad input)
        # and the TorchScript-based exporter announces its deprecation; neither changes the exported graph.
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.simplefilter('ignore', DeprecationWarning)
        with torch.inference_mode(False), torch.no_grad(), onnx_deform_conv_format(form):
            torch.onnx.export(wrapper, (torch.from_numpy(example),), output, input_names=['image'],
                              output_names=['probability'], dynamic_axes={'image': dynamic, 'probability': dynamic},
                              opset_version=opset, do_constant_folding=True, dynamo=False)


def parity(model, onnx_path: str, image_bgr: np.ndarray,
           short_sides: Sequence[int]) -> List[Tuple[Tuple[int, int], float]]:
    """((height, width), max abs difference between onnxruntime and PyTorch) for each short side."""
    from inference.runners import OnnxRunner, TorchRunner
    from inference.preprocess import prepare_image
    from data.input_size import DEFAULT_MAX_LONG_SIDE, InputSize
    torch_runner, onnx_runner = TorchRunner(model, 'cpu'), OnnxRunner(onnx_path)
    height, width = image_bgr.shape[:2]
    rows = []
    for short_side in short_sides:
        new_height, new_width = InputSize('short_side', short_side, DEFAULT_MAX_LONG_SIDE)(height, width)
        inputs = prepare_image(image_bgr, (new_height, new_width))
        difference = float(np.abs(onnx_runner(inputs) - torch_runner(inputs)).max())
        rows.append(((new_height, new_width), difference))
    return rows


def check_sizes(short_side: int) -> Tuple[int, int]:
    """The export size and a second, different one (three quarters of it, a multiple of 32, at least 64)."""
    second = max(64, (short_side * 3 // 4) // 32 * 32)
    if second == short_side:
        second = short_side + 32
    return short_side, second


def verification_image(experiment, path: Optional[str]) -> Tuple[np.ndarray, str]:
    """A real text image: ``path``, else the first evaluation image of the experiment, else a synthetic scene."""
    from data.image_io import DataError, read_image
    if path:
        try:
            return read_image(path, orientation='displayed'), path
        except DataError as error:
            raise ValueError(f'--verify_image: cannot read it as an image: {error}') from error
    evaluation = getattr(experiment, 'evaluation', None)
    for loader in (evaluation.data_loaders.values() if evaluation is not None else []):
        entries = getattr(loader.dataset, 'entries', None)
        if entries:
            try:
                return read_image(entries[0][0], orientation='displayed'), entries[0][0]
            except DataError:
                pass
    from data.synthetic import FontBank, find_fonts, generate_image
    image, _ = generate_image(np.random.default_rng(0), FontBank(find_fonts('builtin')), 640)
    return image, 'a generated synthetic scene-text image (data.synthetic, seed 0)'


def int8_check(float_path: str, int8_path: str, image_bgr: np.ndarray, short_side: int, thresh: float
               ) -> Tuple[Tuple[int, int], float, float]:
    """((height, width), max abs difference, fraction of pixels on the other side of ``thresh``) between the int8
    and the float model's probability maps of ``image_bgr`` at ``short_side``."""
    from inference.runners import OnnxRunner
    from inference.preprocess import prepare_image
    from data.input_size import DEFAULT_MAX_LONG_SIDE, InputSize
    size = InputSize('short_side', short_side, DEFAULT_MAX_LONG_SIDE)(*image_bgr.shape[:2])
    inputs = prepare_image(image_bgr, size)
    reference, quantized = OnnxRunner(float_path)(inputs), OnnxRunner(int8_path)(inputs)
    flipped = float(np.mean((reference > thresh) != (quantized > thresh)))
    return size, float(np.abs(quantized - reference).max()), flipped


def evaluate_runners(experiment, runners) -> List[Dict[str, Any]]:
    """P/R/F of each runner (name -> images -> probability maps) on each evaluation loader of ``experiment``, in
    box and polygon mode at the representer's threshold of each mode, with the evaluation engine of eval.py
    (``DetectionEvaluator``) fed by the one evaluation loop (``inference.evaluation.evaluate_on_dataset``): one
    row per loader, mode and runner. Each runner has its own pass over a loader (box and polygon mode from the
    same forward pass)."""
    from inference.evaluation import evaluate_on_dataset
    from structure.measurers import DetectionEvaluator
    structure = experiment.structure
    rows: List[Dict[str, Any]] = []  # the names, and the figures of DetectionEvaluator.evaluate()
    for loader_name, loader in experiment.evaluation.data_loaders.items():
        for name, runner in runners.items():
            evaluators = [DetectionEvaluator(structure.representer, structure.measurer, is_output_polygon=polygon)
                          for polygon in (False, True)]
            evaluate_on_dataset(runner, loader, evaluators)
            for polygon, evaluator in zip((False, True), evaluators):
                rows.append({'loader': loader_name, 'mode': 'polygon' if polygon else 'box', 'model': name,
                             **evaluator.evaluate()})
    return rows


def print_evaluation(rows: List[Dict[str, Any]]) -> None:
    print('| loader | mode | model | precision | recall | F-measure | images |')
    print('|---|---|---|---|---|---|---|')
    for row in rows:
        print(f"| {row['loader']} | {row['mode']} | {row['model']} | {row['precision']:.4f} | {row['recall']:.4f} | "
              f"{row['fmeasure']:.4f} | {row['images']} |")
    reference = {(row['loader'], row['mode']): row['fmeasure'] for row in rows if row['model'] == 'onnxruntime fp32'}
    for row in rows:
        if row['model'] == 'onnxruntime int8':
            print(f"{row['loader']} {row['mode']}: int8 F-measure change "
                  f"{row['fmeasure'] - reference[row['loader'], row['mode']]:+.4f}")


def check_int8_arguments(args: argparse.Namespace) -> Optional[str]:
    """The error message of a bad --int8 combination, or None."""
    int8_flags = [flag for flag, given in (('--int8_output', args.int8_output), ('--calibration_dir',
                  args.calibration_dir), ('--int8_float_nodes', args.int8_float_nodes),
                  ('--int8_per_tensor', args.int8_per_tensor), ('--int8_full_range', args.int8_full_range))
                  if given]
    if not args.int8:
        return f'{", ".join(int8_flags)}: only with --int8' if int8_flags else None
    if not args.calibration_dir:
        return '--int8 needs --calibration_dir DIR (images like those the model will see, e.g. training images)'
    if args.calibration_images < 1:
        return f'--calibration_images {args.calibration_images}: expected at least 1'
    from inference.onnx_quantize import int8_path
    output = args.int8_output or int8_path(args.output)
    if os.path.realpath(output) == os.path.realpath(args.output):
        return f'--int8_output {output}: the int8 model must not overwrite the float model --output'
    return None


def _same_file(first: str, second: str) -> bool:
    """Whether two paths name one file: the same real path, or (both existing) the same file by identity
    (hard links, case-insensitive file systems)."""
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def export_inputs(args: argparse.Namespace) -> List[Tuple[str, str]]:
    """(what, path) of every file the export reads that an output could replace: the checkpoint, the experiment
    file and the files it imports, the verification image and the calibration images."""
    from concern.config import ConfigError, find_experiment_file, load_experiment_file
    inputs = [('--resume', args.resume), ('the experiment', find_experiment_file(args.exp))]
    loaded: Dict[str, Any] = {}
    try:
        load_experiment_file(args.exp, _loaded=loaded)
    except (ConfigError, OSError, ValueError):
        pass  # an unreadable experiment is reported with its reason when it is loaded
    inputs += [('a file the experiment imports', path) for path in loaded
               if not _same_file(path, find_experiment_file(args.exp))]
    if args.verify_image:
        inputs.append(('--verify_image', args.verify_image))
    if args.int8 and args.calibration_dir:
        from inference.onnx_quantize import calibration_paths
        try:
            inputs += [('a calibration image', path)
                       for path in calibration_paths(args.calibration_dir, max(args.calibration_images, 1))]
        except (OSError, ValueError):
            pass  # reported when the images are read
    return inputs


def check_outputs_are_not_inputs(args: argparse.Namespace,
                                 inputs: Optional[List[Tuple[str, str]]] = None) -> Optional[str]:
    """The error message when --output (or, --int8, the int8 model's path) names a file the export reads
    (``inputs``, by default ``export_inputs``), compared by real path and by identity; else None."""
    from inference.onnx_quantize import int8_path
    outputs = [('--output', args.output)]
    if args.int8:
        outputs.append(('--int8_output', args.int8_output or int8_path(args.output)))
    inputs = export_inputs(args) if inputs is None else inputs
    for flag, output in outputs:
        for what, path in inputs:
            if _same_file(output, path):
                return (f'{flag} {output} would overwrite {what} {path}: the export reads it; choose another '
                        f'{flag}')
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.image_short_side % 32 or args.image_short_side < 64:
        print(f'error: --image_short_side {args.image_short_side}: expected a multiple of 32, at least 64',
              file=sys.stderr)
        return 2
    problem = check_int8_arguments(args) or check_outputs_are_not_inputs(args)
    try:
        deform_conv, why = choose_deform_conv(args.deform_conv, args.opset)
    except ValueError as error:
        problem = str(error)
    if problem:
        print(f'error: {problem}', file=sys.stderr)
        return 2
    from concern.config import ConfigError, apply_overrides, load_config
    from experiment import Experiment
    try:
        config = load_config(args.exp)
        apply_overrides(config, args.opt or [])
        parts = ('structure', 'evaluation') if args.verify_image is None or args.evaluate else ('structure',)
        try:
            experiment = Experiment.build(config, parts)
        except (ConfigError, ValueError, FileNotFoundError):
            if args.evaluate:
                raise
            experiment = Experiment.build(config, ('structure',))  # evaluation data absent: verify elsewhere
        assert experiment.structure is not None  # built: 'structure' is among the parts
        if args.evaluate and getattr(experiment, 'evaluation', None) is None:
            raise ValueError(f'--evaluate: {args.exp} has no evaluation (or validation) data loaders')
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    from structure.weights import load_trained_model
    from inference.preprocess import prepare_image
    from inference.detector import experiment_representer, model_metadata
    from data.input_size import DEFAULT_MAX_LONG_SIDE, InputSize
    sizes = check_sizes(args.image_short_side)
    try:
        # the description the file will carry: the representer as the experiment builds it for TextDetector
        description = model_metadata(experiment_representer(experiment),
                                     InputSize('short_side', sizes[0], DEFAULT_MAX_LONG_SIDE), **export_facts(args))
        model = load_trained_model(experiment.structure.builder, args.resume, 'cpu')
        image, source = verification_image(experiment, args.verify_image)
        if args.verify_image is None and os.path.isfile(source):  # the experiment's first evaluation image
            problem = check_outputs_are_not_inputs(args, [('the verification image', source)])
            if problem:
                raise ValueError(problem)
        calibration = None
        if args.int8:
            from inference.onnx_quantize import CalibrationImages, calibration_paths
            calibration = CalibrationImages(calibration_paths(args.calibration_dir, args.calibration_images),
                                            input_size=InputSize('short_side', args.image_short_side,
                                                                 DEFAULT_MAX_LONG_SIDE))
    except (FileNotFoundError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    example = prepare_image(image, InputSize('short_side', sizes[0], DEFAULT_MAX_LONG_SIDE)(*image.shape[:2]))
    print(f'exporting {args.resume} ({experiment.structure.builder.model_args.get("backbone")}) to {args.output}, '
          f'opset {args.opset}, example input {tuple(example.shape)}')
    print(f'deformable convolutions: {deform_conv} '
          f'({"standard DeformConv nodes" if deform_conv == "onnx" else "the portable formulation"}; '
          f'--deform_conv {args.deform_conv}: {why})')
    export(model, args.output, example, args.opset, deform_conv, metadata=description)
    print(f"description written (metadata_props 'dbnet'): {description['representer']['class']} "
          + ', '.join(f'{key} {value}' for key, value in description['representer'].items() if key != 'class')
          + f', short side {sizes[0]}')
    print(f'verifying with onnxruntime on {source}')
    try:
        rows = parity(model, args.output, image, sizes)
    except ImportError as error:
        print(f'error: {args.output} written but not verified: {error}', file=sys.stderr)
        return 1
    failed = False
    for (height, width), difference in rows:
        ok = difference <= args.tolerance
        failed |= not ok
        print(f'  input {height}x{width}: max abs difference {difference:.3g} '
              f'({"ok" if ok else "FAILED"}, tolerance {args.tolerance:g})')
    if failed:
        print(f'error: {args.output}: onnxruntime output differs from PyTorch by more than {args.tolerance:g}',
              file=sys.stderr)
        return 1
    print(f'{args.output}: {os.path.getsize(args.output) / 2 ** 20:.1f} MiB, verified')
    if calibration is not None:
        code = write_int8(args, calibration, image, source, experiment.structure.representer)
        if code:
            return code
    if args.evaluate:
        from inference.runners import OnnxRunner, TorchRunner
        from inference.onnx_quantize import int8_path
        runners = {'PyTorch fp32': TorchRunner(model, 'cpu'), 'onnxruntime fp32': OnnxRunner(args.output)}
        if args.int8:
            runners['onnxruntime int8'] = OnnxRunner(args.int8_output or int8_path(args.output))
        representer = experiment.structure.representer
        print(f'evaluating {", ".join(runners)} on the evaluation data of {args.exp} '
              f'(box_thresh {representer.box_thresh_for(False)} in box mode, '
              f'{representer.box_thresh_for(True)} in polygon mode)')
        print_evaluation(evaluate_runners(experiment, runners))
    return 0


def write_int8(args: argparse.Namespace, calibration, image: np.ndarray, source: str, representer) -> int:
    """The --int8 step: quantize, then compare the int8 map with the float one on the verification image."""
    from inference.onnx_quantize import int8_path, nodes_with_prefix, quantize
    from data.image_io import DataError
    output = args.int8_output or int8_path(args.output)
    try:
        float_nodes = nodes_with_prefix(args.output, args.int8_float_nodes) if args.int8_float_nodes else []
        print(f'quantizing to int8 ({"per-tensor" if args.int8_per_tensor else "per-channel"} '
              f'{"8" if args.int8_full_range else "7"}-bit weights, uint8 activations; in float: '
              f'{", ".join(args.int8_float_nodes) or "nothing"}), calibrating on '
              f'{len(calibration)} image(s) of {args.calibration_dir} at short side {args.image_short_side}')
        summary = quantize(args.output, output, calibration, per_channel=not args.int8_per_tensor,
                           reduce_range=not args.int8_full_range, float_nodes=float_nodes)
    except (ValueError, DataError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print(summary.describe())
    copy_metadata(args.output, output)  # the int8 file runs without the experiment too
    thresh = float(getattr(representer, 'thresh', 0.3))
    (height, width), difference, flipped = int8_check(args.output, output, image, args.image_short_side, thresh)
    print(f'  int8 vs float on {source}, input {height}x{width}: max abs difference {difference:.3g}, '
          f'{100 * flipped:.3f}% of pixels on the other side of thresh {thresh:g}')
    print(f'{output}: {os.path.getsize(output) / 2 ** 20:.1f} MiB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
