"""DetEval (Total-Text): one-to-one, split, merge, rounding and don't care, with hand-worked numbers."""
import pytest

from concern.deteval import DetEvalEvaluator


def box(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def items(*boxes, ignore=()):
    return [{'points': points, 'ignore': index in ignore} for index, points in enumerate(boxes)]


def evaluate(gts, dets):
    return DetEvalEvaluator().evaluate_image(gts, dets)


def test_one_to_one():
    result = evaluate(items(box(0, 0, 100, 20)), items(box(0, 0, 100, 20)))
    assert (result['precision'], result['recall'], result['one_to_one']) == (1.0, 1.0, 1)


def test_split_one_ground_truth_over_two_detections():
    # sigma = 960 / 2000 = 0.48 each (sum 0.96 >= 0.7), tau = 1 each: recall + 0.8, precision + 2 * 0.8
    result = evaluate(items(box(0, 0, 100, 20)), items(box(0, 0, 48, 20), box(52, 0, 100, 20)))
    assert result['split'] == 1 and result['merge'] == 0
    assert result['recall'] == pytest.approx(0.8) and result['precision'] == pytest.approx(1.6 / 2)


def test_split_covering_too_little_is_no_match():
    # sigma 0.3 + 0.3 = 0.6 < 0.7
    result = evaluate(items(box(0, 0, 100, 20)), items(box(0, 0, 30, 20), box(70, 0, 100, 20)))
    assert (result['precision'], result['recall'], result['split']) == (0.0, 0.0, 0)


def test_merge_two_ground_truths_into_one_detection():
    # sigma = 1 for each ground truth (>= tp), tau = 0.48 each (sum 0.96 >= 0.6): recall + 2 * 0.8, precision + 0.8
    result = evaluate(items(box(0, 0, 48, 20), box(52, 0, 100, 20)), items(box(0, 0, 100, 20)))
    assert result['merge'] == 1 and result['split'] == 0
    assert result['recall'] == pytest.approx(1.6 / 2) and result['precision'] == pytest.approx(0.8)


def test_sigma_is_rounded_to_two_decimals():
    # sigma 0.7049 rounds to 0.70, not > 0.7: no match; 0.706 rounds to 0.71: match
    assert evaluate(items(box(0, 0, 100, 100)), items(box(0, 0, 70.49, 100)))['recall'] == 0.0
    assert evaluate(items(box(0, 0, 100, 100)), items(box(0, 0, 70.6, 100)))['recall'] == 1.0


def test_detection_on_dont_care_is_removed():
    # 800 / (800 + 1) > 0.5: the detection is gone; nothing cared remains: precision 0, recall 0
    result = evaluate(items(box(0, 0, 100, 20), ignore=(0,)), items(box(10, 0, 50, 20)))
    assert (result['num_det'], result['num_gt'], result['precision'], result['recall']) == (0, 0, 0.0, 0.0)
    # half on it: 400 / 801 < 0.5, kept as a false positive
    assert evaluate(items(box(0, 0, 100, 20), ignore=(0,)), items(box(80, 0, 120, 20)))['num_det'] == 1


def test_data_set_combination():
    evaluator = DetEvalEvaluator()
    split = evaluate(items(box(0, 0, 100, 20)), items(box(0, 0, 48, 20), box(52, 0, 100, 20)))
    perfect = evaluate(items(box(0, 0, 100, 20)), items(box(0, 0, 100, 20)))
    combined = evaluator.combine_results([split, perfect])
    assert combined['recall'] == pytest.approx(1.8 / 2) and combined['precision'] == pytest.approx(2.6 / 3)
