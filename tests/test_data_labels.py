"""Label maps of hand-made polygons against values worked out by hand and a per-pixel reference."""
import math

import numpy as np
import pytest
import torch

from data.processes import (FilterKeys, ICDARCollectFN, MakeBorderMap, MakeICDARData, MakeSegDetectionData,
                            NormalizeImage)

RECT = [[10, 10], [50, 10], [50, 30], [10, 30]]  # 40 x 20: A = 800, L = 120, D = 800 * 0.84 / 120 = 5.6


def labelled(lines, height=40, width=60, training=True):
    data = {'image': np.zeros((height, width, 3), np.uint8), 'lines': lines, 'is_training': training,
            'filename': 'f.jpg'}
    data = MakeICDARData().process(data)
    data = MakeSegDetectionData().process(data)
    return MakeBorderMap().process(data)


def test_make_icdar_data_contract():
    data = MakeICDARData().process({'image': np.zeros((7, 9, 3), np.uint8), 'is_training': True,
                                    'lines': [{'poly': RECT, 'text': 'x'}, {'poly': RECT, 'text': '###'}]})
    assert 'lines' not in data and data['shape'] == [7, 9]
    assert data['polygons'][0].dtype == np.float32 and data['polygons'][0].shape == (4, 2)
    assert data['ignore_tags'].dtype == np.bool_ and data['ignore_tags'].tolist() == [False, True]


def test_probability_map_is_the_shrunk_rectangle():
    data = labelled([{'poly': RECT, 'text': 'x'}])
    gt, mask = data['gt'], data['mask']
    assert gt.shape == (1, 40, 60) and gt.dtype == np.float32 and mask.shape == (40, 60)
    # shrunk by D = 5.6: x in [15.6, 44.4], y in [15.6, 24.4]
    assert (gt[0, 16:25, 16:45] == 1).all()
    outside = np.ones((40, 60), bool)
    outside[15:26, 15:46] = False
    assert (gt[0][outside] == 0).all() and (mask == 1).all()


def test_dont_care_and_small_polygons_are_masked():
    small = [[30, 33], [40, 33], [40, 38], [30, 38]]  # 5 px tall < min_text_size 8
    data = labelled([{'poly': RECT, 'text': '###'}, {'poly': small, 'text': 'tiny'}])
    assert (data['gt'] == 0).all()
    assert (data['mask'][11:30, 11:50] == 0).all() and (data['mask'][34:38, 31:40] == 0).all()
    assert data['mask'][2, 2] == 1 and data['ignore_tags'].tolist() == [True, True]
    assert (data['thresh_mask'] == 0).all() and np.allclose(data['thresh_map'], 0.3)


def test_evaluation_keeps_the_annotated_dont_care_flags():
    # A small cared-for word is left out of the training targets, but evaluation must still score it.
    small = [[30, 33], [40, 33], [40, 38], [30, 38]]
    data = labelled([{'poly': RECT, 'text': '###'}, {'poly': small, 'text': 'tiny'}], training=False)
    assert data['ignore_tags'].tolist() == [True, False]
    assert (data['mask'][34:38, 31:40] == 0).all()


def test_training_clips_and_drops_tiny_polygons():
    data = labelled([{'poly': [[-20, 5], [30, 5], [30, 25], [-20, 25]], 'text': 'a'},
                     {'poly': [[5, 35], [5.5, 35], [5.5, 35.5]], 'text': 'b'}])
    assert data['polygons'][0][:, 0].min() == 0 and data['ignore_tags'].tolist() == [False, True]


@pytest.mark.parametrize('point, expected', [
    ((30, 10), 0.7),                                   # on the edge: distance 0
    ((30, 20), 0.3),                                   # 10 px inside, beyond D
    ((30, 13), 0.3 + 0.4 * (1 - 3 / 5.6)),             # 3 px inside
    ((30, 7), 0.3 + 0.4 * (1 - 3 / 5.6)),              # 3 px outside
    ((7, 7), 0.3 + 0.4 * (1 - math.sqrt(18) / 5.6)),   # outside the corner: distance to the vertex
    ((0, 0), 0.3),
])
def test_border_map_hand_values(point, expected):
    data = labelled([{'poly': RECT, 'text': 'x'}])
    x, y = point
    assert data['thresh_map'][y, x] == pytest.approx(expected, abs=1e-5)


def test_border_mask_is_the_round_dilated_polygon():
    mask = labelled([{'poly': RECT, 'text': 'x'}])['thresh_mask']
    assert mask[5, 30] == 1 and mask[3, 30] == 0      # 5 px above the top edge (< D) / 7 px (> D)
    # round join: (7, 7) is 4.24 from the corner (< D); (5, 5) is 7.07 away, though inside a mitred square
    assert mask[7, 7] == 1 and mask[5, 5] == 0
    assert mask[5, 10] == 1 and mask[3, 10] == 0      # straight above the corner: 5 px / 7 px
    assert mask[20, 30] == 1


def point_segment_distance(px, py, ax, ay, bx, by):
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    return math.hypot(px - ax - t * dx, py - ay - t * dy)


def test_border_map_matches_per_pixel_reference():
    rng = np.random.default_rng(7)
    polygons = [np.array([[5, 8], [40, 4], [44, 22], [30, 30], [8, 20]], float),      # non-convex-ish pentagon
                np.array([[50, 40], [75, 35], [78, 60], [52, 58]], float),           # overlaps the canvas edge
                np.array([[20, 45], [34, 45], [34, 80], [20, 80]], float) + 0.37,    # leaves the canvas
                np.array([[30, 20], [55, 25], [45, 50]], float)]                    # overlaps the first
    polygons += [np.array([[x, y], [x + w, y + 3], [x + w, y + h], [x, y + h - 2]])
                 for x, y, w, h in rng.uniform([0, 0, 10, 8], [60, 60, 30, 20], (3, 4))]
    height, width = 64, 72
    data = {'image': np.zeros((height, width, 3), np.uint8), 'polygons': [p.astype(np.float32) for p in polygons],
            'ignore_tags': np.zeros(len(polygons), bool), 'is_training': False}
    fast = MakeBorderMap().process(data)['thresh_map']
    reference = np.zeros((height, width))
    for polygon in polygons:
        polygon = polygon.astype(np.float32).astype(np.float64)
        x, y = polygon[:, 0], polygon[:, 1]
        area = 0.5 * abs(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
        perimeter = np.sum(np.hypot(np.roll(x, -1) - x, np.roll(y, -1) - y))
        distance = area * (1 - 0.4 ** 2) / perimeter
        for row in range(height):
            for col in range(width):
                nearest = min(point_segment_distance(col, row, *polygon[i], *polygon[(i + 1) % len(polygon)])
                              for i in range(len(polygon)))
                reference[row, col] = max(reference[row, col], 1 - min(nearest / distance, 1.0))
    reference = reference * 0.4 + 0.3
    assert np.abs(fast - reference).max() <= 1e-3


def test_normalize_filter_and_collate():
    image = np.zeros((4, 5, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 0, 100
    tensor = NormalizeImage().process({'image': image})['image']
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (3, 4, 5)
    assert torch.allclose(tensor[:, 0, 0], torch.tensor([(255 - 122.67891434) / 255, (0 - 116.66876762) / 255,
                                                         (100 - 104.00698793) / 255]))
    assert np.array_equal(NormalizeImage.restore(tensor), image)
    kept = FilterKeys(superfluous=['polygons', 'shape']).process({'image': 1, 'polygons': 2, 'shape': 3, 'gt': 4})
    assert kept == {'image': 1, 'gt': 4}
    samples = [{'image': torch.zeros(3, 8, 8), 'polygons': [np.zeros((4, 2), np.float32)],
                'ignore_tags': np.array([False]), 'shape': [16, 16], 'filename': f'{i}.jpg'} for i in range(2)]
    batch = ICDARCollectFN()(samples)
    assert tuple(batch['image'].shape) == (2, 3, 8, 8) and batch['filename'] == ['0.jpg', '1.jpg']
    assert batch['shape'] == [[16, 16], [16, 16]] and len(batch['polygons']) == 2
    with pytest.raises(ValueError, match='different sizes'):
        ICDARCollectFN()([samples[0], dict(samples[1], image=torch.zeros(3, 8, 9))])
