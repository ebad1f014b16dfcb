"""Export a trained DBNet to ONNX: ``python convert_to_onnx.py EXP.yaml --resume CKPT --output model.onnx``.

The graph maps a normalised image batch ``image`` (B, 3, H, W) float32 to the probability map ``probability``
(B, 1, H, W), with dynamic batch, height and width (multiples of 32). Deformable convolutions are exported through
their pure-PyTorch formulation (the DCN backend switches to it while exporting), so DBNet-DCN models run in plain
onnxruntime. The export is verified before the command returns: onnxruntime must match PyTorch within
``--tolerance`` (1e-4) max abs difference on a real image at two different sizes, or the command fails.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

DEFAULT_OPSET = 17


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Export a DBNet checkpoint to ONNX (probability map output).')
    parser.add_argument('exp', type=str, help='experiment YAML file')
    parser.add_argument('--resume', type=str, required=True, help='checkpoint to export')
    parser.add_argument('--output', type=str, required=True, help='path of the .onnx file to write')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, help=f'ONNX opset (default {DEFAULT_OPSET})')
    parser.add_argument('--image_short_side', type=int, default=736,
                        help='short side of the example input used for tracing and the first check size')
    parser.add_argument('--verify_image', type=str, default=None,
                        help='image for the parity check (default: the first evaluation image of the '
                             'experiment, else a generated synthetic scene-text image)')
    parser.add_argument('--tolerance', type=float, default=1e-4, help='max abs difference allowed (default 1e-4)')
    parser.add_argument('--opt', nargs='+', default=[], metavar='KEY.PATH=VALUE', help='experiment overrides')
    return parser


class ProbabilityMap(torch.nn.Module):
    """The model as image -> probability map: the signature exported."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pred = self.model(image, training=False)
        return pred['binary'] if isinstance(pred, dict) else pred


def export(model, output: str, example: np.ndarray, opset: int = DEFAULT_OPSET) -> None:
    """Write ``model`` (eval mode) to ``output`` with dynamic batch / height / width axes."""
    wrapper = ProbabilityMap(model.eval()).eval()
    dynamic = {0: 'batch', 2: 'height', 3: 'width'}
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with warnings.catch_warnings():
        # Shape checks inside the model become constants of the trace (they only guard against bad input)
        # and the TorchScript-based exporter announces its deprecation; neither changes the exported graph.
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.simplefilter('ignore', DeprecationWarning)
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(wrapper, (torch.from_numpy(example),), output, input_names=['image'],
                              output_names=['probability'], dynamic_axes={'image': dynamic, 'probability': dynamic},
                              opset_version=opset, do_constant_folding=True, dynamo=False)


def parity(model, onnx_path: str, image_bgr: np.ndarray, short_sides: Sequence[int]) -> List[Tuple[Tuple[int, int], float]]:
    """((height, width), max abs difference between onnxruntime and PyTorch) for each short side."""
    from concern.inference import OnnxRunner, TorchRunner, prepare_image
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.image_short_side % 32 or args.image_short_side < 64:
        print(f'error: --image_short_side {args.image_short_side}: expected a multiple of 32, at least 64',
              file=sys.stderr)
        return 2
    from concern.config import ConfigError, apply_overrides, load_config
    from experiment import Experiment
    try:
        config = load_config(args.exp)
        apply_overrides(config, args.opt or [])
        parts = ('structure', 'evaluation') if args.verify_image is None else ('structure',)
        try:
            experiment = Experiment.build(config, parts)
        except (ConfigError, ValueError, FileNotFoundError):
            experiment = Experiment.build(config, ('structure',))  # evaluation data absent: verify elsewhere
    except (ConfigError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    from concern.inference import load_trained_model, prepare_image
    from data.input_size import DEFAULT_MAX_LONG_SIDE, InputSize
    try:
        model = load_trained_model(experiment.structure.builder, args.resume, 'cpu')
        image, source = verification_image(experiment, args.verify_image)
    except (FileNotFoundError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    sizes = check_sizes(args.image_short_side)
    example = prepare_image(image, InputSize('short_side', sizes[0], DEFAULT_MAX_LONG_SIDE)(*image.shape[:2]))
    print(f'exporting {args.resume} ({experiment.structure.builder.model_args.get("backbone")}) to {args.output}, '
          f'opset {args.opset}, example input {tuple(example.shape)}')
    export(model, args.output, example, args.opset)
    print(f'verifying with onnxruntime on {source}')
    rows = parity(model, args.output, image, sizes)
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
    return 0


if __name__ == '__main__':
    sys.exit(main())
