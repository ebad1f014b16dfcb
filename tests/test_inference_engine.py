"""Inference engine: sizes, normalisation, EXIF, runners, pipelined == sequential."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from concern.inference import InferenceEngine, StageTimer, TorchRunner, format_speed, normalize, same_detections
from inference_helpers import tiny_model
from structure.representers import SegDetectorRepresenter


def test_normalize_matches_the_training_pipeline():
    from data.processes import NormalizeImage
    image = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    expected = NormalizeImage().process({'image': image.copy()})['image'].numpy()
    assert np.array_equal(normalize(image), expected)


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
