"""``python -m tools.flops EXP [--opt K=V ...] [--size H W]``: parameters and forward FLOPs of an experiment's model.

``train.py EXP --print-config-only`` prints the same figures as comment lines after the compiled experiment.

The model is built as training builds it (``structure.builder``) and one inference forward of a batch of one image
runs under ``torch.utils.flop_counter.FlopCounterMode``: at the training input size, the crop of the training
pipeline's ``RandomCropData`` (``size: [width, height]``) when it has one, else 640x640 (``--size`` chooses). A FLOP
is one multiplication or one addition (a multiply-add is 2), torch's convention: a convolution is
``2 * Cout * (Cin / groups) * kh * kw * Ho * Wo`` per image, bias, BatchNorm, activations and resampling not counted.

The deformable convolution (the compiled operator ``torch.ops.dbnet.modulated_deform_conv``, or torchvision's
``deform_conv2d`` where the extension is not built) has a formula registered here, in two parts, both counted:

- ``conv``: the convolution it is, with sampled inputs: ``2 * Cout * (Cin / groups) * kh * kw * Ho * Wo``;
- ``sampling``: the bilinear sampling of its ``Cin * kh * kw`` inputs per output position: 7 FLOPs per sampled
  value (4 products and 3 sums of the four neighbours) plus 1 for the modulation mask, and 10 per tap and
  deformable group for its coordinates and the four weights:
  ``Ho * Wo * kh * kw * (Cin * (7 + mask) + 10 * deformable_groups)``.

With neither compiled operator (the pure-PyTorch backend) the counter sees that backend's matrix products (the
``conv`` part) and not its gathers; the output says which backend ran.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass, field
from math import prod
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

DEFAULT_SIZE = (640, 640)
SAMPLE_FLOPS = 7  # bilinear interpolation of one sampled value: 4 products, 3 sums
MASK_FLOPS = 1  # the modulation mask's product
COORDINATE_FLOPS = 10  # per tap and deformable group: 2 offsets added, fractional parts, 4 weights


def conv_flops(input_shape: Sequence[int], weight_shape: Sequence[int], out_shape: Sequence[int]) -> int:
    """``2 * N * Cout * (Cin / groups) * kh * kw * Ho * Wo`` (the weight holds ``Cin / groups``)."""
    c_out, c_in_per_group, *kernel = weight_shape
    return 2 * int(input_shape[0]) * int(c_out) * int(c_in_per_group) * prod(kernel) * prod(out_shape[2:])


def sampling_flops(input_shape: Sequence[int], weight_shape: Sequence[int], out_shape: Sequence[int],
                   masked: bool, deformable_groups: int) -> int:
    """The bilinear sampling of a deformable convolution (module docstring)."""
    batch, channels = int(input_shape[0]), int(input_shape[1])
    taps = prod(weight_shape[2:])
    per_value = SAMPLE_FLOPS + (MASK_FLOPS if masked else 0)
    return batch * prod(out_shape[2:]) * taps * (channels * per_value + COORDINATE_FLOPS * int(deformable_groups))


@dataclass
class DeformableCount:
    """What the registered formulas counted for the deformable convolutions of one forward."""
    calls: int = 0
    conv: int = 0
    sampling: int = 0


def _dbnet_formula(record: DeformableCount) -> Any:
    def formula(input_shape, offset_shape, mask_shape, weight_shape, bias_shape, stride, padding, dilation,
                groups, deformable_groups, *args, out_shape=None, **kwargs) -> int:
        conv = conv_flops(input_shape, weight_shape, out_shape)
        sampling = sampling_flops(input_shape, weight_shape, out_shape, mask_shape is not None, deformable_groups)
        record.calls, record.conv, record.sampling = record.calls + 1, record.conv + conv, record.sampling + sampling
        return conv + sampling
    return formula


def _torchvision_formula(record: DeformableCount) -> Any:
    # deform_conv2d(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups,
    #               offset_groups, use_mask)
    def formula(input_shape, weight_shape, offset_shape, mask_shape, bias_shape, *ints, out_shape=None,
                **kwargs) -> int:
        offset_groups, use_mask = ints[7], bool(ints[8])
        conv = conv_flops(input_shape, weight_shape, out_shape)
        sampling = sampling_flops(input_shape, weight_shape, out_shape, use_mask, offset_groups)
        record.calls, record.conv, record.sampling = record.calls + 1, record.conv + conv, record.sampling + sampling
        return conv + sampling
    return formula


def deformable_formulas(record: DeformableCount) -> Dict[Any, Any]:
    """``custom_mapping`` of ``FlopCounterMode`` for the deformable operators that exist in this process."""
    from assets.ops.dcn import _backend
    mapping: Dict[Any, Any] = {}
    if _backend.extension_available():
        from assets.ops.dcn import custom_ops  # noqa: F401  (defines torch.ops.dbnet.*)
        mapping[torch.ops.dbnet.modulated_deform_conv] = _dbnet_formula(record)
    if _backend.torchvision_available():
        import torchvision.ops  # noqa: F401  (defines torch.ops.torchvision.*)
        mapping[torch.ops.torchvision.deform_conv2d] = _torchvision_formula(record)
    return mapping


@dataclass
class FlopReport:
    """Parameters and forward FLOPs of a model at one input size."""
    parameters: int
    trainable: int
    input_shape: Tuple[int, int, int, int]
    total: int
    deformable: DeformableCount
    backend: str
    by_operator: Dict[str, int] = field(default_factory=dict)

    def lines(self, size_source: str = '') -> List[str]:
        n, c, h, w = self.input_shape
        text = [f'parameters: {self.parameters:,} ({self.trainable:,} trainable)',
                f'forward FLOPs at {n}x{c}x{h}x{w}{size_source}: {self.total / 1e9:.2f} G '
                f'(a multiply-add counts 2; BatchNorm, activations and resampling not counted)']
        if self.deformable.calls:
            text.append(f'  of which {self.deformable.calls} deformable convolution(s) ({self.backend} backend): '
                        f'{self.deformable.conv / 1e9:.2f} G as convolutions + {self.deformable.sampling / 1e9:.2f} G '
                        'bilinear sampling (both counted)')
        elif self.backend == 'pytorch':
            text.append('  deformable convolutions ran the pure-PyTorch backend: their matrix products are counted, '
                        'their bilinear sampling is not (build the extension for the full count)')
        return text


def count_parameters(model: nn.Module) -> Tuple[int, int]:
    """(all parameters, trainable ones), each tensor once."""
    unique = {id(parameter): parameter for parameter in model.parameters()}.values()
    return sum(p.numel() for p in unique), sum(p.numel() for p in unique if p.requires_grad)


def count_flops(model: nn.Module, height: int, width: int, batch: int = 1) -> FlopReport:
    """The forward FLOPs of ``model`` (inference mode) on a ``batch`` x 3 x ``height`` x ``width`` image."""
    from assets.ops.dcn import _backend
    parameters, trainable = count_parameters(model)
    was_training = model.training
    model.eval()
    shape = (int(batch), 3, int(height), int(width))
    try:
        try:
            counter, record = _counted_forward(model, shape, fake=True)
        except (RuntimeError, NotImplementedError, TypeError):  # an operator without a fake kernel: run it
            counter, record = _counted_forward(model, shape, fake=False)
    finally:
        model.train(was_training)
    by_operator = {str(name): int(value) for name, value in counter.get_flop_counts().get('Global', {}).items()}
    return FlopReport(parameters, trainable, shape, int(counter.get_total_flops()), record,
                      _backend.resolve_backend(torch.device('cpu')), by_operator)


def _counted_forward(model: nn.Module, shape: Tuple[int, int, int, int],
                     fake: bool) -> Tuple[FlopCounterMode, DeformableCount]:
    """One forward under the counter; ``fake``: on fake tensors (shapes only, no arithmetic: a second instead of
    tens on a CPU; the project's operators have fake kernels), the same count."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    record = DeformableCount()
    counter = FlopCounterMode(display=False, custom_mapping=deformable_formulas(record))
    mode: Any = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    with mode, torch.no_grad(), counter:
        model(torch.zeros(shape))
    return counter, record


def training_input_size(config: Any) -> Tuple[int, int, str]:
    """(height, width, where the size comes from) of the training input: the crop of the first ``RandomCropData``
    in ``train.data_loader.dataset.processes``, else ``DEFAULT_SIZE``."""
    from concern.config import get_path, has_path
    key = 'train.data_loader.dataset.processes'
    processes = get_path(config, key) if has_path(config, key) else None
    for index, process in enumerate(processes or []):
        if isinstance(process, dict) and str(process.get('class', '')).endswith('RandomCropData'):
            size = process.get('size', [640, 640])
            width, height = int(size[0]), int(size[1])
            return height, width, f' (the crop of {key}.{index}, RandomCropData)'
    return DEFAULT_SIZE[0], DEFAULT_SIZE[1], ' (640x640: the training pipeline has no RandomCropData)'


def describe_experiment(config: Any, size: Optional[Tuple[int, int]] = None) -> List[str]:
    """The lines of ``report`` for a compiled experiment: its model built (random weights), one forward counted."""
    from experiment import Experiment
    experiment = Experiment.build(config, ('structure',))
    assert experiment.structure is not None
    model = experiment.structure.builder.build()
    if size is None:
        height, width, source = training_input_size(config)
    else:
        (height, width), source = size, ' (--size)'
    return count_flops(model, height, width).lines(source)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from concern.config import ConfigError, add_override_argument
    from tools.cli import compile_experiment
    parser = argparse.ArgumentParser(prog='python -m tools.flops', description=__doc__.split('\n\n')[0])
    parser.add_argument('exp', help='experiment YAML file')
    add_override_argument(parser, 'overrides, as train.py')
    parser.add_argument('--size', nargs=2, type=int, default=None, metavar=('H', 'W'),
                        help='input height and width (default: the training crop, else 640 640)')
    args = parser.parse_args(argv)
    try:
        config = compile_experiment(args, lambda config, args: None)
        lines = describe_experiment(config, tuple(args.size) if args.size else None)
    except (ConfigError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
