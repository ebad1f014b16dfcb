"""SegDetectorRepresenter: hand-drawn maps with known answers, and identity with the reference version."""
import cv2
import numpy as np
import pytest
import shapely
import torch
from shapely.geometry import Polygon

from data.geometry import to_image_polygons, valid_rings
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


# ---------------------------------------------------------------------- every output is a valid polygon
# Maps whose outputs, scaled, rounded and clipped as the original code did, are not valid polygons. The
# problems named are those of that plain rounding (worked out in `plain_rounding` below, not by the code
# under test); shapely-based evaluators drop such a detection (or fail on it), the official ICDAR 2015
# script counts it.
def bar_map(shape, center, size, angle):
    prob = np.zeros(shape, dtype=np.float32)
    cv2.fillPoly(prob, [np.round(cv2.boxPoints((center, size, angle))).astype(np.int32)], 0.9)
    return prob


def wave_map(thickness=5):
    """A thin sine band across a 400 x 600 map (curved text seen from far away)."""
    prob = np.zeros((400, 600), dtype=np.float32)
    xs = np.arange(50, 551, 10)
    ys = 200 + 60 * np.sin(xs / 40.0)
    cv2.polylines(prob, [np.stack([xs, ys], axis=1).astype(np.int32)], False, 0.9, thickness)
    return prob


def border_triangle_map():
    """A triangle whose top corner lies above the map: grown, its outline leaves the image twice along the
    top border, and clipping y to 0 folds the ring back on itself along y = 0."""
    prob = np.zeros((120, 160), dtype=np.float32)
    cv2.fillPoly(prob, [np.array([[24, 49], [61, 70], [104, -4]], dtype=np.int32)], 0.9)
    return prob


def arc_map():
    """A thick elliptic arc whose grown ring (pyclipper's) touches itself at one vertex, before any rounding."""
    prob = np.zeros((120, 160), dtype=np.float32)
    cv2.ellipse(prob, (136, 47), (32, 11), 56, 24, 281, 0.9, 8)
    return prob


def top_bar_map():
    """A 4-pixel-high bar along the top of a 300 x 300 map: grown, it reaches above the image."""
    prob = np.zeros((300, 300), dtype=np.float32)
    prob[0:4, 100:200] = 0.9
    return prob


INVALID_CASES = {
    # name: (map, original (H, W), polygon mode, problems of the plain rounding)
    'polygon folds along the border': (border_triangle_map, (120, 160), True, {'invalid'}),
    'polygon ring touches itself': (arc_map, (120, 160), True, {'invalid'}),
    'polygon sub-pixel wave crosses itself': (wave_map, (20, 30), True, {'invalid', 'repeated points'}),
    'polygon repeated points after scaling down': (wave_map, (40, 60), True, {'repeated points'}),
    'box collapses to a line': (lambda: bar_map((300, 300), (100.3, 120.2), (60, 6), 0), (20, 20), False,
                                {'invalid', 'repeated points', 'zero area'}),
    'box collapses to a triangle': (lambda: bar_map((300, 300), (100.3, 120.2), (60, 6), 7), (12, 12), False,
                                    {'repeated points'}),
    'box collapses on the border': (top_bar_map, (20, 20), False, {'invalid', 'repeated points', 'zero area'}),
}


def scaled_detections(prob, shape, polygon, **options):
    """The detections (ReferenceRepresenter.map_detections, before any rounding) scaled per axis to the
    original image, the rule of the original code without its rounding and clipping: x / w * W and
    y / h * H, in float32 for the boxes (cv2.boxPoints' type) and float64 for the polygons."""
    height, width = shape
    detections, scores = ReferenceRepresenter(**options).map_detections(prob, polygon)
    scaled = []
    for detection in detections:
        points = detection.astype(np.float64) if polygon else detection.copy()
        points[:, 0] = points[:, 0] / prob.shape[1] * width
        points[:, 1] = points[:, 1] / prob.shape[0] * height
        scaled.append(points)
    return scaled, scores


def plain_rounding(points, shape):
    height, width = shape
    return np.stack([np.clip(np.round(points[:, 0]), 0, width), np.clip(np.round(points[:, 1]), 0, height)],
                    axis=1).astype(np.int32)


def problems(points):
    """What makes an integer ring unusable, by shapely's rules (those of the IoU evaluator) plus repeats."""
    found = set()
    if np.any(np.all(points == np.roll(points, -1, axis=0), axis=1)):
        found.add('repeated points')
    shape = Polygon(points)
    if not shape.is_valid or not shape.is_simple:
        found.add('invalid')
    if shape.area <= 0:
        found.add('zero area')
    return found


def exact_region(points, shape):
    """The detection's region in the image: the unrounded polygon, made valid, clipped to [0, W] x [0, H]."""
    height, width = shape
    return shapely.make_valid(Polygon(points.astype(np.float64))).intersection(shapely.box(0, 0, width, height))


def iou(points, region):
    shape = Polygon(points)
    intersection = shape.intersection(region).area
    return intersection / (shape.area + region.area - intersection)


def assert_valid_output(points, shape, box):
    height, width = shape
    assert points.dtype == np.int32 and points.ndim == 2 and points.shape[1] == 2
    assert points.shape == (4, 2) if box else len(points) >= 3
    assert points.min() >= 0 and points[:, 0].max() <= width and points[:, 1].max() <= height
    assert problems(points) == set(), points.tolist()
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    assert np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0  # clockwise on screen, as pyclipper's rings


@pytest.mark.parametrize('name', sorted(INVALID_CASES))
def test_the_plain_rounding_of_the_fixtures_is_invalid(name):
    make_map, shape, polygon, expected = INVALID_CASES[name]
    detections, _ = scaled_detections(make_map(), shape, polygon)
    found = [problems(plain_rounding(points, shape)) for points in detections]
    assert set().union(*found) == expected


@pytest.mark.parametrize('name', sorted(INVALID_CASES))
def test_every_output_is_a_valid_polygon_covering_the_detection(name):
    make_map, shape, polygon, _ = INVALID_CASES[name]
    prob = make_map()
    detections, map_scores = scaled_detections(prob, shape, polygon)
    outputs, scores = run(prob, shape=shape, polygon=polygon)
    # nothing dropped, scores untouched
    assert len(outputs) == len(detections) > 0 and scores == map_scores
    reference_outputs, reference_scores = ReferenceRepresenter().represent_map(prob, *shape, polygon)
    assert reference_scores == scores
    for output, reference_output, points in zip(outputs, reference_outputs, detections):
        np.testing.assert_array_equal(output, reference_output)
        assert_valid_output(output, shape, box=not polygon)
        region = exact_region(points, shape)
        plain = plain_rounding(points, shape)
        if problems(plain) <= {'repeated points'} and polygon:
            # only repeats: dropping them gives the same region, which is what is returned
            assert Polygon(output).equals(Polygon(plain))
        # the repair keeps more of the region than the integer bounding box of it (always a valid choice)
        xmin, ymin, xmax, ymax = region.bounds
        bounding_box = [(np.floor(xmin), np.floor(ymin)), (np.ceil(xmax), np.floor(ymin)),
                        (np.ceil(xmax), np.ceil(ymax)), (np.floor(xmin), np.ceil(ymax))]
        assert iou(output, region) >= iou(bounding_box, region)
        if min(shape) >= 100:
            # at full size a vertex moves by at most half a pixel (1/sqrt(2) for a corner), so the repaired
            # ring stays within a band of that half-width around the exact outline
            assert iou(output, region) >= 1 - region.length * np.sqrt(0.5) / region.area


def test_sub_pixel_repairs_keep_what_an_integer_polygon_can():
    # the 0.5-pixel-thin wave at 1/20: any integer polygon is coarse; the repair must still follow the band
    # (the convex hull of the rounded points would take in the whole inside of the arches)
    detections, _ = scaled_detections(wave_map(), (20, 30), True)
    (output,), _ = run(wave_map(), shape=(20, 30), polygon=True)
    region = exact_region(detections[0], (20, 30))
    hull = np.asarray(Polygon(plain_rounding(detections[0], (20, 30))).convex_hull.exterior.coords)[:-1]
    assert iou(output, region) > iou(hull, region) + 0.2
    # the grown bar at 1/15 is a 4.5 x 0.93 pixel box at y 7.53..8.47: both y round to 8, no area at all. The
    # integer boxes around it overlap it by less than half (x 4..9, y 7..9: 4.23 / 10 = 0.42); a quadrilateral
    # with its corners on the integer points around the exact ones can do better
    detections, _ = scaled_detections(INVALID_CASES['box collapses to a line'][0](), (20, 20), False)
    (box,), _ = run(INVALID_CASES['box collapses to a line'][0](), shape=(20, 20))
    region = exact_region(detections[0], (20, 20))
    assert np.all(np.abs(box - detections[0]) < 1)  # every corner on an integer point around the exact one
    assert iou(box, region) > 0.5


def test_hand_worked_repairs():
    # a box 5.6 x 0.8 at y 3.6..4.4: both y round to 4, zero area. Its integer bounding box x 1..7, y 3..5
    # has IoU 4.48 / 12 = 0.373 with it; the one-pixel-high boxes y 3..4 or 4..5: 2.24 / 8.24 = 0.272.
    box = np.array([[[1.2, 3.6], [6.8, 3.6], [6.8, 4.4], [1.2, 4.4]]], dtype=np.float32)
    (repaired,), kept = to_image_polygons(box, (10, 10), (10, 10), quadrilaterals=True)
    assert kept == [0]
    assert_valid_output(repaired, (10, 10), box=True)
    assert np.all(np.abs(repaired - box[0]) < 1)
    assert iou(repaired, shapely.box(1.2, 3.6, 6.8, 4.4)) > 4.48 / 12
    # repeated points only: they are dropped, nothing else changes
    polygon = np.array([[0.1, 0.1], [0.3, 0.2], [3, 0], [3, 3], [0, 3]])
    (repaired,), _ = to_image_polygons([polygon], (10, 10), (10, 10))
    np.testing.assert_array_equal(repaired, [[0, 0], [3, 0], [3, 3], [0, 3]])
    # a ring leaving the image at the top and coming back: clipped, it runs (1,0) -> (5,0) -> (3,0) and folds
    # on itself. Its region in the image is T = (0,4) (0.8,0) (3.6,0) (6,4), area 17.6, with left side
    # x = 0.8 - 0.2y and right side x = 3.6 + 0.6y (y in 0..4). Candidates, by IoU with T:
    # - the clipped ring without its fold, (0,4) (1,0) (3,0) (6,4), area 16, lies inside T: 16 / 17.6 = 0.909;
    # - T's vertices on the grid, (0,4) (1,0) (4,0) (6,4), area 18: the overlap has T's right side and the
    #   left side x = 1 - y/4, area 19.2 - 2 = 17.2: 17.2 / 18.4 = 0.935;
    # - T grown by 1/4 pixel, clipped to the image, on the grid: the left side moves to x + 0.2y = 0.545, which
    #   meets y = 0 at 0.545 -> 1 and x = 0 at y = 2.725 -> 3; the right side meets y = 0 at 3.89 -> 4; the
    #   top y = 4.25 -> 4: (1,0) (4,0) (6,4) (0,4) (0,3), area 18.5. Its left side x = 1 - y/3 (y <= 3) is
    #   right of T's for y < 1.5: overlap 19.2 - 1.125 - 0.625 = 17.45, IoU 17.45 / 18.65 = 0.9357, the best;
    # - the bounding box 0..6 x 0..4: 17.6 / 24 = 0.733.
    ring = np.array([[0, 4], [1, -1], [5, -2], [3, -1], [6, 4]], dtype=np.float64)
    assert problems(plain_rounding(ring, (10, 10))) == {'invalid'}
    (repaired,), _ = to_image_polygons([ring], (10, 10), (10, 10))
    np.testing.assert_array_equal(repaired, [[6, 4], [0, 4], [0, 3], [1, 0], [4, 0]])  # clockwise on screen
    assert iou(repaired, Polygon([(0, 4), (0.8, 0), (3.6, 0), (6, 4)])) == pytest.approx(17.45 / 18.65)


def test_valid_rings_by_hand():
    rings = [
        ([[0, 0], [4, 0], [4, 3], [0, 3]], True),           # rectangle, clockwise on screen
        ([[0, 0], [0, 3], [4, 3], [4, 0]], True),           # the same the other way round
        ([[0, 0], [4, 0], [1, 1], [0, 4]], True),           # concave quadrilateral (an arrow head)
        ([[0, 0], [4, 0], [0, 3]], True),                   # triangle
        ([[0, 0], [4, 0], [8, 0], [4, 3]], True),           # a vertex on a straight edge
        ([[0, 0], [4, 3], [4, 0], [0, 3]], False),          # bow tie
        ([[0, 0], [4, 0], [4, 0], [0, 3]], False),          # repeated point
        ([[0, 0], [4, 0], [4, 3], [0, 3], [0, 0]], False),  # closed explicitly: last = first is a repeat
        ([[0, 0], [2, 0], [4, 0], [2, 0]], False),          # no area
        ([[0, 0], [4, 0]], False),                          # too few points
        ([[0, 0], [4, 0], [4, 4], [2, 0], [0, 4]], False),  # touches itself at (2, 0)
        ([[2, 0], [3, 3], [0, 1], [4, 1], [1, 3]], False),  # pentagram: turns the same way at every vertex
    ]
    result = valid_rings([np.array(ring, dtype=np.int32) for ring, _ in rings])
    assert result.tolist() == [expected for _, expected in rings]


@pytest.mark.parametrize('polygon', [False, True])
def test_valid_outputs_are_the_original_rounding(polygon):
    # on random maps and image sizes from 30x smaller to 2x larger: an output whose plain rounding is
    # valid is that rounding exactly (only repeats dropped in polygon mode); the others are repaired
    representer = SegDetectorRepresenter(box_thresh=0.5)
    kinds = {'unchanged': 0, 'repeats dropped': 0, 'repaired': 0}
    for seed in range(3):
        prob = random_probability_map(184, 320, 12, seed=seed)
        for shape in ((46, 80), (12, 20), (6, 10), (184, 320), (368, 640), (61, 250)):
            detections, map_scores = scaled_detections(prob, shape, polygon, box_thresh=0.5)
            outputs, scores = (representer.polygons_from_map if polygon else representer.boxes_from_map)(prob, *shape)
            assert scores == map_scores  # nothing dropped, scores untouched
            for output, points in zip(outputs, detections):
                assert_valid_output(output, shape, box=not polygon)
                plain = plain_rounding(points, shape)
                found = problems(plain)
                if not found:
                    np.testing.assert_array_equal(output, plain)
                    kinds['unchanged'] += 1
                elif polygon and found == {'repeated points'}:
                    keep = np.any(plain != np.roll(plain, -1, axis=0), axis=1)
                    np.testing.assert_array_equal(output, plain[keep])
                    kinds['repeats dropped'] += 1
                else:
                    kinds['repaired'] += 1
    assert kinds['unchanged'] > 50 and kinds['repaired'] > 0
    assert kinds['repeats dropped'] > 20 if polygon else kinds['repeats dropped'] == 0


def test_final_step_bad_inputs_are_reported():
    with pytest.raises(ValueError, match=r'\(N, K, 2\)'):
        to_image_polygons(np.zeros((2, 4, 3), dtype=np.float32), (10, 10), (10, 10), quadrilaterals=True)
    with pytest.raises(ValueError, match='4 corners'):
        to_image_polygons([np.zeros((5, 2))], (10, 10), (10, 10), quadrilaterals=True)
    with pytest.raises(ValueError, match=r'\(Ni, 2\)'):
        to_image_polygons([np.zeros((5, 3))], (10, 10), (10, 10))
    assert to_image_polygons([], (10, 10), (10, 10)) == ([], [])


def test_region_growing_into_a_ring_is_dropped_by_both_versions():
    # a circular band with a 20-degree gap: grown by D = area * 2 / perimeter, the gap closes and pyclipper
    # returns two paths of different lengths (the outline and the hole), which polygon mode drops. The
    # reference used to fail on them (np.array of ragged paths) instead.
    prob = np.zeros((120, 160), dtype=np.float32)
    cv2.ellipse(prob, (80, 60), (40, 40), 0, 10, 350, 0.9, 8)
    assert run(prob, polygon=True) == ([], [])
    assert ReferenceRepresenter().represent_map(prob, 120, 160, is_output_polygon=True) == ([], [])
    # box mode keeps it (with a box_thresh low enough for a box that is mostly the band's inside), as one
    # box around the whole band, in both versions
    boxes, scores = run(prob, box_thresh=0.2)
    expected_boxes, expected_scores = ReferenceRepresenter(box_thresh=0.2).represent_map(prob, 120, 160)
    assert len(boxes) == 1 and scores == expected_scores
    np.testing.assert_array_equal(boxes[0], expected_boxes[0])
