"""Whole detectors on CUDA against the same detector on the CPU. Skipped without a GPU.

Models (eval mode, one 1x3x128x160 image): deformable ResNet-18 + SegDetector, deformable ResNet-50 +
SegDetector in both offset modes ('corrected', 'original'), and DBNet++ (the ASF experiment's model:
deformable ResNet-50 + SegSpatialScaleDetector). Each is made once per module on the CPU in float64:
random offset/mask convolutions (zero at initialisation, which would make every DCN a plain convolution
with mask 0.5) and BatchNorm statistics taken from one forward pass in training mode (so that
activations stay of order one through the network and the probability map is not saturated at 0 or 1).

The reference is the CPU forward (C++ CPU kernels of the dcn extension) in float64. On the device:
- float64: backbone features c2..c5 (error relative to max(1, max|reference|)) and probability map
  (absolute error) within 1e-9: only the order of float64 sums differs (expected errors ~1e-13);
- float32 with TF32 off (cuDNN convolutions and cuBLAS in IEEE float32): within FLOAT32_TOLERANCE.
  Float32 rounding (unit 6e-8) is amplified by these random deep networks, most by the offset path of
  the deformable convolutions (offsets computed from activations move the sampling points; hence the
  small OFFSET_GAIN). Measured on the CPU, float32 against float64: ResNet-18 up to 9e-6, the ResNet-50
  models up to 7e-5 on the features and 2.8e-4 on the map. The tolerances (1e-3 and 1e-2) leave a margin
  of 35 or more for the GPU's other summation orders and convolution algorithms, while a wrong kernel or
  the other offset mode changes the map by far more (the two offset modes differ by about 0.9).

Each test wraps a ``check_*`` helper taking the device, so that its logic runs on the CPU too.
"""
from __future__ import annotations

import contextlib
import copy
import os
from typing import Dict, Optional, Tuple

import pytest
import torch
from torch import nn

from assets.ops.dcn import extension_has_cuda, use_backend
from structure.model import SegDetectorModel
from tests.dcn_helpers import ieee_float32, max_error, relative_error, require_extension

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device'),
]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASF_R50 = os.path.join(REPO_ROOT, 'experiments', 'ASF', 'td500_resnet50_deform_thre_asf.yaml')
R50_CHANNELS = [256, 512, 1024, 2048]
IMAGE_SHAPE = (1, 3, 128, 160)
FLOAT64_TOLERANCE = 1e-9
FLOAT32_TOLERANCE = {'deformable_resnet18': 1e-3, 'deformable_resnet50': 1e-2, 'dbnetpp_resnet50': 1e-2}
# Offset/mask convolution weights: std OFFSET_GAIN / sqrt(fan_in), bias std 0.5 (offsets of a fraction of
# a pixel, varying over the image; masks spread around sigmoid(0) = 0.5).
OFFSET_GAIN = 0.2


def _require_cuda_extension():
    require_extension()
    if not extension_has_cuda():
        pytest.fail('the dcn extension was built without CUDA kernels; rebuild it with '
                    '`cd assets/ops/dcn && CUDA_HOME=/usr/local/cuda python setup.py build_ext --inplace`')


def _asf_model_args() -> dict:
    """model_args of the shipped DBNet++ experiment (its imports are relative to the repository root)."""
    from concern.config import load_config
    from experiment import Experiment
    with contextlib.chdir(REPO_ROOT):
        builder = Experiment.build(load_config(ASF_R50), ('structure',)).structure.builder
    return copy.deepcopy(builder.model_args)


def model_args(name: str) -> dict:
    if name == 'deformable_resnet18':
        return dict(backbone='deformable_resnet18', decoder='SegDetector',
                    decoder_args={'adaptive': True, 'k': 50})
    if name == 'deformable_resnet50':
        return dict(backbone='deformable_resnet50', decoder='SegDetector',
                    decoder_args={'adaptive': True, 'k': 50, 'in_channels': R50_CHANNELS})
    if name == 'dbnetpp_resnet50':
        args = _asf_model_args()
        assert args['decoder'] == 'SegSpatialScaleDetector' and args['backbone'] == 'deformable_resnet50'
        return args
    raise ValueError(name)


def make_image(seed: int) -> torch.Tensor:
    return torch.randn(IMAGE_SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def prepared_model(name: str, seed: int = 0) -> SegDetectorModel:
    """The CPU float64 model in eval mode, with random offset/mask convolutions and the BatchNorm
    statistics of one forward pass."""
    torch.manual_seed(seed)
    model = SegDetectorModel(**model_args(name))
    generator = torch.Generator().manual_seed(seed + 1)
    blocks = model.backbone.deformable_blocks()
    assert blocks, f'{name} has no deformable block'
    with torch.no_grad():
        for block in blocks:
            conv = block.conv2_offset
            fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * OFFSET_GAIN / fan_in ** 0.5)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.5)
    model.double()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: the statistics of the one batch below
    model.train()
    with torch.no_grad(), use_backend('extension'):
        model(make_image(seed + 100), training=False)
    return model.eval()


def run_model(model: SegDetectorModel, image: torch.Tensor, device, dtype,
              offset_compat: Optional[str] = None) -> Tuple[Tuple[torch.Tensor, ...], torch.Tensor]:
    """(backbone features c2..c5, probability map) of a copy of ``model`` on ``device`` in ``dtype``."""
    copied = copy.deepcopy(model).to(device=device, dtype=dtype)
    if offset_compat is not None:
        copied.backbone.set_offset_compat(offset_compat)
    features = []
    hook = copied.backbone.register_forward_hook(lambda module, args, out: features.extend(out))
    precision = ieee_float32() if dtype == torch.float32 else contextlib.nullcontext()
    try:
        with torch.no_grad(), use_backend('extension'), precision:
            prob = copied(image.to(device=device, dtype=dtype), training=False)
    finally:
        hook.remove()
    assert prob.device.type == torch.device(device).type and prob.dtype == dtype
    assert len(features) == 4
    return tuple(features), prob


class References:
    """CPU float64 models and their outputs, made once per module."""

    def __init__(self):
        self.models: Dict[str, SegDetectorModel] = {}
        self.outputs: Dict[Tuple[str, str], Tuple[Tuple[torch.Tensor, ...], torch.Tensor]] = {}
        self.image = make_image(seed=7)

    def model(self, name: str) -> SegDetectorModel:
        if name not in self.models:
            self.models[name] = prepared_model(name)
        return self.models[name]

    def output(self, name: str, offset_compat: str = 'corrected'):
        key = (name, offset_compat)
        if key not in self.outputs:
            self.outputs[key] = run_model(self.model(name), self.image, 'cpu', torch.float64, offset_compat)
        return self.outputs[key]


@pytest.fixture(scope='module')
def references():
    return References()


def assert_outputs_close(got, want, tolerance: float, label: str) -> None:
    (got_features, got_prob), (want_features, want_prob) = got, want
    for index, (a, b) in enumerate(zip(got_features, want_features)):
        error = relative_error(a, b)
        assert error <= tolerance, f'{label}: feature c{index + 2} relative error {error:.3g} > {tolerance}'
    error = max_error(got_prob, want_prob)
    assert error <= tolerance, f'{label}: probability map max abs error {error:.3g} > {tolerance}'


def check_model_forward(references: References, name: str, device, offset_compat: str = 'corrected'):
    """The model on ``device`` in float64 and float32 against the CPU float64 forward; returns the
    device's float64 probability map."""
    want = references.output(name, offset_compat)
    prob = want[1]
    # The comparison means something only if the map is not saturated.
    assert prob.std().item() > 0.01 and 0.0 < prob.min().item() and prob.max().item() < 1.0, \
        f'{name}: reference map saturated (min {prob.min().item():.3g}, max {prob.max().item():.3g})'
    model = references.model(name)
    got64 = run_model(model, references.image, device, torch.float64, offset_compat)
    assert_outputs_close(got64, want, FLOAT64_TOLERANCE, f'{name} {offset_compat} float64')
    got32 = run_model(model, references.image, device, torch.float32, offset_compat)
    assert_outputs_close(got32, want, FLOAT32_TOLERANCE[name], f'{name} {offset_compat} float32')
    return got64[1]


@pytest.mark.parametrize('name', ['deformable_resnet18', 'deformable_resnet50', 'dbnetpp_resnet50'])
def test_model_forward_on_cuda_matches_cpu(references, name):
    _require_cuda_extension()
    check_model_forward(references, name, 'cuda')


def check_offset_compat(references: References, device) -> None:
    """Deformable ResNet-50: 'original' and 'corrected' give clearly different maps (on the CPU and on
    ``device``), and each mode's map on ``device`` equals the CPU float64 map of the same mode."""
    name = 'deformable_resnet50'
    maps = {mode: check_model_forward(references, name, device, mode) for mode in ('original', 'corrected')}
    cpu_difference = max_error(references.output(name, 'original')[1], references.output(name, 'corrected')[1])
    device_difference = max_error(maps['original'], maps['corrected'])
    assert cpu_difference > 0.05, f'the premise: the two modes differ on the CPU (by {cpu_difference:.3g})'
    assert abs(device_difference - cpu_difference) <= 1e-6, (device_difference, cpu_difference)


def test_resnet50_offset_compat_on_cuda(references):
    _require_cuda_extension()
    check_offset_compat(references, 'cuda')
