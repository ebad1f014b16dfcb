"""SegDetectorRepresenter: hand-drawn maps with known answers, and identity with the reference version."""
import cv2
import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from structure.representers import SegDetectorRepresenter
from structure.representers.reference import ReferenceRepresenter, random_probability_map


def rect_map(height=100, width=200, rects=(), value=0.9):
    prob = np.zeros((height, width), dtype=np.float32)
    for x0, y0, x1, y1 in rects:
        prob[y0:y1 + 1, x0:x1 + 1] = value
    return prob


def run(prob, shape=None, polygon=False, **options):
    representer = SegDetectorRepresenter(**options)
    shape = shape or prob.shape
    boxes, scores = representer.represent({'shape': [shape]}, torch.from_numpy(prob)[None, None], polygon)
    return boxes[0], scores[0]


def test_two_separate_rectangles_give_two_grown_boxes():
    # pixels x 10..49, y 20..29: the contour's rectangle is 39 x 9 (pixel centres), area 351, perimeter 96,
    # so it grows by D = 351 * 1.5 / 96 = 5.484 on every side and rounds to x 5..54, y 15..34.
    prob = rect_map(rects=[(10, 20, 49, 29), (100, 60, 179, 79)])
    boxes, scores = run(prob)
    assert boxes.dtype == np.int32 and boxes.shape == (2, 4, 2)
    order = np.argsort(boxes[:, 0, 0])
    np.testing.assert_array_equal(boxes[order[0]], [[5, 15], [54, 15], [54, 34], [5, 34]])
    # second: 79 x 19, area 1501, perimeter 196, D = 11.487 -> x 88.5..190.5, y 48.5..90.5 (rounded by clipper)
    second = boxes[order[1]]
    assert np.all(np.abs(second - [[88, 48], [191, 48], [191, 91], [88, 91]]) <= 1)
    assert scores == [pytest.approx(0.9, abs=1e-6)] * 2


def test_rotated_box_keeps_its_angle_and_area():
    prob = np.zeros((200, 300), dtype=np.float32)
    corners = cv2.boxPoints(((150.0, 100.0), (120.0, 30.0), 30.0))
    cv2.fillPoly(prob, [np.round(corners).astype(np.int32)], 0.95)
    boxes, scores = run(prob)
    # the integer box around a slanted region takes in some zero pixels along its edges
    assert len(boxes) == 1 and 0.85 < scores[0] <= 0.95
    box = boxes[0].astype(np.float64)
    top = box[1] - box[0]
    assert np.degrees(np.arctan2(top[1], top[0])) == pytest.approx(30.0, abs=2.0)
    # the drawn rectangle grown by D = area * 1.5 / perimeter on every side
    distance = 120 * 30 * 1.5 / 300
    expected = Polygon(corners).buffer(distance, join_style='mitre')
    found = Polygon(box)
    assert found.intersection(expected).area / found.union(expected).area > 0.9
    # clockwise in image coordinates starting top-left: the shoelace sum is negative
    x, y = box[:, 0], box[:, 1]
    assert np.sum((np.roll(x, -1) - x) * (np.roll(y, -1) + y)) < 0


def test_curved_band_in_polygon_mode_follows_the_curve():
    prob = np.zeros((200, 300), dtype=np.float32)
    cv2.ellipse(prob, (150, 150), (100, 80), 0, 180, 360, 0.9, 16)
    polygons, scores = run(prob, polygon=True)
    assert len(polygons) == 1 and scores[0] == pytest.approx(0.9, abs=0.02)
    polygon = polygons[0]
    assert polygon.dtype == np.int32 and polygon.ndim == 2 and polygon.shape[0] > 8
    shape = Polygon(polygon)
    assert shape.is_valid
    assert shape.area < 0.6 * shape.convex_hull.area  # an arch, not a box
    band = np.argwhere(prob > 0)[:, ::-1]
    inside = cv2.pointPolygonTest
    assert all(inside(polygon.reshape(-1, 1, 2).astype(np.float32), (float(x), float(y)), False) >= 0
               for x, y in band[::50])
    # in box mode the arch's rectangle is mostly background: its mean falls below box_thresh, and only
    # a low threshold keeps it, as one box
    assert run(prob)[0].shape == (0, 4, 2)
    assert run(prob, box_thresh=0.2)[0].shape == (1, 4, 2)


def test_region_below_box_thresh_is_dropped():
    prob = rect_map(rects=[(10, 20, 60, 40)], value=0.6)
    assert len(run(prob)[0]) == 0
    assert len(run(prob, polygon=True)[0]) == 0
    boxes, scores = run(prob, box_thresh=0.55)
    assert len(boxes) == 1 and scores[0] == pytest.approx(0.6, abs=1e-6)


def test_region_below_min_size_is_dropped():
    thin = rect_map(rects=[(10, 20, 80, 21)])  # 2 pixels high: the contour rectangle is 1 high
    assert len(run(thin)[0]) == 0
    assert len(run(thin, polygon=True)[0]) == 0
    assert len(run(thin, min_size=1)[0]) == 1  # 1 >= 1, then grown to well over 3


def test_empty_map_gives_empty_outputs():
    prob = np.zeros((64, 64), dtype=np.float32)
    boxes, scores = run(prob)
    assert boxes.shape == (0, 4, 2) and scores == []
    polygons, scores = run(prob, polygon=True)
    assert polygons == [] and scores == []


def test_rescaling_to_the_original_size():
    prob = rect_map(rects=[(10, 20, 49, 29), (100, 60, 179, 79)])
    native, _ = run(prob)
    doubled, _ = run(prob, shape=(200, 400))
    assert np.all(np.abs(doubled - 2 * native) <= 1)
    odd, _ = run(prob, shape=(37, 91))  # not a multiple: coordinates scale per axis and stay in the image
    assert np.all(np.abs(odd[..., 0] - native[..., 0] * 91 / 200) <= 1)
    assert np.all(np.abs(odd[..., 1] - native[..., 1] * 37 / 100) <= 1)


def test_boxes_are_clipped_to_the_image():
    prob = rect_map(rects=[(0, 0, 60, 20)])
    boxes, _ = run(prob, shape=(50, 100))
    assert boxes.min() == 0 and boxes[..., 0].max() <= 100 and boxes[..., 1].max() <= 50


def test_batch_inputs_tensor_shapes_and_dict():
    maps = [random_probability_map(120, 200, 6, seed=seed, noise_blobs=2) for seed in (1, 2)]
    shapes = [(240, 400), (120, 200)]
    representer = SegDetectorRepresenter(box_thresh=0.5)
    expected = [representer.boxes_from_map(prob, *shape) for prob, shape in zip(maps, shapes)]
    stacked = torch.from_numpy(np.stack(maps))
    batch = {'shape': torch.tensor(shapes)}
    for pred in (stacked[:, None], stacked, {'binary': stacked[:, None], 'thresh': stacked[:, None] * 0},
                 stacked.numpy(), stacked.double()):
        boxes_batch, scores_batch = representer.represent(batch, pred)
        assert len(boxes_batch) == 2
        for (boxes, scores), got_boxes, got_scores in zip(expected, boxes_batch, scores_batch):
            assert len(boxes) > 0
            np.testing.assert_array_equal(got_boxes, boxes)
            assert got_scores == scores


def test_bad_inputs_are_reported():
    representer = SegDetectorRepresenter()
    prob = torch.zeros(1, 1, 8, 8)
    with pytest.raises(KeyError, match="'shape'"):
        representer.represent({}, prob)
    with pytest.raises(ValueError, match='expected 1'):
        representer.represent({'shape': [(8, 8), (8, 8)]}, prob)
    with pytest.raises(ValueError, match=r'\(B, 1, H, W\)'):
        representer.represent({'shape': [(8, 8)]}, torch.zeros(1, 2, 8, 8))
    with pytest.raises(KeyError, match='binary'):
        representer.represent({'shape': [(8, 8)]}, {'thresh': prob})
    with pytest.raises(ValueError, match='score_mode'):
        SegDetectorRepresenter(score_mode='exact')


@pytest.mark.parametrize('score_mode', ['fast', 'slow'])
@pytest.mark.parametrize('polygon', [False, True])
def test_identical_to_the_reference_on_random_maps(score_mode, polygon):
    options = dict(score_mode=score_mode, box_thresh=0.6)
    fast = SegDetectorRepresenter(**options)
    reference = ReferenceRepresenter(**options)
    total = 0
    for seed in range(5):
        prob = random_probability_map(368, 640, 30, seed=seed)
        for shape in ((368, 640), (1000, 1777)):
            expected_boxes, expected_scores = reference.represent_map(prob, *shape, is_output_polygon=polygon)
            boxes, scores = (fast.polygons_from_map if polygon else fast.boxes_from_map)(prob, *shape)
            assert scores == expected_scores  # bit for bit
            assert len(boxes) == len(expected_boxes)
            for got, want in zip(boxes, expected_boxes):
                assert got.dtype == np.int32
                np.testing.assert_array_equal(got, want)
            total += len(boxes)
    assert total > 50  # the maps do produce detections
