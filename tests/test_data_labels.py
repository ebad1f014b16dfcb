"""Label maps of hand-made polygons against values worked out by hand and a per-pixel reference."""
import math

import cv2
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


def five_blocks(left=16.0, top=100.0):
    """One text line 12 px tall (y in [top, top + 12]): five 64 px blocks joined by 12 px long, 4 px tall
    necks (y in [top + 4, top + 8]). A = 5 * 64 * 12 + 4 * 12 * 4 = 4032 px^2; L = 2 * 320 (block tops and
    bottoms) + 2 * 48 (neck tops and bottoms) + 16 * 4 (steps into the necks) + 2 * 12 (ends) = 824 px."""
    upper, lower, x = [], [], left
    for block in range(5):
        upper += [[x, top], [x + 64, top]]
        lower += [[x, top + 12], [x + 64, top + 12]]
        x += 64
        if block < 4:
            upper += [[x, top + 4], [x + 12, top + 4]]
            lower += [[x, top + 8], [x + 12, top + 8]]
            x += 12
    return np.array(upper + lower[::-1], dtype=np.float64)


def test_every_piece_of_a_split_shrink_is_text():
    import pyclipper
    polygon = five_blocks()
    distance = 4032 * (1 - 0.4 ** 2) / 824  # 4.110 px: over half a neck (2 px), under half a block (6 px)
    offset = pyclipper.PyclipperOffset(arc_tolerance=0.25 * 1000)  # pyclipper directly, at 1/1000 px
    offset.AddPath((polygon * 1000).astype(np.int64).tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    pieces = [np.array(p) / 1000 for p in offset.Execute(-distance * 1000)]
    assert len(pieces) == 5
    centres = [(16 + 32 + 76 * block, 106) for block in range(5)]
    # one piece per block, each spanning the block shrunk by D: x in [x0 + D, x0 + 64 - D], y in [100 + D, 112 - D]
    assert sorted(round(float(p[:, 0].mean() / 76 - 48 / 76)) for p in pieces) == [0, 1, 2, 3, 4]
    for piece in pieces:
        assert piece[:, 1].min() == pytest.approx(100 + distance, abs=0.05)
        assert piece[:, 1].max() == pytest.approx(112 - distance, abs=0.05)
    data = labelled([{'poly': polygon.tolist(), 'text': 'word'}], height=200, width=400)
    gt, mask = data['gt'][0], data['mask']
    assert data['ignore_tags'].tolist() == [False]
    for (x, y), x0 in zip(centres, range(16, 400, 76)):
        assert gt[y, x] == 1 and mask[y, x] == 1
        assert (gt[105:108, x0 + 6:x0 + 59] == 1).all()  # rows 105..107, columns x0 + 5 (+1 margin) ... x0 + 59
    for neck in range(4):
        assert gt[106, 16 + 64 + 76 * neck + 6] == 0   # neck centre: 2 px from its edges < D, not in the shrink
    # the text region is exactly five separate pieces, one per block, all inside the annotated polygon
    count, components = cv2.connectedComponents(gt.astype(np.uint8), connectivity=8)
    assert count - 1 == 5 and sorted(components[y, x] for x, y in centres) == [1, 2, 3, 4, 5]
    inside = np.zeros_like(gt)
    cv2.fillPoly(inside, [polygon.astype(np.int32).reshape(-1, 1, 2)], 1)
    assert (gt <= inside).all()
    assert data['thresh_mask'][106, 16 + 64 + 76 * 3 + 6] == 1


def test_border_mask_leaves_the_hole_of_a_closed_up_dilation_empty():
    # A 100 x 100 square ring, 20 px thick, with a 10 px gap in its right side (a "C"), at (20, 20):
    # A = 10000 - 3600 - 20 * 10 = 6200; L = 3 * 100 + 2 * 45 + 2 * 20 + 3 * 60 + 2 * 25 = 660;
    # D = 6200 * 0.84 / 660 = 7.89 > 10 / 2, so the dilation closes the gap and encloses the part of the
    # cavity farther than D from the ring: x, y in [40 + D, 100 - D] = [47.9, 92.1].
    ring = np.array([[0, 0], [100, 0], [100, 45], [80, 45], [80, 20], [20, 20], [20, 80], [80, 80], [80, 55],
                     [100, 55], [100, 100], [0, 100]], float) + 20
    data = labelled([{'poly': ring.tolist(), 'text': 'C'}], height=140, width=140)
    mask = data['thresh_mask']
    assert mask[70, 70] == 0 and mask[49, 70] == 0 and mask[70, 91] == 0       # in the hole
    assert mask[46, 70] == 1 and mask[70, 94] == 1 and mask[70, 115] == 1      # within D of the ring; the gap
    assert mask[30, 30] == 1 and mask[10, 70] == 0                              # the ring; 10 px outside it
    assert data['thresh_map'][70, 70] == pytest.approx(0.3)


def bowtie_of(rect):
    """The rectangle with its 2nd and 3rd corners swapped (a self-crossing "bow-tie")."""
    return [rect[0], rect[2], rect[1], rect[3]]


def test_training_bowtie_is_trained_as_the_whole_quadrilateral():
    from data.ground_truth import sanitize_lines
    # RECT with two corners swapped: make_valid gives two triangles of 200 px^2 each (half of 40 x 20);
    # the repair restores the 800 px^2 rectangle, so the labels equal those of RECT itself.
    lines = sanitize_lines([{'poly': bowtie_of(RECT), 'text': 'x'}])
    data, reference = labelled(lines), labelled([{'poly': RECT, 'text': 'x'}])
    assert (data['gt'][0, 16:25, 16:45] == 1).all() and (data['mask'] == 1).all()
    for key in ('gt', 'mask', 'thresh_mask'):
        assert np.array_equal(data[key], reference[key])
    assert np.allclose(data['thresh_map'], reference['thresh_map'], atol=1e-6)  # edges visited in another order


def test_training_crossing_curve_is_dont_care_over_its_hull():
    from data.ground_truth import sanitize_lines
    # a 5-point outline whose sides cross; hull = the 40 x 20 box at (10, 14) plus the triangle
    # (10, 14), (50, 14), (30, 4) above it
    crossing = [[10, 14], [50, 14], [50, 34], [30, 4], [10, 34]]
    data = labelled(sanitize_lines([{'poly': crossing, 'text': 'x'}]))
    assert data['ignore_tags'].tolist() == [True] and (data['gt'] == 0).all()
    assert data['mask'][30, 30] == 0 and data['mask'][8, 30] == 0 and data['mask'][20, 12] == 0
    assert data['mask'][36, 30] == 1 and data['mask'][5, 12] == 1
    assert (data['thresh_mask'] == 0).all()


def test_evaluation_ground_truth_reaches_the_batch_unrepaired(tmp_path):
    from data import DataLoader, ImageDataset
    from data.processes import AugmentDetectionData
    bowtie = [[10, 10], [50, 30], [50, 10], [10, 30]]
    crossing = [[10, 44], [50, 44], [50, 64], [30, 34], [10, 64]]
    flat = [[60, 5], [70, 5], [80, 5]]  # three collinear points: zero area
    for folder in ('test_images', 'test_gts'):
        (tmp_path / folder).mkdir()
    cv2.imwrite(str(tmp_path / 'test_images' / 'a.jpg'), np.zeros((70, 90, 3), np.uint8))
    rows = [','.join(str(v) for point in poly for v in point) + ',w' for poly in (bowtie, crossing, flat)]
    (tmp_path / 'test_gts' / 'a.jpg.txt').write_text('\n'.join(rows) + '\n')
    (tmp_path / 'test_list.txt').write_text('a.jpg\n')
    processes = [AugmentDetectionData([['Resize', {'width': 64, 'height': 32}]], only_resize=True),
                 MakeICDARData(), MakeSegDetectionData(), NormalizeImage()]
    dataset = ImageDataset([str(tmp_path)], [str(tmp_path / 'test_list.txt')], processes, gt_format='converted',
                           on_bad_sample='raise')
    assert not dataset.is_training
    batch = next(iter(DataLoader(dataset, batch_size=1, num_workers=0, collect_fn=ICDARCollectFN())))
    assert tuple(batch['image'].shape) == (1, 3, 32, 64) and batch['shape'] == [[70, 90]]
    polygons = batch['polygons'][0]
    assert [p.tolist() for p in polygons] == [bowtie, crossing, flat]
    assert batch['ignore_tags'][0].tolist() == [False, False, False]
    # the same file in training is repaired: the bow-tie becomes the rectangle, the others don't care
    train = ImageDataset([str(tmp_path)], [str(tmp_path / 'test_list.txt')], [], gt_format='converted',
                         is_training=True)
    lines = train[0]['lines']
    assert lines[0] == {'poly': [[10, 10], [50, 10], [50, 30], [10, 30]], 'text': 'w'}
    assert [line['text'] for line in lines[1:]] == ['###', '###']
