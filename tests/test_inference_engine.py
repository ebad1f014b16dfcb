"""Inference engine: sizes, normalisation, EXIF, runners, pipelined == sequential."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data.normalization import normalize
from inference.report import format_speed, same_detections
from inference.engine import InferenceEngine, StageTimer
from inference.runners import TorchRunner
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


@pytest.mark.parametrize('backend', ['extension', 'torchvision'])
def test_cpu_bf16_runs_deformable_convolutions_in_bf16_only_with_the_extension(backend):
    """bf16 on the CPU: the extension's bfloat16 inference path keeps the deformable layers in bf16 like the rest;
    with torchvision's op (no bfloat16) they stay in float32, inputs cast up and the output back."""
    from assets.ops.dcn import ModulatedDeformConv, extension_has_cpu_bf16, use_backend
    if backend == 'extension' and not extension_has_cpu_bf16():
        pytest.skip('the dcn extension (with its bfloat16 CPU path) is not built')
    inputs = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    reference = TorchRunner(tiny_model('deformable_resnet18'))(inputs)
    with use_backend(backend):
        runner = TorchRunner(tiny_model('deformable_resnet18'), precision='bf16', channels_last=True)
        deformable = [m for m in runner.model.modules() if isinstance(m, ModulatedDeformConv)]
        want = torch.bfloat16 if backend == 'extension' else torch.float32
        assert deformable and all(m.weight.dtype == want for m in deformable)
        assert runner.deformable_dtype == want
        assert next(runner.model.decoder.parameters()).dtype == torch.bfloat16
        prob = runner(inputs)
    assert prob.dtype == np.float32 and prob.shape == reference.shape
    # bf16 keeps ~3 significant digits: the maps agree loosely, not exactly
    assert np.abs(prob - reference).mean() < 0.05


def test_auto_precision_follows_native_bf16(monkeypatch):
    import inference.runners as inference
    monkeypatch.setattr(inference, 'cpu_bf16_is_native', lambda: True)
    assert inference.resolve_precision('cpu')[0] == 'bf16'
    runner = TorchRunner(tiny_model('deformable_resnet18'), precision='auto')
    assert runner.precision == 'bf16' and 'natively' in runner.describe()
    monkeypatch.setattr(inference, 'cpu_bf16_is_native', lambda: False)
    runner = TorchRunner(tiny_model('deformable_resnet18'), precision='auto')
    assert runner.precision == 'fp32' and runner.dtype == torch.float32 and 'no native bf16' in runner.describe()
    with pytest.raises(ValueError, match='precision'):
        TorchRunner(tiny_model('deformable_resnet18'), precision='int8')


def test_channels_last_fp32_matches_contiguous():
    inputs = np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)
    reference = TorchRunner(tiny_model('deformable_resnet18'))(inputs)
    channels_last = TorchRunner(tiny_model('deformable_resnet18'), channels_last=True)(inputs)
    assert np.abs(channels_last - reference).max() < 1e-4


# ------------------------------------------------------------------ batched, multi-threaded detect_many (issue 17)
def _scene(height, width, seed):
    """Dark bars on a light noisy background, so the random model gives detections."""
    rng = np.random.default_rng(seed)
    image = rng.integers(170, 255, (height, width, 3), dtype=np.uint8)
    for _ in range(3):
        y, x = int(rng.integers(0, height - 8)), int(rng.integers(0, width - 20))
        image[y:y + 8, x:x + 20] = rng.integers(0, 60, 3, dtype=np.uint8)
    return image


@pytest.fixture(scope='module')
def detector_setup(module_tmp):
    """A TextDetector over a tiny random-init deformable ResNet-18 and a list of images: five of one size, an
    unreadable path among them, one of another size, two more of the first size."""
    from inference.detector import TextDetector
    from inference_helpers import save_checkpoint, write_experiment
    tmp = module_tmp('batched')
    experiment = write_experiment(str(tmp), str(tmp), thresh=0.5, box_thresh=0.4)
    checkpoint = save_checkpoint(tiny_model('deformable_resnet18'), str(tmp / 'model.pth'))
    detector = TextDetector(experiment, checkpoint, device='cpu', image_short_side=64)
    bad = tmp / 'broken.jpg'
    bad.write_bytes(b'not an image')
    images = [_scene(96, 128, 0), _scene(96, 128, 1), str(bad), _scene(96, 128, 2), _scene(96, 128, 3),
              _scene(96, 128, 4), _scene(128, 96, 5), _scene(96, 128, 6), _scene(96, 128, 7)]
    return detector, images, str(bad), experiment, checkpoint


def _detect(detector, images, **options):
    errors = []
    results = list(detector.detect_many(images, on_error=lambda source, error: errors.append(source), **options))
    return results, errors


def _assert_same(first, second, probability=True):
    assert [r.source for r in first] == [r.source for r in second]
    for a, b in zip(first, second):
        assert a.image_size == b.image_size and a.input_size == b.input_size and a.capped == b.capped
        assert np.array_equal(a.image, b.image)
        assert len(a.polygons) == len(b.polygons) and all(np.array_equal(p, q) for p, q in zip(a.polygons, b.polygons))
        assert a.scores == b.scores
        if probability:
            assert np.array_equal(a.probability, b.probability)


def test_batched_detect_many_groups_same_size_images_and_gives_the_plain_pass_detections(detector_setup):
    detector, images, bad, _, _ = detector_setup
    plain, plain_errors = _detect(detector, images)
    assert plain_errors == [bad] and len(plain) == 8
    assert sum(len(result) for result in plain) > 0  # something to compare
    real_runner = detector.engine.runner
    calls = []

    def one_at_a_time(batch):  # the network on each image alone: exactly the batch-1 maps
        calls.append(len(batch))
        return np.concatenate([real_runner(batch[index:index + 1]) for index in range(len(batch))])

    detector.engine.runner = one_at_a_time
    try:
        for options in ({'batch_size': 4}, {'batch_size': 4, 'workers': 2, 'pipelined': True}):
            calls.clear()
            batched, errors = _detect(detector, images, **options)
            # 5 of one size (the unreadable one skipped), 1 of another, 2 of the first: batches of 4, 1, 1, 2
            assert calls == [4, 1, 1, 2], options
            assert errors == [bad]
            _assert_same(plain, batched)
    finally:
        detector.engine.runner = real_runner


def test_batched_forward_is_the_same_pipelined_or_not_and_close_to_batch_1(detector_setup):
    detector, images, _, _, _ = detector_setup
    plain, _ = _detect(detector, images)
    sequential, _ = _detect(detector, images, batch_size=4)
    timer = StageTimer()
    pipelined, _ = _detect(detector, images, batch_size=4, workers=2, pipelined=True, timer=timer)
    # the same batches through the same network: identical, whatever the threads
    _assert_same(sequential, pipelined)
    assert timer.images == 8 and timer.seconds['forward'] > 0 and timer.seconds['postprocess'] > 0
    assert set(timer.waits) == {'data', 'postprocess'}
    # a batch of 4 through oneDNN is not bit for bit a batch of 1 on the CPU, but close (see detect_many)
    for a, b in zip(plain, sequential):
        assert a.source == b.source and a.input_size == b.input_size
        assert np.abs(a.probability - b.probability).max() < 1e-4


def test_batched_detect_many_stops_cleanly_and_checks_its_arguments(detector_setup):
    import threading
    import time
    detector, images, _, _, _ = detector_setup
    stream = detector.detect_many(images, batch_size=2, workers=2, pipelined=True, on_error=lambda *_: None)
    first = next(stream)
    assert first.source == '<array 0>'
    stream.close()
    deadline = time.time() + 10
    while time.time() < deadline and any(thread.name.startswith(('detector-data', 'inference-'))
                                         for thread in threading.enumerate()):
        time.sleep(0.05)
    assert not [thread.name for thread in threading.enumerate()
                if thread.name.startswith(('detector-data', 'inference-'))]
    with pytest.raises(ValueError, match='batch_size'):
        list(detector.detect_many(images, batch_size=0))
    with pytest.raises(ValueError, match='workers'):
        list(detector.detect_many(images, workers=-1))
    # without on_error an unreadable image still raises, with worker threads too
    from data.image_io import DataError
    with pytest.raises(DataError, match='broken'):
        list(detector.detect_many(images, batch_size=4, workers=2))


def test_runner_stacks_on_the_cpu_and_refuses_cuda_graphs_there():
    from inference.preprocess import stack_inputs
    runner = TorchRunner(tiny_model('resnet18'))
    one = np.zeros((1, 3, 32, 32), np.float32)
    assert stack_inputs(runner, [one]) is one
    assert stack_inputs(runner, [one, one + 1]).shape == (2, 3, 32, 32)
    assert stack_inputs(lambda images: images, [one, one]).shape == (2, 3, 32, 32)  # a runner without stack
    with pytest.raises(ValueError, match='CUDA'):
        TorchRunner(tiny_model('resnet18'), cuda_graphs=True)


def test_engine_post_processes_the_images_of_a_batch_in_parallel_with_the_same_results():
    from inference.engine import image_of_batch
    engine = InferenceEngine(TorchRunner(tiny_model('resnet18')),
                             SegDetectorRepresenter(thresh=0.5, box_thresh=0.4, max_candidates=1000))
    rng = np.random.default_rng(3)
    batches = [{'image': rng.standard_normal((3, 3, 64, 96)).astype(np.float32) * 0.5,
                'shape': [(128, 192), (64, 96), (100, 150)], 'filename': ['a', 'b', 'c']} for _ in range(2)]
    whole = list(engine.run(batches))
    for pipelined in (False, True):
        split = list(engine.run(batches, pipelined=pipelined, post_workers=3))
        assert same_detections(whole, split)
    assert sum(len(boxes) for result in whole for boxes in result.boxes) > 0
    single = image_of_batch(batches[0], 1, 3)
    assert single['shape'] == [(64, 96)] and single['filename'] == ['b'] and single['image'].shape == (1, 3, 64, 96)


# ------------------------------------------------------------------ CUDA (skipped without a GPU)
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
@pytest.mark.parametrize('channels_last', [False, True])
def test_cuda_runner_page_locked_batches_and_graphs_give_the_eager_maps(precision, channels_last, monkeypatch):
    from assets.ops.dcn import extension_has_cuda
    # deterministic cuDNN kernels, so that the equalities below test the runner, not cuDNN's algorithm choice
    # (bench_inference reports whether the default kernels repeat themselves bit for bit)
    monkeypatch.setattr(torch.backends.cudnn, 'deterministic', True)
    eager = TorchRunner(tiny_model('deformable_resnet18'), 'cuda', precision, channels_last)
    graphed = TorchRunner(tiny_model('deformable_resnet18'), 'cuda', precision, channels_last, cuda_graphs=True)
    if precision == 'fp16':
        # the extension's CUDA kernels run in the network's dtype; torchvision's op (no extension) in float32
        assert eager.deformable_dtype == (torch.float16 if extension_has_cuda() else torch.float32)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((1, 3, 64, 96)).astype(np.float32) for _ in range(3)]
    batch = eager.stack(arrays)
    assert torch.is_tensor(batch) and batch.is_pinned() and batch.shape == (3, 3, 64, 96)
    assert np.array_equal(batch.numpy(), np.concatenate(arrays))
    expected = eager(batch)
    assert expected.dtype == np.float32 and expected.shape == (3, 1, 64, 96)
    assert np.array_equal(eager(np.concatenate(arrays)), expected)  # pageable NumPy input: the same
    for _ in range(2):  # capture, then replay
        assert np.array_equal(graphed(graphed.stack(arrays)), expected)
    assert np.array_equal(graphed(arrays[1]), eager(arrays[1]))  # another shape: its own graph
    assert len(graphed._graphs) == 2
    reference = TorchRunner(tiny_model('deformable_resnet18'))(np.concatenate(arrays))  # the CPU, fp32
    # the same function as on the CPU (cuDNN uses TF32 for float32 convolutions by default: loose bounds)
    assert np.abs(expected - reference).max() < (0.05 if precision == 'fp32' else 0.1)
    assert np.abs(expected - reference).mean() < 0.01


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_cuda_batched_pipelined_detect_many_is_the_sequential_batched_pass(detector_setup, monkeypatch):
    from inference.detector import TextDetector
    monkeypatch.setattr(torch.backends.cudnn, 'deterministic', True)  # as above
    _, images, bad, experiment, checkpoint = detector_setup
    detector = TextDetector(experiment, checkpoint, device='cuda', precision='fp16', channels_last=True,
                            image_short_side=64)
    sequential, errors = _detect(detector, images, batch_size=4)
    pipelined, _ = _detect(detector, images, batch_size=4, workers=2, pipelined=True)
    assert errors == [bad] and len(sequential) == 8
    _assert_same(sequential, pipelined)
    graphs = TextDetector(experiment, checkpoint, device='cuda', precision='fp16', channels_last=True,
                          image_short_side=64, cuda_graphs=True)
    _assert_same(sequential, _detect(graphs, images, batch_size=4, workers=2, pipelined=True)[0])
