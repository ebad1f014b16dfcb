"""ICDAR 2015 IoU protocol: hand-built cases whose numbers follow from the official script's rules."""
import pytest

from concern.icdar2015_eval import DetectionIoUEvaluator, to_polygon


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


def test_invalid_polygons_are_dropped():
    bowtie = [[0, 0], [10, 10], [10, 0], [0, 10]]
    assert to_polygon(bowtie) is None and to_polygon([[0, 0], [5, 5], [10, 10]]) is None
    result = evaluate(gt(box(0, 0, 10, 10), bowtie), det(box(0, 0, 10, 10), bowtie))
    assert (result['gt_care'], result['det_care'], result['matched']) == (1, 1, 1)


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
