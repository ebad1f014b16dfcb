"""ICDAR 2015 IoU protocol: hand-built cases whose numbers follow from the official script's rules, and its
arithmetic for invalid polygons (the Polygon library's, checked against Polygon3 itself as the oracle)."""
import cv2
import numpy as np
import pytest

from structure.measurers.protocols.icdar2015_eval import (DetectionIoUEvaluator, contour_area, even_odd_region,
                                                          to_polygon)
from polygon_oracle import polygon_library_areas


def box(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def gt(*boxes, ignore=()):
    return [{'points': points, 'ignore': index in ignore} for index, points in enumerate(boxes)]


def det(*boxes):
    return [{'points': points} for points in boxes]


def evaluate(gts, dets):
    return DetectionIoUEvaluator().evaluate_image(gts, dets)


def prh(result):
    return result['precision'], result['recall'], result['hmean']


def test_perfect_match():
    result = evaluate(gt(box(0, 0, 10, 10)), det(box(0, 0, 10, 10)))
    assert prh(result) == (1.0, 1.0, 1.0) and result['pairs'] == [(0, 0)]


def test_touching_boxes_do_not_match():
    # a shared edge has zero area: IoU 0
    result = evaluate(gt(box(0, 0, 10, 10)), det(box(10, 0, 20, 10)))
    assert prh(result) == (0.0, 0.0, 0.0)


def test_iou_exactly_one_half_does_not_match():
    # 30 x 10 boxes shifted by 10: intersection 200, union 400 -> IoU 0.5, not > 0.5
    assert evaluate(gt(box(0, 0, 30, 10)), det(box(10, 0, 40, 10)))['matched'] == 0
    # shifted by 9: 210 / 390 = 0.538 -> match
    assert evaluate(gt(box(0, 0, 30, 10)), det(box(9, 0, 39, 10)))['matched'] == 1


def test_nested_boxes():
    # detection inside the ground truth, half its area: IoU 200 / 400 = 0.5 -> no match
    assert evaluate(gt(box(0, 0, 40, 10)), det(box(0, 0, 20, 10)))['matched'] == 0
    # three quarters: IoU 0.75 -> match
    assert evaluate(gt(box(0, 0, 40, 10)), det(box(0, 0, 30, 10)))['matched'] == 1
    # a small ground truth inside a huge detection: IoU 100 / 10000
    assert prh(evaluate(gt(box(10, 10, 20, 20)), det(box(0, 0, 100, 100)))) == (0.0, 0.0, 0.0)


def test_dont_care_overlap_exactly_one_half_keeps_the_detection():
    # detection 10 x 10, half of it on the don't-care box: 0.5 is not > 0.5, so it is a cared false positive;
    # with no cared ground truth recall is 1 and precision 0
    result = evaluate(gt(box(0, 0, 10, 10), ignore=(0,)), det(box(5, 0, 15, 10)))
    assert (result['det_care'], result['gt_care']) == (0 + 1, 0)
    assert prh(result) == (0.0, 1.0, 0.0)
    # 60 % on it: the detection is don't care too, nothing is left: precision 1, recall 1
    result = evaluate(gt(box(0, 0, 10, 10), ignore=(0,)), det(box(4, 0, 14, 10)))
    assert result['det_care'] == 0 and prh(result) == (1.0, 1.0, 1.0)


def test_dont_care_ground_truth_is_not_counted_and_never_matches():
    result = evaluate(gt(box(0, 0, 10, 10), box(50, 0, 60, 10), ignore=(1,)),
                      det(box(0, 0, 10, 10), box(50, 0, 60, 10)))
    assert (result['matched'], result['gt_care'], result['det_care']) == (1, 1, 1)
    assert prh(result) == (1.0, 1.0, 1.0)


def test_empty_images():
    assert prh(evaluate([], [])) == (1.0, 1.0, 1.0)
    assert prh(evaluate([], det(box(0, 0, 5, 5)))) == (0.0, 1.0, 0.0)
    assert prh(evaluate(gt(box(0, 0, 5, 5)), [])) == (0.0, 0.0, 0.0)
    evaluator = DetectionIoUEvaluator()
    combined = evaluator.combine_results([evaluate([], []), evaluate([], [])])
    assert combined == {'precision': 0.0, 'recall': 0.0, 'hmean': 0.0}


def test_duplicate_detections_count_once():
    result = evaluate(gt(box(0, 0, 10, 10)), det(box(0, 0, 10, 10), box(0, 0, 10, 10)))
    assert result['matched'] == 1 and result['det_care'] == 2
    assert prh(result) == pytest.approx((0.5, 1.0, 2 / 3))


def test_matching_is_greedy_in_ground_truth_then_detection_order():
    # gt0 has IoU 0.667 with det0 and det1; gt1 has 0.818 with det0 and 0.333 with det1. gt0 takes det0
    # (the first above 0.5), leaving gt1 nothing: 1 match, although a 2-match assignment exists.
    gts = gt(box(0, 0, 10, 10), box(3, 0, 13, 10))
    dets = det(box(2, 0, 12, 10), box(-2, 0, 8, 10))
    result = evaluate(gts, dets)
    assert result['pairs'] == [(0, 0)] and prh(result) == (0.5, 0.5, 0.5)
    # the other detection order gives both matches
    assert evaluate(gts, dets[::-1])['matched'] == 2


def test_invalid_polygons_are_dropped_with_the_drop_switch():
    bowtie = [[0, 0], [10, 10], [10, 0], [0, 10]]
    assert to_polygon(bowtie) is None and to_polygon([[0, 0], [5, 5], [10, 10]]) is None
    evaluator = DetectionIoUEvaluator(invalid_polygons='drop')
    result = evaluator.evaluate_image(gt(box(0, 0, 10, 10), bowtie), det(bowtie, box(0, 0, 10, 10)))
    # the bow ties are left out; pairs keep the indices of the given lists
    assert (result['gt_care'], result['det_care'], result['matched']) == (1, 1, 1)
    assert result['pairs'] == [(0, 1)]


def test_data_set_numbers_sum_before_dividing():
    evaluator = DetectionIoUEvaluator()
    first = evaluate(gt(box(0, 0, 10, 10), box(20, 0, 30, 10)), det(box(0, 0, 10, 10)))  # 1 of 2 found
    second = evaluate(gt(box(0, 0, 10, 10)), det(box(0, 0, 10, 10), box(50, 50, 60, 60), box(70, 0, 80, 5)))
    combined = evaluator.combine_results([first, second])
    # matched 2, cared ground truths 3, cared detections 4
    assert combined['recall'] == pytest.approx(2 / 3) and combined['precision'] == pytest.approx(2 / 4)
    assert combined['hmean'] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_polygons_with_more_points_and_flat_lists():
    octagon = [[3, 0], [7, 0], [10, 3], [10, 7], [7, 10], [3, 10], [0, 7], [0, 3]]
    flat = [value for point in octagon for value in point]
    assert evaluate(gt(octagon), det(flat))['matched'] == 1
    with pytest.raises(ValueError, match='expected'):
        evaluate(gt([[1, 2, 3]]), [])


def flat(text):
    values = [int(value) for value in text.split(',')]
    return [values[i:i + 2] for i in range(0, len(values), 2)]


def test_official_zero_area_detection_counts():
    # the official script's documented numbers: precision 0.5, recall 1.0 (the original DBNet code: 1.0)
    gts = gt(flat('0,0,100,0,100,20,0,20'))
    dets = det(flat('0,0,100,0,100,20,0,20'), flat('10,10,20,10,30,10,15,10'))
    result = evaluate(gts, dets)
    assert (result['precision'], result['recall'], result['det_care']) == (0.5, 1.0, 2)
    dropped = DetectionIoUEvaluator(invalid_polygons='drop').evaluate_image(gts, dets)
    assert (dropped['precision'], dropped['recall'], dropped['det_care']) == (1.0, 1.0, 1)


def test_official_self_intersecting_detection_matches():
    # the official script's documented numbers: precision 1.0, recall 1.0 (the original DBNet code: 0, 0)
    gts = gt(flat('743,145,779,146,780,163,746,163'))
    dets = det(flat('759,176,766,138,782,169,732,155'))
    assert prh(evaluate(gts, dets)) == (1.0, 1.0, 1.0)
    assert prh(DetectionIoUEvaluator(invalid_polygons='drop').evaluate_image(gts, dets)) == (0.0, 0.0, 0.0)


def test_contour_area_and_even_odd_region_by_hand():
    # bow tie through (20/3, 20/3): lobes of area 100/3 (left) and 400/3 (right), opposite orientations
    bowtie = [[0, 0], [20, 20], [20, 0], [0, 10]]
    assert contour_area(bowtie) == pytest.approx(100.0)            # |400/3 - 100/3|
    assert even_odd_region(bowtie).area == pytest.approx(500 / 3)  # both lobes
    # a symmetric bow tie: area() 0, region the two triangles of area 25
    assert contour_area([[0, 0], [10, 10], [10, 0], [0, 10]]) == 0.0
    assert even_odd_region([[0, 0], [10, 10], [10, 0], [0, 10]]).area == pytest.approx(50.0)
    # a 30 x 30 square and, over a bridge walked both ways, a 10 x 10 square inside it in the same direction:
    # winding 2 inside the small one, so the even-odd region is the frame (800); the shoelace adds (1000)
    frame = [[0, 0], [30, 0], [30, 30], [0, 30], [0, 0], [10, 10], [20, 10], [20, 20], [10, 20], [10, 10]]
    assert contour_area(frame) == pytest.approx(1000.0)
    assert even_odd_region(frame).area == pytest.approx(800.0)
    # degenerate: collinear points, fewer than 3 points
    collinear = flat('10,10,20,10,30,10,15,10')
    assert contour_area(collinear) == 0.0 and even_odd_region(collinear).is_empty
    assert contour_area([[0, 0], [5, 5]]) == 0.0 and even_odd_region([[0, 0], [5, 5]]).is_empty


def test_bow_tie_iou_uses_the_shoelace_area():
    # symmetric bow tie over a 10 x 10 box: intersection 50 (its two triangles), area() 0, so
    # IoU = 50 / (100 + 0 - 50) = 1: a match under the official arithmetic
    bowtie = [[0, 0], [10, 10], [10, 0], [0, 10]]
    result = evaluate(gt(box(0, 0, 10, 10)), det(bowtie))
    assert result['matched'] == 1
    tables = DetectionIoUEvaluator().prepare(gt(box(0, 0, 10, 10), bowtie), det(bowtie))
    # bow tie against bow tie: intersection 50, union 0 + 0 - 50 = -50: IoU -1, no match
    assert tables.iou[:, 0].tolist() == pytest.approx([1.0, -1.0])


def test_zero_area_items_never_divide_by_zero():
    line = flat('10,10,20,10,30,10,15,10')
    # ground truth and detection of area 0: union 0, IoU 0 (the script catches the ZeroDivisionError)
    result = evaluate(gt(line), det(line))
    assert (result['matched'], result['gt_care'], result['det_care']) == (0, 1, 1)
    # a zero-area detection on a don't-care box is not don't care (its area is 0): a cared false positive
    result = evaluate(gt(box(0, 0, 40, 20), ignore=(0,)), det(line))
    assert result['det_care'] == 1 and prh(result) == (0.0, 1.0, 0.0)
    # fewer than 3 points: counted, area 0, never matched
    result = evaluate(gt(box(0, 0, 10, 10)), det([[0, 0], [10, 10]], box(0, 0, 10, 10)))
    assert (result['matched'], result['det_care'], result['pairs']) == (1, 2, [(0, 1)])


def test_self_intersecting_detection_on_a_dont_care_box():
    # bow tie [0,20]x[0,20] through (20/3, 20/3) inside a don't-care box [0,20]x[0,20]: intersection 500/3,
    # area() 100 -> 5/3 > 0.5: don't care (dropped: not counted at all)
    bowtie = [[0, 0], [20, 20], [20, 0], [0, 10]]
    result = evaluate(gt(box(0, 0, 20, 20), ignore=(0,)), det(bowtie))
    assert result['det_care'] == 0 and prh(result) == (1.0, 1.0, 1.0)


def test_non_finite_and_bad_switch_are_errors():
    with pytest.raises(ValueError, match=r'pred\[1\]: non-finite'):
        evaluate(gt(box(0, 0, 10, 10)), det(box(0, 0, 10, 10), [[0, 0], [float('nan'), 1], [1, 1]]))
    # the original DBNet rule drops it instead
    dropped = DetectionIoUEvaluator(invalid_polygons='drop').evaluate_image(
        gt(box(0, 0, 10, 10)), det(box(0, 0, 10, 10), [[0, 0], [float('nan'), 1], [1, 1]]))
    assert dropped['det_care'] == 1
    with pytest.raises(ValueError, match="'official', 'drop'"):
        DetectionIoUEvaluator(invalid_polygons='repair')


def test_valid_polygons_give_the_same_tables_with_both_switches():
    rng = np.random.default_rng(1)
    gts = [{'points': cv2.boxPoints(((float(x), float(y)), (float(w), float(h)), float(a))).round(), 'ignore': i < 2}
           for i, (x, y, w, h, a) in enumerate(zip(*rng.uniform([0, 0, 20, 8, -40], [200, 200, 80, 30, 40],
                                                                (12, 5)).T))]
    dets = [{'points': item['points'] + rng.integers(-3, 4, (4, 2))} for item in gts[:10]]
    dets = [item for item in dets if to_polygon(item['points']) is not None]
    official, dropped = (DetectionIoUEvaluator(invalid_polygons=mode).prepare(gts, dets)
                         for mode in ('official', 'drop'))
    assert np.allclose(official.iou, dropped.iou, rtol=0, atol=1e-12)
    assert (official.det_dont_care == dropped.det_dont_care).all()


# ---- the Polygon library (Polygon3, what the official script imports as plg) as the oracle ----

def official_image(gt_quads, gt_dont_care, det_quads, areas):
    """The official script's per-image arithmetic on the Polygon library's numbers: ``areas[g][d]`` is
    [area(gt g), area(det d), area(gt g & det d)] from Polygon3 (polygons from int32 corners), the
    ZeroDivisionError caught as IoU 0."""
    det_dont_care = []
    for d in range(len(det_quads)):
        for g in np.flatnonzero(gt_dont_care):
            det_area, intersection = areas[g][d][1], areas[g][d][2]
            share = 0 if det_area == 0 else intersection / det_area
            if share > 0.5:
                det_dont_care.append(d)
                break
    iou = np.zeros((len(gt_quads), len(det_quads)))
    for g in range(len(gt_quads)):
        for d in range(len(det_quads)):
            gt_area, det_area, intersection = areas[g][d]
            try:
                iou[g, d] = intersection / (det_area + gt_area - intersection)
            except ZeroDivisionError:
                iou[g, d] = 0
    gt_taken, det_taken, matched = set(), set(), 0
    for g in range(len(gt_quads)):
        for d in range(len(det_quads)):
            if g not in gt_taken and d not in det_taken and not gt_dont_care[g] and d not in det_dont_care \
                    and iou[g, d] > 0.5:
                gt_taken.add(g)
                det_taken.add(d)
                matched += 1
    return iou, matched, len(gt_quads) - int(np.sum(gt_dont_care)), len(det_quads) - len(det_dont_care)


def random_quads(rng, count):
    """Integer quadrilaterals as result files hold them: rotated rectangles, jittered ones (convex,
    concave, self-intersecting), corners in a shuffled order (bow ties), collinear and repeated corners."""
    quads = []
    for _ in range(count):
        centre, size = rng.uniform(20, 100, 2), rng.uniform([4, 3], [60, 25])
        quad = cv2.boxPoints((tuple(centre), tuple(size), float(rng.uniform(-90, 90))))
        kind = rng.integers(6)
        if kind == 1:
            quad = quad + rng.normal(0, size.min() / 2, (4, 2))
        elif kind == 2:
            quad = quad[rng.permutation(4)]
        elif kind == 3:
            start, step = rng.uniform(0, 100, 2), rng.integers(-6, 7, 2)
            quad = start + np.outer(rng.integers(-3, 4, 4), step)
        elif kind == 4:
            quad[rng.integers(4)] = quad[rng.integers(4)]
        quads.append(np.round(quad).astype(np.int64))
    return quads


@pytest.mark.parametrize('seed', range(4))
def test_per_image_numbers_equal_the_polygon_library(seed):
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(10):
        gt_quads = random_quads(rng, 6)
        det_quads = [quad + rng.integers(-4, 5, (4, 2)) for quad in gt_quads[:4]] + random_quads(rng, 5)
        images.append((gt_quads, rng.uniform(size=len(gt_quads)) < 0.3, det_quads))
    pairs = [(g.astype(np.int32), d.astype(np.int32)) for gt_quads, _, det_quads in images
             for g in gt_quads for d in det_quads]
    areas = iter(polygon_library_areas(pairs))
    for gt_quads, dont_care, det_quads in images:
        table = [[next(areas) for _ in det_quads] for _ in gt_quads]
        iou, matched, gt_care, det_care = official_image(gt_quads, dont_care, det_quads, table)
        result = evaluate(gt(*gt_quads, ignore=set(np.flatnonzero(dont_care))), det(*det_quads))
        tables = DetectionIoUEvaluator().prepare(gt(*gt_quads, ignore=set(np.flatnonzero(dont_care))), det(*det_quads))
        assert np.allclose(tables.iou, iou, rtol=1e-9, atol=1e-9)
        assert (result['matched'], result['gt_care'], result['det_care']) == (matched, gt_care, det_care)


def test_areas_and_intersections_equal_the_polygon_library_for_n_point_polygons():
    import shapely
    rng = np.random.default_rng(7)
    polygons = [np.round(rng.uniform(0, 40, (n, 2))) for n in rng.integers(3, 11, 150)]  # mostly self-intersecting
    polygons += [np.round(rng.uniform(0, 40, (40, 2))) for _ in range(6)]  # hundreds of self-crossings each
    polygons += [np.round(cv2.ellipse2Poly((20, 20), (18, 7), int(angle), 0, 360, 40)) for angle in range(0, 180, 30)]
    pairs = list(zip(polygons, polygons[1:] + polygons[:1]))
    for (first, second), (area, _, both) in zip(pairs, polygon_library_areas(pairs)):
        assert contour_area(first) == pytest.approx(area, rel=1e-12, abs=1e-12)
        assert shapely.area(shapely.intersection(even_odd_region(first), even_odd_region(second))) == pytest.approx(
            both, rel=1e-9, abs=1e-9)


def test_measurer_passes_the_switches_to_its_evaluators():
    from structure.measurers import DetEvalMeasurer, QuadMeasurer
    assert QuadMeasurer().evaluator.invalid_polygons == 'official'
    assert QuadMeasurer(invalid_polygons='drop').evaluator.invalid_polygons == 'drop'
    assert QuadMeasurer(protocol='deteval', deteval_version='pre-2019').evaluator.version == 'pre-2019'
    assert DetEvalMeasurer(deteval_version='pre-2019').evaluator.version == 'pre-2019'
    with pytest.raises(ValueError, match="invalid_polygons: expected one of 'official', 'drop'"):
        QuadMeasurer(invalid_polygons='keep')
    with pytest.raises(ValueError, match="deteval_version: expected one of 'current', 'pre-2019'"):
        QuadMeasurer(deteval_version='2018')
    # the zero-area detection of the official example through a validation batch
    batch = {'polygons': [[np.array(flat('0,0,100,0,100,20,0,20'))]], 'ignore_tags': [[False]]}
    output = ([[np.array(flat('0,0,100,0,100,20,0,20')), np.array(flat('10,10,20,10,30,10,15,10'))]], [[0.9, 0.9]])
    for mode, precision in (('official', 0.5), ('drop', 1.0)):
        measurer = QuadMeasurer(invalid_polygons=mode)
        assert measurer.gather_measure(measurer.validate_measure(batch, output))['precision'] == precision


@pytest.mark.parametrize('mode', ['official', 'drop'])
def test_sweep_with_invalid_detections_equals_measuring_from_scratch(mode):
    from structure.measurers import QuadMeasurer, sweep_box_thresh
    # invalid detections (bow tie matching officially, zero area) between valid ones, scores interleaved
    outputs = [{'polygons': [box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)], 'ignore_tags': [False] * 3,
                'boxes': [np.array([[0, 0], [10, 10], [10, 0], [0, 10]]), box(20, 0, 30, 10),
                          np.array(flat('10,10,20,10,30,10,15,10')), box(40, 0, 50, 10)],
                'scores': [0.8, 0.5, 0.95, 0.35]}]
    sweep = sweep_box_thresh(outputs, protocol='iou', invalid_polygons=mode)
    measurer = QuadMeasurer(invalid_polygons=mode)
    for row in sweep['rows']:
        output = outputs[0]
        kept = [index for index, score in enumerate(output['scores']) if score >= row['box_thresh']]
        scratch = measurer.gather_measure(measurer.validate_measure(
            {'polygons': [output['polygons']], 'ignore_tags': [output['ignore_tags']]},
            ([[output['boxes'][index] for index in kept]], [[output['scores'][index] for index in kept]])))
        assert (row['precision'], row['recall']) == (scratch['precision'], scratch['recall'])
    rows = {row['box_thresh']: row for row in sweep['rows']}
    # at 0.3 all four: official 3 matched of 4 detections (the zero-area one unmatched), drop 2 of 2
    assert (rows[0.3]['precision'], rows[0.3]['recall']) == ((0.75, 1.0) if mode == 'official' else (1.0, 2 / 3))
