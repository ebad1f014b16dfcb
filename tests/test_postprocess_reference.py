"""The baseline of the post-processing benchmark (structure/representers/reference.py): that it behaves as the
original code base's SegDetectorRepresenter (MhLiao/DB) did, on hand-worked cases and in the calls it makes,
and that the fast SegDetectorRepresenter gives exactly its output on random maps and edge cases."""
import cv2
import numpy as np
import pyclipper
import pytest
import shapely

from data.geometry import integer_unclip_distances as integer_distances
from structure.representers import SegDetectorRepresenter
from structure.representers import reference
from structure.representers.reference import (ReferenceRepresenter, box_score_fast, get_mini_boxes,
                                              random_probability_map, unclip)
from structure.representers import seg_detector_representer
from structure.representers.seg_detector_representer import mean_scores, stacked_groups


# ---------------------------------------------------------------------- hand-worked facts of the original
def rotated_corners(center, size, degrees):
    """Corners of the rectangle with the given centre, (long, short) size and direction of the long side
    (degrees, y pointing down), in the order A, B, C, D = c - L u - S v, c + L u - S v, c + L u + S v,
    c - L u + S v with u the long side's unit direction, v = u turned by 90 degrees, L, S half sizes."""
    angle = np.radians(degrees)
    u = np.array([np.cos(angle), np.sin(angle)]) * size[0] / 2
    v = np.array([-np.sin(angle), np.cos(angle)]) * size[1] / 2
    center = np.asarray(center, dtype=np.float64)
    return np.array([center - u - v, center + u - v, center + u + v, center - u + v])


@pytest.mark.parametrize('degrees', [30.0, 70.0, -30.0])
def test_get_mini_boxes_orders_rotated_corners_as_worked_out_by_hand(degrees):
    # Worked out by hand for centre (50, 50), size 40 x 10. At 30 degrees the corners are A (35.18, 35.67),
    # B (69.82, 55.67), C (64.82, 64.33), D (30.18, 44.33): by x, D A | C B; of the left pair A is higher (its
    # y is not larger than D's), so A is top-left and D bottom-left; of the right pair B is higher: top-right.
    # At 70 degrees: A (47.86, 29.50), B (61.54, 67.08), C (52.14, 70.50), D (38.46, 32.92); by x D A | C B,
    # the same picks. At -30 degrees: A (30.18, 55.67), B (64.82, 35.67), C (69.82, 44.33), D (35.18, 64.33);
    # by x A D | B C, A above D and B above C. Every time: A, B, C, D.
    corners = rotated_corners((50, 50), (40, 10), degrees)
    box, short_side = get_mini_boxes(corners.astype(np.float32).reshape(-1, 1, 2))
    assert len(box) == 4 and all(point.dtype == np.float32 for point in box)
    np.testing.assert_allclose(np.array(box), corners, atol=1e-3)
    assert short_side == pytest.approx(10, abs=1e-3)


def test_get_mini_boxes_on_an_axis_aligned_contour():
    # Ties in x (two corners at x = 10, two at x = 49) are broken by y: top-left, top-right, bottom-right,
    # bottom-left; the sides are those between pixel centres, 39 x 9.
    contour = np.array([[[10, 20]], [[10, 29]], [[49, 29]], [[49, 20]]], dtype=np.int32)
    box, short_side = get_mini_boxes(contour)
    np.testing.assert_array_equal(np.array(box), [[10, 20], [49, 20], [49, 29], [10, 29]])
    assert short_side == 9


def test_box_score_fast_by_hand():
    prob = np.full((20, 30), 1.0, dtype=np.float32)
    prob[3:9, 2:8] = 0.25
    prob[3:6, 2:8] = 0.75
    # the box x 2..7, y 3..8 as float32 corners: the window is x 2..7, y 3..8, fillPoly fills all its 36
    # pixels, 18 at 0.75 and 18 at 0.25; the 1.0 around it is outside
    box = np.array([[2, 3], [7, 3], [7, 8], [2, 8]], dtype=np.float32)
    assert box_score_fast(prob, box) == 0.5
    # fractional corners: window floor / ceil (x 2..8, y 3..9), points shifted then truncated (2.6 -> 2,
    # 7.9 -> 7, 3.2 -> 3, 8.7 -> 8): the same 36 pixels
    box = np.array([[2.6, 3.2], [7.9, 3.2], [7.9, 8.7], [2.6, 8.7]], dtype=np.float32)
    assert box_score_fast(prob, box) == 0.5
    # integer points (polygon mode): a triangle (2, 3) (7, 3) (2, 8) covers the rows y = 3..8 from x = 2 to
    # x = 7 - (y - 3): 6 + 5 + 4 (at 0.75) and 3 + 2 + 1 (at 0.25) pixels
    triangle = np.array([[2, 3], [7, 3], [2, 8]], dtype=np.int32)
    assert box_score_fast(prob, triangle) == pytest.approx((15 * 0.75 + 6 * 0.25) / 21, abs=1e-12)


def test_box_score_fast_clips_its_window_to_the_map():
    # corners x -3.5..4.2, y -2.5..3.7: the window is clipped to x 0..5, y 0..4 (ceil 4.2 = 5, ceil 3.7 = 4);
    # shifted by 0 and truncated towards zero the box is x -3..4, y -2..3, which fillPoly clips to x 0..4,
    # y 0..3: 20 pixels, all at 0.75 (the 0.125 beyond x = 4 or y = 3 is in the window but not in the box)
    prob = np.full((10, 10), 0.125, dtype=np.float32)
    prob[0:4, 0:5] = 0.75
    box = np.array([[-3.5, -2.5], [4.2, -2.5], [4.2, 3.7], [-3.5, 3.7]], dtype=np.float32)
    assert box_score_fast(prob, box) == 0.75
    # a box wholly outside the map: a one-pixel window, nothing filled, mean 0
    outside = np.array([[12, 12], [15, 12], [15, 14], [12, 14]], dtype=np.float32)
    assert box_score_fast(prob, outside) == 0.0


def test_unclip_grows_by_area_times_ratio_over_perimeter():
    # 40 x 10: area 400, perimeter 100, D = 400 * 1.5 / 100 = 6 on every side, round corners: one path
    # spanning x -6..46, y -6..16 (pyclipper rounds its points to integers)
    rectangle = np.array([[0, 0], [40, 0], [40, 10], [0, 10]], dtype=np.float32)
    paths = unclip(rectangle, 1.5)
    assert len(paths) == 1
    path = np.array(paths[0])
    assert path.min(axis=0).tolist() == [-6, -6] and path.max(axis=0).tolist() == [46, 16]
    # a ring of a band: growing closes the gap, pyclipper answers with two paths (outline and hole)
    band = cv2.ellipse2Poly((80, 60), (40, 40), 0, 10, 350, 10)
    inner = cv2.ellipse2Poly((80, 60), (32, 32), 0, 10, 350, 10)[::-1]
    assert len(unclip(np.concatenate([band, inner]).astype(np.int32), 2.0)) == 2


def test_map_detections_of_a_rectangle_by_hand():
    # pixels x 10..49, y 20..29 at 0.9: the contour's rectangle is 39 x 9 (pixel centres), top-left first;
    # score 0.9; grown by D = 351 * 1.5 / 96 = 5.484 and re-fitted: about x 4.5..54.5, y 14.5..34.5
    prob = np.zeros((100, 200), dtype=np.float32)
    prob[20:30, 10:50] = 0.9
    (box,), (score,) = ReferenceRepresenter().map_detections(prob)
    assert box.dtype == np.float32 and box.shape == (4, 2)
    assert score == pytest.approx(0.9, abs=1e-6)
    np.testing.assert_allclose(box, [[4.5, 14.5], [54.5, 14.5], [54.5, 34.5], [4.5, 34.5]], atol=0.51)
    boxes, scores = ReferenceRepresenter().represent_map(prob, 100, 200)
    np.testing.assert_array_equal(boxes[0], [[5, 15], [54, 15], [54, 34], [5, 34]])
    # polygon mode: the contour simplified keeps its 4 corners; grown by D = 351 * 2 / 96 = 7.3125 with
    # round corners, one integer path around x 2.7..56.3, y 12.7..36.3
    (polygon,), (score,) = ReferenceRepresenter().map_detections(prob, is_output_polygon=True)
    assert polygon.dtype.kind == 'i' and len(polygon) > 8
    assert polygon.min(axis=0).tolist() == [3, 13] and polygon.max(axis=0).tolist() == [56, 36]
    assert score == pytest.approx(0.9, abs=1e-6)


class Recorder:
    """Stands in for a module: forwards every attribute, and records the calls of the named functions."""

    def __init__(self, module, names, calls):
        self._module, self._names, self._calls = module, names, calls

    def __getattr__(self, name):
        value = getattr(self._module, name)
        if name not in self._names:
            return value

        def recorded(*args, **kwargs):
            self._calls.append((name, args))
            return value(*args, **kwargs)
        return recorded


def recorded_calls(monkeypatch, prob, polygon, **options):
    calls = []
    cv2_names = {'findContours', 'minAreaRect', 'boxPoints', 'fillPoly', 'mean', 'arcLength', 'approxPolyDP'}
    monkeypatch.setattr(reference, 'cv2', Recorder(cv2, cv2_names, calls))
    monkeypatch.setattr(reference, 'pyclipper', Recorder(pyclipper, {'PyclipperOffset'}, calls))
    monkeypatch.setattr(reference, 'Polygon', lambda points: calls.append(('Polygon', (points,))) or
                        shapely.geometry.Polygon(points))
    ReferenceRepresenter(**options).map_detections(prob, polygon)
    return calls


def test_the_calls_of_the_original_in_its_order(monkeypatch):
    # three regions, in findContours order (bottom to top): a kept bar, a 2-pixel-high bar (short side 1 < 3)
    # and a faint bar (score 0.4 < 0.7)
    prob = np.zeros((60, 120), dtype=np.float32)
    prob[5:15, 10:60] = 0.4
    prob[25:27, 10:60] = 0.9
    prob[40:50, 10:90] = 0.9
    calls = recorded_calls(monkeypatch, prob, polygon=False)
    names = [name for name, _ in calls]
    assert names == ['findContours',
                     'minAreaRect', 'boxPoints', 'fillPoly', 'mean',                    # kept bar: scored,
                     'Polygon', 'PyclipperOffset', 'minAreaRect', 'boxPoints',          # grown, re-fitted
                     'minAreaRect', 'boxPoints',                                        # thin bar
                     'minAreaRect', 'boxPoints', 'fillPoly', 'mean']                    # faint bar
    image = calls[0][1][0]
    assert image.dtype == np.uint8 and set(np.unique(image).tolist()) == {0, 255}  # (bitmap * 255) as uint8
    scored_box = calls[3][1][1]  # fillPoly(mask, box): the float32 corners, shifted, then truncated to int32
    assert scored_box.dtype == np.int32 and scored_box.shape == (1, 4, 2)
    assert calls[5][1][0].dtype == np.float32  # shapely gets the float32 corners
    calls = recorded_calls(monkeypatch, prob, polygon=True)
    names = [name for name, _ in calls]
    assert names == ['findContours',
                     'arcLength', 'approxPolyDP', 'fillPoly', 'mean',
                     'Polygon', 'PyclipperOffset', 'minAreaRect', 'boxPoints',
                     'arcLength', 'approxPolyDP', 'fillPoly', 'mean',                   # thin bar: no size
                     'Polygon', 'PyclipperOffset', 'minAreaRect', 'boxPoints',          # check before growing
                     'arcLength', 'approxPolyDP', 'fillPoly', 'mean']                   # faint bar
    (_, (contour, closed)), (_, (approx_input, epsilon, approx_closed)) = calls[1], calls[2]
    assert closed and approx_closed and approx_input is contour
    assert epsilon == 0.002 * cv2.arcLength(contour, True)


# ---------------------------------------------------------------------- fast == baseline
def assert_identical(prob, shape=None, polygon=False, **options):
    """Fast and baseline outputs for one map: same boxes / polygons, int32, and bit-identical scores."""
    shape = shape or prob.shape
    fast = SegDetectorRepresenter(**options)
    reference = ReferenceRepresenter(**{k: v for k, v in options.items() if k != 'cap_before_filtering'})
    expected, expected_scores = reference.represent_map(prob, *shape, polygon)
    found, scores = (fast.polygons_from_map if polygon else fast.boxes_from_map)(prob, *shape)
    assert scores == expected_scores
    assert len(found) == len(expected)
    for got, want in zip(found, expected):
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)
    return len(found)


@pytest.mark.parametrize('polygon', [False, True])
def test_identical_on_many_random_maps(polygon):
    rng = np.random.default_rng(7)
    total = 0
    for seed in range(16):
        regions = int(rng.integers(1, 40))
        prob = random_probability_map(184, 320, regions, seed=100 + seed, noise_blobs=int(rng.integers(0, 30)))
        options = dict(thresh=float(rng.uniform(0.2, 0.5)), box_thresh=float(rng.uniform(0.3, 0.8)),
                       score_mode=['fast', 'slow'][seed % 2], unclip_ratio=float(rng.uniform(1.2, 2.0)),
                       polygon_unclip_ratio=float(rng.uniform(1.5, 2.5)), min_size=int(rng.integers(1, 5)))
        shape = [(184, 320), (736, 1280), (61, 97)][seed % 3]
        total += assert_identical(prob, shape, polygon, **options)
    assert total > 100


def tiny_blobs_map(seed=0):
    """Regions of every size from one pixel up: most are below min_size (before or after growing)."""
    rng = np.random.default_rng(seed)
    prob = np.zeros((120, 200), dtype=np.float32)
    for _ in range(60):
        x, y = int(rng.integers(2, 196)), int(rng.integers(2, 116))
        width, height = int(rng.integers(1, 9)), int(rng.integers(1, 6))
        prob[y:y + height, x:x + width] = float(rng.uniform(0.5, 1.0))
    return prob


def border_map(seed=0):
    """Rotated bars and bands cut by the map border: rectangles reaching outside the map, whose score windows
    the map clips."""
    rng = np.random.default_rng(seed)
    prob = np.zeros((150, 240), dtype=np.float32)
    for center in [(0, 40), (240, 70), (120, 0), (60, 150), (0, 0), (240, 150), (3, 100), (200, 148)]:
        size = (float(rng.uniform(20, 80)), float(rng.uniform(6, 20)))
        corners = cv2.boxPoints((center, size, float(rng.uniform(-60, 60))))
        cv2.fillPoly(prob, [np.round(corners).astype(np.int32)], float(rng.uniform(0.75, 1.0)))
    prob[0:150, 0:2] = np.maximum(prob[0:150, 0:2], 0.8)  # a bar along the whole left edge
    return prob


def concave_map():
    """Arcs, a U, an L, a ring with a gap (growing closes it: two paths) and a full ring (outer and inner
    contours): concave candidates for polygon mode."""
    prob = np.zeros((200, 320), dtype=np.float32)
    cv2.ellipse(prob, (60, 60), (45, 30), 0, 180, 360, 0.9, 8)
    cv2.ellipse(prob, (170, 50), (40, 40), 0, 10, 350, 0.85, 7)
    cv2.circle(prob, (270, 60), 30, 0.8, 6)
    cv2.polylines(prob, [np.array([[20, 110], [20, 180], [110, 180], [110, 110]], dtype=np.int32)], False, 0.95, 9)
    cv2.polylines(prob, [np.array([[150, 110], [150, 185], [230, 185]], dtype=np.int32)], False, 0.9, 10)
    xs = np.arange(240, 316, 4)
    wave = np.stack([xs, 150 + 25 * np.sin(xs / 9.0)], axis=1).astype(np.int32)
    cv2.polylines(prob, [wave], False, 0.9, 6)
    return cv2.GaussianBlur(prob, (5, 5), 1.0)


@pytest.mark.parametrize('polygon', [False, True])
@pytest.mark.parametrize('score_mode', ['fast', 'slow'])
def test_identical_on_edge_cases(polygon, score_mode):
    options = dict(score_mode=score_mode, box_thresh=0.5)
    found = 0
    for seed in range(3):
        found += assert_identical(tiny_blobs_map(seed), None, polygon, **options)
        found += assert_identical(tiny_blobs_map(seed), (37, 61), polygon, min_size=1, **options)
        found += assert_identical(border_map(seed), None, polygon, **options)
        found += assert_identical(border_map(seed), (300, 100), polygon, **options)
    found += assert_identical(concave_map(), None, polygon, **options)
    found += assert_identical(concave_map(), (100, 640), polygon, **options)
    assert found > 40
    # cap_before_filtering: max_candidates cuts the contour list before anything else, as the original did: both
    # look at the same first ones
    prob = random_probability_map(184, 320, 30, seed=3)
    for max_candidates in (0, 1, 5, 17):
        assert_identical(prob, None, polygon, max_candidates=max_candidates, cap_before_filtering=True, **options)
    # a NaN inside a region: a one-pixel hole in the bitmap, and a NaN score for the region's box or polygon,
    # which both versions drop (the original kept it)
    prob = np.zeros((64, 96), dtype=np.float32)
    prob[10:30, 10:80] = 0.9
    prob[20, 40] = np.nan
    assert assert_identical(prob, None, polygon, **options) == 0
    # nothing above thresh; everything above thresh (one contour along the border)
    assert assert_identical(np.zeros((64, 96), dtype=np.float32), None, polygon, **options) == 0
    assert assert_identical(np.full((64, 96), 0.9, dtype=np.float32), None, polygon, **options) == 1


@pytest.mark.parametrize('mask_bytes', [1 << 22, 3000])
def test_scores_of_the_fast_version_are_the_baselines_bit_for_bit(monkeypatch, mask_bytes):
    # random boxes and polygons, some reaching outside the map (their windows are clipped: drawn one by one),
    # some wholly outside (score 0), one-pixel windows, the rest drawn together in one mask image, or in
    # many when an image may hold only 3000 bytes
    monkeypatch.setattr(seg_detector_representer, 'STACKED_MASK_BYTES', mask_bytes)
    rng = np.random.default_rng(3)
    prob = rng.uniform(0, 1, size=(90, 130)).astype(np.float32)
    prob[rng.uniform(size=prob.shape) < 0.3] = 0
    boxes = np.stack([cv2.boxPoints(((float(rng.uniform(-20, 150)), float(rng.uniform(-20, 110))),
                                     (float(rng.uniform(0.5, 60)), float(rng.uniform(0.5, 30))),
                                     float(rng.uniform(-90, 90)))) for _ in range(300)])
    expected = [box_score_fast(prob, box) for box in boxes]
    assert mean_scores(prob, boxes) == expected
    assert sum(score == 0 for score in expected) > 5
    polygons = [rng.integers(0, [130, 90], size=(int(rng.integers(1, 30)), 2)).astype(np.int32) for _ in range(200)]
    assert mean_scores(prob, polygons) == [box_score_fast(prob, polygon) for polygon in polygons]
    assert mean_scores(prob, []) == []


def test_integer_distances_are_shapelys_bit_for_bit():
    rng = np.random.default_rng(5)
    polygons = [rng.integers(0, scale, size=(int(rng.integers(3, 80)), 2)).astype(np.int32)
                for scale in (5, 50, 2000) for _ in range(100)]  # self-intersecting ones too
    counts = [len(polygon) for polygon in polygons]
    shapes = shapely.polygons([shapely.linearrings(polygon.astype(np.float64)) for polygon in polygons])
    expected = shapely.area(shapes) * 2.0 / shapely.length(shapes)
    found = integer_distances(np.concatenate(polygons), counts, 2.0)
    assert found.tolist() == expected.tolist()


def test_stacked_groups():
    # windows (height, width): 10x50, 10x50, 30x10 -> stack 50 rows x 50 = 2500 bytes; with a 1000-byte limit
    # the first two (20 x 50 = 1000) fit, the third would make 50 x 50; a window over the limit stays alone
    assert stacked_groups([10, 10, 30], [50, 50, 10], limit=1000) == [(0, 2), (2, 3)]
    assert stacked_groups([10, 10, 30], [50, 50, 10], limit=2500) == [(0, 3)]
    assert stacked_groups([100, 1, 1], [100, 1, 1], limit=50) == [(0, 1), (1, 3)]
