"""Tiled inference (inference.tiling): the tiles' cores partition the input, a network with a receptive field
within half the overlap gives exactly the whole-image map, a word across a tile border comes out once and whole,
and the Python API tiles the inputs the long-side cap would shrink."""
from __future__ import annotations

import numpy as np
import pytest

from inference.tiling import TiledRunner, check_tiling, tile_spans
from structure.representers import SegDetectorRepresenter


@pytest.mark.parametrize('length', [32, 64, 1024, 1056, 2048, 2080, 3200, 10016])
@pytest.mark.parametrize('tile, overlap', [(1024, 256), (256, 64), (512, 0), (128, 64)])
def test_tile_cores_partition_the_axis(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    size = min(tile, length)
    position = 0
    for index, (start, end, core_start, core_end) in enumerate(spans):
        assert end - start == size and start % 32 == 0 and 0 <= start and end <= length
        assert core_start == position and start <= core_start < core_end <= end
        # away from the image's own borders, a core keeps at least overlap / 2 from its tile's cuts
        if index > 0:
            assert core_start - start >= overlap // 2
        if index < len(spans) - 1:
            assert end - core_end >= overlap // 2
        position = core_end
    assert position == length
    assert spans[0][0] == 0 and spans[-1][1] == length


def box_sum_runner(radius: int):
    """A 'network' whose output at a pixel depends only on the input within ``radius`` px (zero outside the
    image): the sigmoid of the local sum of the first channel. Counts its calls and the tile shapes it saw."""
    calls = []

    def run(images):
        images = np.asarray(images)
        calls.append(images.shape)
        padded = np.pad(images[:, :1], ((0, 0), (0, 0), (radius, radius), (radius, radius)))
        height, width = images.shape[2:]
        total = np.zeros((images.shape[0], 1, height, width), dtype=np.float64)
        for dy in range(2 * radius + 1):
            for dx in range(2 * radius + 1):
                total += padded[:, :, dy:dy + height, dx:dx + width]
        return (1 / (1 + np.exp(-total))).astype(np.float32)
    run.calls = calls
    return run


def test_tiled_map_equals_the_whole_map_for_a_local_network():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, 3, 320, 736)).astype(np.float32)
    runner = box_sum_runner(radius=5)
    whole = runner(images)
    tiled = TiledRunner(runner, tile_size=128, overlap=32, batch_size=3)
    runner.calls.clear()
    merged = tiled(images)
    assert np.array_equal(merged, whole)
    tiles = tiled.count(320, 736)
    assert tiles == len(tile_spans(320, 128, 32)) * len(tile_spans(736, 128, 32)) > 1
    assert sum(shape[0] for shape in runner.calls) == 2 * tiles  # every tile of both images, once
    assert max(shape[0] for shape in runner.calls) == 3 and all(shape[2:] == (128, 128) for shape in runner.calls)
    # a receptive field wider than half the overlap is not reproduced: the property above is not a tautology
    wide = box_sum_runner(radius=40)
    assert not np.array_equal(TiledRunner(wide, tile_size=128, overlap=32)(images), wide(images))


def test_torch_inputs_and_whole_inputs():
    import torch
    runner = box_sum_runner(radius=3)
    images = torch.randn(1, 3, 96, 640)
    merged = TiledRunner(lambda x: runner(x.numpy()), tile_size=128, overlap=64)(images)
    assert np.array_equal(merged, runner(images.numpy()))
    runner.calls.clear()
    small = TiledRunner(runner, tile_size=128, overlap=64, whole_up_to=640)
    assert np.array_equal(small(images.numpy()), runner(images.numpy()))
    assert runner.calls[-1] == (1, 3, 96, 640)  # up to whole_up_to: one piece
    with pytest.raises(ValueError, match='multiple of 32'):
        TiledRunner(runner, tile_size=128)(np.zeros((1, 3, 100, 150), np.float32))


def test_a_word_across_tile_borders_comes_out_once_and_whole():
    image = np.full((1, 3, 256, 1024), -1.0, dtype=np.float32)
    image[:, :, 100:124, 300:700] = 1.0  # one long word across several tile cuts of 128-px tiles
    runner = box_sum_runner(radius=2)
    representer = SegDetectorRepresenter(thresh=0.5, box_thresh=0.5, max_candidates=100)
    batch = {'shape': [(256, 1024)]}
    whole_boxes, _ = representer.represent(batch, runner(image))
    tiled_boxes, _ = representer.represent(batch, TiledRunner(runner, tile_size=128, overlap=32)(image))
    assert len(whole_boxes[0]) == len(tiled_boxes[0]) == 1
    np.testing.assert_array_equal(tiled_boxes[0], whole_boxes[0])
    xs, ys = tiled_boxes[0][0][:, 0], tiled_boxes[0][0][:, 1]
    assert xs.min() <= 300 and xs.max() >= 699 and ys.min() <= 100 and ys.max() >= 123


@pytest.mark.parametrize('tile, overlap', [(48, 0), (100, 32), (128, 96), (128, 48), (True, 0)])
def test_bad_tile_settings_are_refused(tile, overlap):
    with pytest.raises(ValueError, match='tile'):
        check_tiling(tile, overlap)


@pytest.fixture(scope='module')
def detector_files(module_tmp):
    from inference_helpers import save_checkpoint, tiny_model, write_experiment
    tmp = module_tmp('tiling')
    return (write_experiment(str(tmp), str(tmp), backbone='resnet18', thresh=0.5, box_thresh=0.4),
            save_checkpoint(tiny_model('resnet18'), str(tmp / 'model.pth')))


def test_the_api_tiles_what_the_cap_would_shrink(detector_files):
    from inference.detector import TextDetector
    experiment, checkpoint = detector_files
    strip = np.random.default_rng(1).integers(0, 255, (40, 900, 3), dtype=np.uint8)  # a long receipt strip
    options = dict(image_short_side=64, max_long_side=512, tile_size=256, tile_overlap=64)
    auto = TextDetector(experiment, checkpoint, **options)(strip)
    # the short-side rule gives 64 x ceil32(900 * 64 / 40) = 64 x 1440: over the cap, so tiled at that size
    assert auto.input_size == (64, 1440) and not auto.capped
    # 256-px tiles every 192 px: starts 0, 192, ..., 1152, then 1184 flush with the end: 8 tiles
    assert auto.tiles == 8 and auto.scale == pytest.approx(1440 / 900)
    off = TextDetector(experiment, checkpoint, tiling='off', **options)(strip)
    assert off.capped and off.tiles == 1 and max(off.input_size) == 512
    # an input within the cap goes through whole, as without tiling
    small = strip[:, :300]
    assert TextDetector(experiment, checkpoint, **options)(small).lines() == \
        TextDetector(experiment, checkpoint, tiling='off', **options)(small).lines()
    # tiling 'on' with image_scale 1: the image's own pixels, in tiles
    page = TextDetector(experiment, checkpoint, tiling='on', image_scale=1.0, tile_size=256, tile_overlap=64)(strip)
    assert page.input_size == (64, 928) and page.tiles == 5  # starts 0, 192, 384, 576, 672
    # the pixel limit scales a tiled input down, and says so: sqrt(40960 / 92160) = 2/3 of 64x1440, to 32s: 32x960
    limited = TextDetector(experiment, checkpoint, max_input_pixels=64 * 640, **options)(strip)
    assert limited.capped and limited.input_size == (32, 960)
    with pytest.raises(ValueError, match='tiling'):
        TextDetector(experiment, checkpoint, tiling='sometimes')


def test_the_demo_note_gives_the_scale_and_the_remedy():
    import argparse
    from demo import size_note
    from inference.detector import Detections
    args = argparse.Namespace(tile='off', max_long_side=2560, tile_size=1024)
    capped = Detections('receipt.png', [], [], image_size=(10000, 300), input_size=(2560, 96), capped=True)
    note = size_note(capped, args)
    assert 'receipt.png is 300x10000' in note and 'scale 0.26x' in note and '--tile auto' in note
    args.tile = 'auto'
    tiled = Detections('receipt.png', [], [], image_size=(10000, 300), input_size=(24544, 736), tiles=32)
    note = size_note(tiled, args)
    assert 'network input 736x24544 (scale 2.45x) in 32 tiles of 1024 px' in note
    assert size_note(Detections('photo.jpg', [], [], image_size=(720, 1280), input_size=(736, 1312)), args) == ''
