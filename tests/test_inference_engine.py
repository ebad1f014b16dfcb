"""Inference engine: sizes, normalisation, EXIF, runners, pipelined == sequential."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from concern.inference import (InferenceEngine, StageTimer, TorchRunner, format_speed, inference_size, normalize,
                               read_image_as_seen, same_detections)
from inference_helpers import tiny_model
from structure.representers import SegDetectorRepresenter


def test_inference_size_short_side_multiples_of_32_and_cap():
    # 480x640 -> short side 736: scale 736/480, width 981.3 -> 992 (nearest multiple of 32)
    assert inference_size(480, 640, 736) == (736, 992, False)
    # 100x3000 -> scale 7.36 would give 22080 long side: capped to 2560 -> scale 2560/3000, height 85.3 -> 96
    assert inference_size(100, 3000, 736, 2560) == (96, 2560, True)
    # tiny image: at least 32 on each side
    assert inference_size(10, 10, 32) == (32, 32, False)
    with pytest.raises(ValueError, match='positive'):
        inference_size(0, 10, 736)


def test_normalize_matches_the_training_pipeline():
    from data.processes import NormalizeImage
    image = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    expected = NormalizeImage().process({'image': image.copy()})['image'].numpy()
    assert np.array_equal(normalize(image), expected)


def test_read_image_applies_exif_orientation(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10] = (255, 0, 0)  # red (RGB) band on the left
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / 'rotated.jpg'
    image.save(path, exif=exif.tobytes(), quality=95)
    seen = read_image_as_seen(str(path))
    assert seen.shape == (40, 20, 3)  # displayed upright: portrait
    assert seen[:10, :, 2].mean() > 200 and seen[-10:, :, 2].mean() < 50  # red (BGR index 2) now on top
    (tmp_path / 'bad.jpg').write_bytes(b'not an image')
    assert read_image_as_seen(str(tmp_path / 'bad.jpg')) is None


def _batches(count=4, seed=0):
    rng = np.random.default_rng(seed)
    for index in range(count):
        height, width = (64, 96) if index % 2 else (96, 64)
        yield {'image': rng.standard_normal((1, 3, height, width)).astype(np.float32) * 0.5,
               'shape': [(height * 2, width * 2)]}


def test_pipelined_detections_identical_to_sequential():
    engine = InferenceEngine(TorchRunner(tiny_model('resnet18')),
                             SegDetectorRepresenter(thresh=0.5, box_thresh=0.4, max_candidates=1000))
    sequential_timer, pipelined_timer = StageTimer(), StageTimer()
    sequential = list(engine.run(_batches(), timer=sequential_timer))
    pipelined = list(engine.run(_batches(), pipelined=True, timer=pipelined_timer))
    assert sum(len(result.boxes[0]) for result in sequential) > 0  # something to compare
    assert same_detections(sequential, pipelined)
    for a, b in zip(sequential, pipelined):
        assert np.array_equal(a.prob, b.prob)
        assert a.batch['shape'] == b.batch['shape']  # order kept
    # the oracle notices a difference
    altered = list(engine.run(_batches(seed=1)))
    assert not same_detections(sequential, altered)
    assert sequential_timer.images == pipelined_timer.images == 4
    report = format_speed(sequential_timer, pipelined_timer, {'device': 'cpu'})
    for stage in ('data (sequential)', 'forward (sequential)', 'postprocess (sequential)',
                  'end-to-end (sequential)', 'end-to-end (pipelined)'):
        assert stage in report


def test_pipelined_propagates_data_errors():
    engine = InferenceEngine(TorchRunner(tiny_model('resnet18')), SegDetectorRepresenter())

    def failing():
        yield next(_batches())
        raise OSError('disk gone')

    with pytest.raises(OSError, match='disk gone'):
        list(engine.run(failing(), pipelined=True))


@pytest.mark.parametrize('precision', ['bf16'])
def test_reduced_precision_keeps_deformable_convolutions_in_float32(precision):
    from assets.ops.dcn import ModulatedDeformConv
    model = tiny_model('deformable_resnet18')
    inputs = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    reference = TorchRunner(tiny_model('deformable_resnet18'))(inputs)
    runner = TorchRunner(model, precision=precision, channels_last=True)
    deformable = [m for m in runner.model.modules() if isinstance(m, ModulatedDeformConv)]
    assert deformable and all(m.weight.dtype == torch.float32 for m in deformable)
    assert next(runner.model.decoder.parameters()).dtype == torch.bfloat16
    prob = runner(inputs)
    assert prob.dtype == np.float32 and prob.shape == reference.shape
    # bf16 keeps ~3 significant digits: the maps agree loosely, not exactly
    assert np.abs(prob - reference).mean() < 0.05


def test_channels_last_fp32_matches_contiguous():
    inputs = np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)
    reference = TorchRunner(tiny_model('deformable_resnet18'))(inputs)
    channels_last = TorchRunner(tiny_model('deformable_resnet18'), channels_last=True)(inputs)
    assert np.abs(channels_last - reference).max() < 1e-4
