"""The int8 ONNX path: ``convert_to_onnx.py --int8`` (inference.onnx_quantize), and demo.py / TextDetector on its file.

A tiny MobileNetV3-Large DBNet (decoder width 16, random init, BatchNorm statistics set by a few forward passes
over synthetic images so that its activations are scaled as a trained network's) is exported and quantized with
onnxruntime's static quantization, calibrated on generated synthetic images.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re

import numpy as np
import pytest
import torch

import convert_to_onnx
import demo
from inference_helpers import REPO_ROOT, make_synthetic_set, write_experiment

pytest.importorskip('onnxruntime', reason='onnxruntime is an optional dependency (the ONNX path)')
pytest.importorskip('onnxruntime.quantization', reason='this onnxruntime build has no quantization tools')

from inference.onnx_quantize import (CalibrationImages, calibration_paths, int8_path, is_quantized,  # noqa: E402
                                   nodes_with_prefix, quantize)

HEAD = '/model/model/module/decoder/binarize/'
# How close the int8 map must be to the float map. The tiny model's map spans about 0.47-0.58 (std 0.02; seed 0:
# 0.26-0.47). Measured with the default quantization and a correct calibration: max abs difference 0.005-0.008,
# correlation 0.999 (seed 0: 0.012-0.013, 0.994); with a calibration that skips the normalisation (raw 0-255 pixels,
# so every range is far too wide): 0.086, 0.74-0.75 (seed 0: 0.15, 0.30-0.36). The tolerances sit between the two,
# a factor 2-3 from each; 0.03 is also under a tenth of the gap between thresh (0.3) and a trained map's text (~1).
MAX_DIFFERENCE = 0.03
MIN_CORRELATION = 0.98


def sha256(path: str) -> str:
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def tiny_mobilenet(images, seed: int = 1) -> torch.nn.Module:
    """Random-init MobileNetV3-Large DBNet of decoder width 16 whose BatchNorm statistics come from ``images``."""
    from structure.model import SegDetectorModel
    torch.manual_seed(seed)
    model = SegDetectorModel('mobilenet_v3_large', 'SegDetector',
                             decoder_args={'adaptive': True, 'k': 50, 'inner_channels': 16}).train()
    with torch.no_grad():
        for image in images:
            model.model(torch.from_numpy(image), training=False)
    return model.eval()


def network_input(path: str, short_side: int = 96) -> np.ndarray:
    from inference.preprocess import prepare_image
    from data.image_io import read_image
    from data.input_size import InputSize
    image = read_image(path, orientation='stored')
    return prepare_image(image, InputSize('short_side', short_side)(*image.shape[:2]))


@pytest.fixture(scope='module')
def exported(module_tmp):
    """One export with --int8 --evaluate: the float and int8 files, the command's output, and their hashes."""
    tmp = module_tmp('int8')
    data_dir = make_synthetic_set(str(tmp / 'data'), test=6, size=128)
    images = sorted(os.path.join(data_dir, 'test_images', name) for name in os.listdir(data_dir + '/test_images'))
    experiment = write_experiment(str(tmp), data_dir, 'mobilenet_v3_large', thresh=0.5, box_thresh=0.4)
    with open(experiment, encoding='utf-8') as handle:
        text = handle.read()
    with open(experiment, 'w', encoding='utf-8') as handle:  # decoder width 16, as tiny_mobilenet
        handle.write(re.sub(r'\n(\s+)k: 50\n', r'\n\1k: 50\n\1inner_channels: 16\n', text, count=1))
    model = tiny_mobilenet([network_input(path) for path in images[:4]])
    checkpoint = str(tmp / 'model.pth')
    torch.save(model.state_dict(), checkpoint)
    output = str(tmp / 'model.onnx')
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), _cwd(REPO_ROOT):
        code = convert_to_onnx.main([experiment, '--resume', checkpoint, '--output', output, '--image_short_side',
                                     '96', '--int8', '--calibration_dir', os.path.join(data_dir, 'test_images'),
                                     '--calibration_images', '4', '--evaluate'])
    return {'tmp': tmp, 'data': data_dir, 'images': images, 'exp': experiment, 'ckpt': checkpoint, 'onnx': output,
            'int8': int8_path(output), 'code': code, 'out': stdout.getvalue(), 'model': model}


@contextlib.contextmanager
def _cwd(path: str):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def test_int8_model_is_written_beside_the_float_one_and_is_valid(exported):
    import onnx
    assert exported['code'] == 0, exported['out']
    assert exported['int8'].endswith('model_int8.onnx') and os.path.isfile(exported['int8'])
    model = onnx.load(exported['int8'])
    onnx.checker.check_model(model)
    types = {node.op_type for node in model.graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear'} <= types
    assert is_quantized(exported['int8']) and not is_quantized(exported['onnx'])
    # the float signature is kept, so every ONNX entry point runs it unchanged
    assert [i.name for i in model.graph.input] == ['image'] and [o.name for o in model.graph.output] == ['probability']
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # int8 weights: the quantized weight initialisers of the convolutions are int8
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) > 20
    assert 'int8 vs float' in exported['out'] and 'calibration image(s)' in exported['out']


def test_int8_map_is_close_to_the_float_map(exported):
    from inference.runners import OnnxRunner
    float_runner, int8_runner = OnnxRunner(exported['onnx']), OnnxRunner(exported['int8'])
    assert 'dtype fp32' in float_runner.describe() and 'dtype int8' in int8_runner.describe()
    for path in exported['images'][4:]:  # images the calibration never saw
        inputs = network_input(path)
        reference, quantized = float_runner(inputs), int8_runner(inputs)
        assert quantized.shape == reference.shape and quantized.dtype == np.float32
        assert np.abs(quantized - reference).max() <= MAX_DIFFERENCE
        assert np.corrcoef(quantized.ravel(), reference.ravel())[0, 1] >= MIN_CORRELATION


def test_a_calibration_without_the_normalisation_fails_the_tolerance(exported, tmp_path):
    """The tolerances above catch a calibration that does not prepare images as the network's inputs are."""
    import cv2
    from inference.runners import OnnxRunner

    class RawPixels(CalibrationImages):
        def inputs(self, path):
            image = cv2.imread(path)
            return np.ascontiguousarray(cv2.resize(image, (96, 96)).transpose(2, 0, 1)[None].astype(np.float32))

    broken = str(tmp_path / 'broken_int8.onnx')
    quantize(exported['onnx'], broken, RawPixels(exported['images'][:4]))
    inputs = network_input(exported['images'][4])
    reference, quantized = OnnxRunner(exported['onnx'])(inputs), OnnxRunner(broken)(inputs)
    assert (np.abs(quantized - reference).max() > MAX_DIFFERENCE
            or np.corrcoef(quantized.ravel(), reference.ravel())[0, 1] < MIN_CORRELATION)


def test_calibration_reader_prepares_images_as_every_entry_point(exported):
    from inference.preprocess import prepare_image
    from data.image_io import read_image
    from data.input_size import InputSize
    size = InputSize('short_side', 96, 2560)
    reader = CalibrationImages(exported['images'][:2], input_size=size)
    assert len(reader) == 2
    batches = [reader.get_next(), reader.get_next()]
    assert reader.get_next() is None
    for path, batch in zip(exported['images'][:2], batches):
        image = read_image(path, orientation='stored')
        expected = prepare_image(image, size(*image.shape[:2]))
        assert list(batch) == ['image'] and batch['image'].dtype == np.float32
        np.testing.assert_array_equal(batch['image'], expected)
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()['image'], batches[0]['image'])


def test_calibration_reader_reads_stored_pixels(tmp_path):
    """Data sets are read with EXIF orientation ignored; so are calibration images."""
    from PIL import Image
    path = str(tmp_path / 'rotated.jpg')
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    Image.fromarray(np.zeros((64, 160, 3), np.uint8)).save(path, exif=exif)
    from data.input_size import InputSize
    batch = CalibrationImages([path], input_size=InputSize('short_side', 64)).get_next()
    assert batch['image'].shape == (1, 3, 64, 160)


def test_calibration_paths_spread_over_the_folder(tmp_path):
    for index in range(10):
        (tmp_path / f'{index:02d}.jpg').write_bytes(b'')
    (tmp_path / 'notes.txt').write_text('not an image')
    picked = [os.path.basename(path) for path in calibration_paths(str(tmp_path), 4)]
    assert picked == ['00.jpg', '03.jpg', '06.jpg', '09.jpg']
    assert len(calibration_paths(str(tmp_path), 64)) == 10
    os.makedirs(tmp_path / 'empty')
    with pytest.raises(ValueError, match='no images'):
        calibration_paths(str(tmp_path / 'empty'), 4)
    with pytest.raises(ValueError, match='not a folder'):
        calibration_paths(str(tmp_path / 'missing'), 4)


def test_the_float_file_is_never_overwritten(exported, tmp_path, capsys):
    before = sha256(exported['onnx'])
    with pytest.raises(ValueError, match='must not overwrite'):
        quantize(exported['onnx'], exported['onnx'], CalibrationImages(exported['images'][:1]))
    assert sha256(exported['onnx']) == before
    with _cwd(REPO_ROOT):
        code = convert_to_onnx.main([exported['exp'], '--resume', exported['ckpt'], '--output', exported['onnx'],
                                     '--int8', '--int8_output', exported['onnx'], '--calibration_dir',
                                     exported['data']])
    assert code == 2 and 'must not overwrite' in capsys.readouterr().err
    assert sha256(exported['onnx']) == before
    # quantizing again writes the int8 file only; the float input is read, never written
    # (over an earlier file: replaced whole, keeping its mode, nothing left beside it)
    again = str(tmp_path / 'again_int8.onnx')
    with open(again, 'wb') as handle:
        handle.write(b'an earlier int8 model')
    os.chmod(again, 0o640)
    quantize(exported['onnx'], again, CalibrationImages(exported['images'][:1]))
    assert sha256(exported['onnx']) == before and is_quantized(again)
    assert os.stat(again).st_mode & 0o777 == 0o640 and os.listdir(tmp_path) == ['again_int8.onnx']


def test_int8_flags_need_int8_and_a_calibration_folder(exported, capsys):
    with _cwd(REPO_ROOT):
        assert convert_to_onnx.main([exported['exp'], '--resume', exported['ckpt'], '--output', 'x.onnx',
                                     '--calibration_dir', exported['data']]) == 2
        assert 'only with --int8' in capsys.readouterr().err
        assert convert_to_onnx.main([exported['exp'], '--resume', exported['ckpt'], '--output', 'x.onnx',
                                     '--int8']) == 2
        assert 'needs --calibration_dir' in capsys.readouterr().err


def test_nodes_left_in_float_are_not_quantized(exported, tmp_path):
    import onnx
    head = nodes_with_prefix(exported['onnx'], [HEAD])
    assert any(name.endswith('Sigmoid') for name in head)
    output = str(tmp_path / 'head_float_int8.onnx')
    summary = quantize(exported['onnx'], output, CalibrationImages(exported['images'][:2]), float_nodes=head)
    assert summary.float_nodes == head and 'kept in float' in summary.describe()
    graph = onnx.load(output).graph
    producers = {out: node for node in graph.node for out in node.output}
    sigmoid = next(node for node in graph.node if node.op_type == 'Sigmoid')
    assert producers[sigmoid.input[0]].op_type == 'ConvTranspose'  # float in, not a DequantizeLinear
    assert graph.output[0].name in sigmoid.output  # and no QuantizeLinear after it
    with pytest.raises(ValueError, match='no node'):
        nodes_with_prefix(exported['onnx'], ['/no/such/layer'])


def test_evaluate_reports_pytorch_float_and_int8_on_the_evaluation_data(exported):
    rows = re.findall(r'\| synthetic \| (box|polygon) \| ([^|]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (\d+) \|',
                      exported['out'])
    models = {(mode, name.strip()): (float(p), float(r), float(f), int(n)) for mode, name, p, r, f, n in rows}
    for mode in ('box', 'polygon'):
        assert {name for m, name in models if m == mode} == {'PyTorch fp32', 'onnxruntime fp32', 'onnxruntime int8'}
        # the float export detects what PyTorch detects
        assert models[mode, 'PyTorch fp32'] == models[mode, 'onnxruntime fp32']
        assert models[mode, 'onnxruntime int8'][3] == 6
    assert re.search(r'synthetic box: int8 F-measure change [+-]\d\.\d{4}', exported['out'])


def test_demo_and_text_detector_run_the_int8_model(exported, tmp_path):
    import cv2
    from inference.detector import TextDetector
    from data.synthetic import FontBank, find_fonts, generate_image
    scene, _ = generate_image(np.random.default_rng(7), FontBank(find_fonts('builtin')), 160)
    image = str(tmp_path / 'scene.jpg')
    cv2.imwrite(image, scene)
    with _cwd(REPO_ROOT):
        code = demo.main([exported['exp'], '--onnx', exported['int8'], '--image_path', image, '--image_short_side',
                          '96', '--result_dir', str(tmp_path / 'out'), '--visualize'])
    assert code == 0
    assert os.path.isfile(tmp_path / 'out' / 'scene.txt') and os.path.isfile(tmp_path / 'out' / 'scene.jpg')
    quantized = TextDetector(exported['exp'], onnx=exported['int8'], image_short_side=96)(image)
    reference = TextDetector(exported['exp'], onnx=exported['onnx'], image_short_side=96)(image)
    from data.input_size import InputSize
    assert quantized.input_size == reference.input_size == InputSize('short_side', 96)(*scene.shape[:2])
    assert np.abs(quantized.probability - reference.probability).max() <= MAX_DIFFERENCE
    with open(tmp_path / 'out' / 'scene.txt', encoding='utf-8') as handle:
        assert handle.read() == ''.join(line + '\n' for line in quantized.lines())


def test_bench_deploy_skips_rapidocr_cleanly_when_it_is_not_installed(monkeypatch):
    import builtins
    from benchmarks import bench_deploy
    real_import = builtins.__import__

    def no_rapidocr(name, *args, **kwargs):
        if name.startswith('rapidocr_onnxruntime'):
            raise ImportError(f'No module named {name!r}')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_rapidocr)
    assert bench_deploy.rapidocr_contender(736, 2) is None
    assert 'make bench-deps' in bench_deploy.RAPIDOCR_MISSING


def test_rapidocr_detector_runs_at_our_input_size():
    """RapidOCR (a benchmark-only dependency) configured as bench_deploy configures it: the same network input as
    ours for a 1280x720 image, from the ONNX file inside its wheel."""
    pytest.importorskip('rapidocr_onnxruntime', reason='benchmark-only dependency, not installed (make bench-deps)')
    from benchmarks import bench_deploy
    from data.input_size import InputSize
    contender = bench_deploy.rapidocr_contender(736, 2)
    assert contender.input_size(720, 1280) == InputSize('short_side', 736)(720, 1280) == (736, 1312)
