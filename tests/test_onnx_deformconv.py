"""ONNX export of the deformable convolutions as standard ``DeformConv`` nodes (opset 19) beside the portable
formulation: one layer against PyTorch, a whole DBNet both ways, the graphs, the fallbacks of ``--deform_conv auto``,
and TextDetector on the DeformConv file.

Tolerances: onnxruntime's DeformConv and the project's kernel compute the same bilinear samples and the same sums in
float32, in another order; a single layer with O(1) values sums at most C/groups * kh * kw = 72 products per output,
so the outputs may differ by a few float32 roundings of the sum (eps 1.2e-7 times 72 terms of magnitude <= 1: about
1e-5 at worst; measured 2e-7). 1e-5 for a layer; for a whole network 1e-4, the tolerance of convert_to_onnx.py's own
parity check (differences grow through 20 layers, batch norm and the decoder; measured about 1e-6).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys

import numpy as np
import pytest
import torch

import convert_to_onnx
from assets.ops.dcn import DeformConv, ModulatedDeformConv, active_backend, onnx_export
from inference_helpers import REPO_ROOT, make_synthetic_set, save_checkpoint, tiny_model, write_experiment

onnxruntime = pytest.importorskip('onnxruntime')  # an optional extra; CI installs it
onnx = pytest.importorskip('onnx')

LAYER_TOLERANCE = 1e-5
MODEL_TOLERANCE = 1e-4


def node_types(path_or_bytes) -> list:
    model = onnx.load(path_or_bytes) if isinstance(path_or_bytes, str) else onnx.load_from_string(path_or_bytes)
    return [node.op_type for node in model.graph.node]


class OneLayer(torch.nn.Module):
    """A deformable convolution taking its offsets (and mask) as graph inputs."""

    def __init__(self, modulated: bool, **kwargs):
        super().__init__()
        self.conv = (ModulatedDeformConv if modulated else DeformConv)(**kwargs)
        self.modulated = modulated

    def forward(self, x, offset, mask):
        return self.conv(x, offset, mask) if self.modulated else self.conv(x, offset) + 0 * mask.sum()


LAYERS = {
    'modulated 3x3 with bias': dict(modulated=True, in_channels=8, out_channels=6, kernel_size=3, padding=1),
    'modulated, no bias, groups 2, deformable groups 2, stride 2': dict(
        modulated=True, in_channels=8, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2,
        deformable_groups=2, bias=False),
    'modulated 3x2, dilation (2, 1), stride (1, 2), deformable groups 4': dict(
        modulated=True, in_channels=8, out_channels=4, kernel_size=(3, 2), stride=(1, 2), padding=(2, 0),
        dilation=(2, 1), deformable_groups=4),
    'DCNv1 (no mask), deformable groups 2': dict(modulated=False, in_channels=8, out_channels=6, kernel_size=3,
                                                 padding=1, deformable_groups=2),
}


def layer_inputs(layer: OneLayer, batch: int, height: int, width: int, seed: int):
    conv = layer.conv
    generator = torch.Generator().manual_seed(seed)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    out_h = (height + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (width + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    taps = conv.deformable_groups * kh * kw
    x = torch.randn(batch, conv.in_channels, height, width, generator=generator)
    # offsets of several pixels: many samples fall between pixels, across the border or wholly outside the image
    offset = 4 * torch.randn(batch, 2 * taps, out_h, out_w, generator=generator)
    mask = torch.rand(batch, taps, out_h, out_w, generator=generator)
    return x, offset, mask


def export_layer(layer: OneLayer, inputs, form: str) -> bytes:
    stream = io.BytesIO()
    dynamic = {0: 'batch', 2: 'height', 3: 'width'}
    with onnx_export.onnx_deform_conv_format(form), torch.no_grad():
        torch.onnx.export(layer, inputs, stream, opset_version=19, dynamo=False,
                          input_names=['x', 'offset', 'mask'], output_names=['y'],
                          dynamic_axes={'x': dynamic, 'offset': dynamic, 'mask': dynamic, 'y': dynamic})
    return stream.getvalue()


def run_layer(model: bytes, inputs) -> np.ndarray:
    session = onnxruntime.InferenceSession(model, providers=['CPUExecutionProvider'])
    return session.run(None, {name: tensor.numpy() for name, tensor in zip(('x', 'offset', 'mask'), inputs)})[0]


# ------------------------------------------------------------------------------------------------- (a) one layer
def test_installed_onnxruntime_runs_deform_conv_and_the_probe_is_cached(monkeypatch):
    monkeypatch.setattr(onnx_export, '_runtime_probe', None)
    calls = []
    real = onnx_export._probe_runtime
    monkeypatch.setattr(onnx_export, '_probe_runtime', lambda: calls.append(1) or real())
    first = onnx_export.onnxruntime_runs_deform_conv()
    assert first == onnx_export.onnxruntime_runs_deform_conv() and len(calls) == 1
    assert first[0], first[1]  # onnxruntime 1.32 (the pinned version) has the kernel


@pytest.mark.parametrize('name', LAYERS)
def test_one_layer_exported_as_deformconv_matches_pytorch(name):
    torch.manual_seed(0)
    settings = dict(LAYERS[name])
    layer = OneLayer(settings.pop('modulated'), **settings).eval()
    inputs = layer_inputs(layer, 2, 9, 11, seed=1)
    model = export_layer(layer, inputs, 'onnx')
    assert node_types(model).count('DeformConv') == 1
    assert not {'GatherElements', 'Gather', 'MatMul'} & set(node_types(model))
    # the graph's axes are dynamic: another batch and size than the traced one, against the project's kernel
    for batch, height, width, seed in ((2, 9, 11, 1), (1, 13, 7, 2)):
        inputs = layer_inputs(layer, batch, height, width, seed)
        with torch.no_grad():
            expected = layer(*inputs).numpy()
        assert active_backend('cpu') == 'extension'  # the reference is the compiled kernel (eager, not exporting)
        got = run_layer(model, inputs)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= LAYER_TOLERANCE, name


def test_deformconv_form_changes_nothing_outside_an_export():
    with onnx_export.onnx_deform_conv_format('onnx'):
        assert active_backend('cpu') == 'extension'
        traced_backend = []
        torch.jit.trace(lambda x: traced_backend.append(active_backend('cpu')) or x * 1, torch.zeros(1),
                        check_trace=False)
    assert traced_backend == ['pytorch']  # tracing without an ONNX export keeps the portable formulation
    with pytest.raises(ValueError, match="unknown ONNX form .*'nodes'"):
        with onnx_export.onnx_deform_conv_format('nodes'):
            pass


# ------------------------------------------------------------------------------------------- (b, c) whole model
def randomise_offsets(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-zero offset / mask convolutions (a fresh model has zero ones: plain 3x3 sampling, mask 0.5), scaled so
    that the offsets reach several pixels, across feature-map borders."""
    generator = torch.Generator().manual_seed(seed)
    blocks = model.model.module.backbone.deformable_blocks()
    assert blocks
    with torch.no_grad():
        for block in blocks:
            block.conv2_offset.weight.copy_(0.05 * torch.randn(block.conv2_offset.weight.shape, generator=generator))
            block.conv2_offset.bias.copy_(2 * torch.randn(block.conv2_offset.bias.shape, generator=generator))
    return model


def convert(arguments, cwd=REPO_ROOT):
    stdout, stderr = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = convert_to_onnx.main(arguments)
    finally:
        os.chdir(previous)
    return code, stdout.getvalue() + stderr.getvalue()


@pytest.fixture(scope='module')
def exports(module_tmp):
    """A deformable ResNet-18 DBNet with random offsets exported by convert_to_onnx.py in both forms."""
    tmp = module_tmp('deformconv')
    data_dir = make_synthetic_set(str(tmp / 'data'), test=1, size=128)
    experiment = write_experiment(str(tmp), data_dir, 'deformable_resnet18', thresh=0.5, box_thresh=0.4)
    model = randomise_offsets(tiny_model('deformable_resnet18'))
    checkpoint = save_checkpoint(model, str(tmp / 'model.pth'))
    result = {'tmp': tmp, 'data': data_dir, 'exp': experiment, 'ckpt': checkpoint, 'model': model}
    for form in ('onnx', 'portable'):
        path = str(tmp / f'{form}.onnx')
        code, output = convert([experiment, '--resume', checkpoint, '--output', path, '--image_short_side', '96',
                                '--deform_conv', form])
        result[form] = {'path': path, 'code': code, 'out': output}
    return result


@pytest.mark.parametrize('form', ['onnx', 'portable'])
def test_convert_to_onnx_verifies_both_forms(exports, form):
    export = exports[form]
    assert export['code'] == 0, export['out']
    assert f'deformable convolutions: {form} ' in export['out']
    checks = re.findall(r'input (\d+)x(\d+): max abs difference (\S+) \(ok', export['out'])
    assert len(checks) == 2 and all(float(difference) <= MODEL_TOLERANCE for *_, difference in checks)


def test_both_forms_give_the_same_probability_map(exports):
    from inference.runners import OnnxRunner, TorchRunner
    inputs = np.random.default_rng(3).standard_normal((2, 3, 64, 160)).astype(np.float32)
    expected = TorchRunner(exports['model'])(inputs)
    maps = {form: OnnxRunner(exports[form]['path'])(inputs) for form in ('onnx', 'portable')}
    assert np.abs(maps['onnx'] - maps['portable']).max() <= MODEL_TOLERANCE
    for form, got in maps.items():
        assert np.abs(got - expected).max() <= MODEL_TOLERANCE, form
    # the random offsets matter: the map differs from that of the same weights with zero offsets
    plain = tiny_model('deformable_resnet18')
    assert np.abs(TorchRunner(plain)(inputs) - expected).max() > 1e-3


def test_graph_has_deformconv_nodes_only_in_the_onnx_form(exports):
    blocks = len(exports['model'].model.module.backbone.deformable_blocks())
    onnx_nodes, portable_nodes = node_types(exports['onnx']['path']), node_types(exports['portable']['path'])
    assert onnx_nodes.count('DeformConv') == blocks
    assert 'DeformConv' not in portable_nodes and 'GatherElements' in portable_nodes
    assert 'GatherElements' not in onnx_nodes
    model = onnx.load(exports['onnx']['path'])
    assert {(entry.domain, entry.version) for entry in model.opset_import} == {('', 19)}
    assert {node.domain for node in model.graph.node} <= {'', 'ai.onnx'}  # standard operators only


# ------------------------------------------------------------------------------------------------- (d) fallback
def test_auto_falls_back_to_portable_when_the_runtime_probe_says_no(exports, monkeypatch, tmp_path):
    monkeypatch.setattr(convert_to_onnx, 'onnxruntime_runs_deform_conv',
                        lambda: (False, 'onnxruntime 0.0 cannot run DeformConv (probe)'))
    assert convert_to_onnx.choose_deform_conv('auto', 19)[0] == 'portable'
    path = str(tmp_path / 'auto.onnx')
    code, output = convert([exports['exp'], '--resume', exports['ckpt'], '--output', path, '--image_short_side', '64'])
    assert code == 0, output
    assert 'deformable convolutions: portable' in output and 'cannot run DeformConv (probe)' in output
    assert 'DeformConv' not in node_types(path) and 'GatherElements' in node_types(path)


def test_auto_is_portable_below_opset_19_and_onnx_is_refused_there(exports, capsys, tmp_path):
    form, why = convert_to_onnx.choose_deform_conv('auto', 17)
    assert form == 'portable' and 'opset 17 has no DeformConv' in why
    assert convert_to_onnx.choose_deform_conv('auto', 19)[0] == 'onnx'  # the runtime here has the kernel
    with pytest.raises(ValueError, match='needs --opset 19'):
        convert_to_onnx.choose_deform_conv('onnx', 18)
    code = convert_to_onnx.main([exports['exp'], '--resume', exports['ckpt'], '--output', 'unused.onnx',
                                 '--deform_conv', 'onnx', '--opset', '17'])
    assert code == 2 and 'needs --opset 19' in capsys.readouterr().err
    path = str(tmp_path / 'opset17.onnx')
    model = randomise_offsets(tiny_model('deformable_resnet18'))
    assert convert_to_onnx.export(model, path, np.zeros((1, 3, 64, 64), np.float32), opset=17) == 'portable'
    assert 'DeformConv' not in node_types(path)


def test_export_works_portable_when_onnxruntime_is_not_importable(monkeypatch, tmp_path, exports):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import onnxruntime raises ImportError
    monkeypatch.setattr(onnx_export, '_runtime_probe', None)
    form, why = convert_to_onnx.choose_deform_conv('auto', 19)
    assert form == 'portable' and 'not importable' in why
    model = randomise_offsets(tiny_model('deformable_resnet18'))
    path = str(tmp_path / 'no_runtime.onnx')
    assert convert_to_onnx.export(model, path, np.zeros((1, 3, 64, 64), np.float32)) == 'portable'
    assert 'DeformConv' not in node_types(path)
    # the command writes the file, then says it cannot verify it
    code, output = convert([exports['exp'], '--resume', exports['ckpt'], '--output', str(tmp_path / 'cli.onnx'),
                            '--image_short_side', '64'])
    assert code == 1 and 'written but not verified' in output and 'onnxruntime' in output
    assert os.path.isfile(tmp_path / 'cli.onnx')


# ------------------------------------------------------------------------------------------- (e) the runtime side
def test_text_detector_on_the_deformconv_file_gives_the_portable_detections(exports):
    from inference.detector import TextDetector
    image = os.path.join(exports['data'], 'test_images', 'img_1.jpg')
    results = {form: TextDetector(exports['exp'], onnx=exports[form]['path'], image_short_side=96).detect(image)
               for form in ('onnx', 'portable')}
    onnx_result, portable_result = results['onnx'], results['portable']
    assert len(onnx_result.polygons) == len(portable_result.polygons) > 0
    for a, b in zip(onnx_result.polygons, portable_result.polygons):
        assert np.abs(np.asarray(a, float) - np.asarray(b, float)).max() <= 1  # maps differ by ~1e-6
    assert np.allclose(onnx_result.scores, portable_result.scores, atol=1e-4)


def test_onnx_runner_names_the_way_out_when_the_runtime_lacks_deformconv(exports, monkeypatch):
    from inference.runners import OnnxRunner

    def no_kernel(*args, **kwargs):
        raise RuntimeError('Could not find an implementation for DeformConv(19) node with name ...')

    monkeypatch.setattr(onnxruntime, 'InferenceSession', no_kernel)
    with pytest.raises(ValueError, match='--deform_conv portable'):
        OnnxRunner(exports['onnx']['path'])


# ------------------------------------------------------------------------------------------------- the benchmark
def test_bench_deploy_deformable_helpers(monkeypatch):
    from benchmarks import bench_deploy
    from benchmarks.common import interleaved_median_ms
    ticks = iter(range(100))
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in ('torch', 'onnx', 'portable')}
    medians = interleaved_median_ms(calls, 3, warmup=1, clock=lambda: float(next(ticks)), rotate=True)
    assert medians == {'torch': 1e3, 'onnx': 1e3, 'portable': 1e3}  # each call spans one tick of the fake clock
    assert order[:3] == ['torch', 'onnx', 'portable']  # the warm-up, then the order rotating round by round
    assert order[3:] == ['torch', 'onnx', 'portable', 'onnx', 'portable', 'torch', 'portable', 'torch', 'onnx']
    monkeypatch.setitem(sys.modules, 'openvino', None)
    assert bench_deploy.openvino_version() is None
