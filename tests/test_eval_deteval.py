"""DetEval (Total-Text): one-to-one, split, merge, rounding and don't care, with hand-worked numbers, under
the current official script (since its April 2019 one-to-one fix) and the pre-2019 one."""
import numpy as np
import pytest

from structure.measurers.protocols.deteval import VERSIONS, DetEvalEvaluator


def box(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def items(*boxes, ignore=()):
    return [{'points': points, 'ignore': index in ignore} for index, points in enumerate(boxes)]


def evaluate(gts, dets, version='current'):
    return DetEvalEvaluator(version=version).evaluate_image(gts, dets)


def pr(result):
    return pytest.approx(result['precision']), pytest.approx(result['recall'])


both = pytest.mark.parametrize('version', ['current', 'pre-2019'])


# --- cases where the two versions differ ---------------------------------------------------------------

def test_detection_over_two_ground_truths_is_a_merge_since_2019():
    # Fact from the current official script. sigma = 2000/2000 = 1 and 128/128 = 1 (column: two > 0.7),
    # tau = 2000/2200 = 0.91 and 128/2200 = 0.06. Current: no one-to-one; merge step: tau > 0 for 2 ground
    # truths, both sigma >= 0.6, tau sum 0.97 >= 0.6 -> recall 2 * 0.8 / 2, precision 0.8 / 1.
    gts, dets = items(box(0, 0, 100, 20), box(101, 2, 109, 18)), items(box(0, 0, 110, 20))
    current = evaluate(gts, dets)
    assert (current['precision'], current['recall']) == pr({'precision': 0.8, 'recall': 0.8})
    assert (current['one_to_one'], current['merge']) == (0, 1)
    # pre-2019: rows only -> ground truth 0 matches one-to-one, ground truth 1 is missed
    old = evaluate(gts, dets, 'pre-2019')
    assert (old['precision'], old['recall'], old['one_to_one'], old['merge']) == (1.0, 0.5, 1, 0)
    assert DetEvalEvaluator().evaluate_image(gts, dets)['merge'] == 1  # 'current' is the default


def test_tau_column_with_two_ground_truths_becomes_a_merge():
    # g0 = d = [0,100]x[0,20]; g1 = [0,100]x[0,30] holds d: sigma(g1, d) = 2000/3000 = 0.67 (not > 0.7, so
    # the sigma column is unique), tau(g1, d) = 1 (> 0.6, so the tau column holds two).
    # Current: no one-to-one; merge: candidates sigma >= 0.6 are g0 and g1, tau sum 2 >= 0.6
    # -> recall 1.6 / 2 = 0.8, precision 0.8 / 1.  Pre-2019: g0 one-to-one -> P 1, R 0.5.
    gts, dets = items(box(0, 0, 100, 20), box(0, 0, 100, 30)), items(box(0, 0, 100, 20))
    current = evaluate(gts, dets)
    assert (current['precision'], current['recall']) == pr({'precision': 0.8, 'recall': 0.8})
    assert (current['one_to_one'], current['merge']) == (0, 1)
    old = evaluate(gts, dets, 'pre-2019')
    assert (old['precision'], old['recall'], old['one_to_one'], old['merge']) == (1.0, 0.5, 1, 0)


def test_tau_column_with_two_ground_truths_leaves_the_detection_to_a_split():
    # g0 = [0,50]x[0,20] inside g1 = [0,100]x[0,20]; d0 = [0,50]x[0,20], d1 = [50,100]x[0,20].
    # sigma: g0 (1, 0), g1 (0.5, 0.5); tau: g0 (1, 0), g1 (1, 1).
    # Current: g0 fails (tau column of d0 holds 2), g1 fails (no sigma > 0.7); split of g1 over d0, d1
    # (sigma sum 1 >= 0.7): recall 0.8 / 2 = 0.4, precision 2 * 0.8 / 2 = 0.8.
    # Pre-2019: g0 one-to-one with d0; g1's only free candidate d1 has sigma 0.5 < 0.7 and d1 touches one
    # ground truth only (no merge): recall 1 / 2, precision 1 / 2.
    gts = items(box(0, 0, 50, 20), box(0, 0, 100, 20))
    dets = items(box(0, 0, 50, 20), box(50, 0, 100, 20))
    current = evaluate(gts, dets)
    assert (current['precision'], current['recall']) == pr({'precision': 0.8, 'recall': 0.4})
    assert (current['one_to_one'], current['split'], current['merge']) == (0, 1, 0)
    old = evaluate(gts, dets, 'pre-2019')
    assert (old['precision'], old['recall']) == pr({'precision': 0.5, 'recall': 0.5})
    assert (old['one_to_one'], old['split'], old['merge']) == (1, 0, 0)


# --- cases where both versions agree -------------------------------------------------------------------

@both
def test_tau_column_with_two_ground_truths_rescued_by_the_merge_step(version):
    # g1 = [0,100]x[0,40] holds d = g0: sigma(g1, d) = 0.5 < 0.6, tau = 1. Current: no one-to-one (tau column
    # holds 2), but in the merge step g0 is the single candidate (sigma 1 >= 0.7, tau 1 >= 0.6) and counts
    # one-to-one: the same P 1, R 0.5 as pre-2019.
    result = evaluate(items(box(0, 0, 100, 20), box(0, 0, 100, 40)), items(box(0, 0, 100, 20)), version)
    assert (result['precision'], result['recall'], result['one_to_one']) == (1.0, 0.5, 1)


@both
def test_one_to_one_takes_sigma_and_tau_from_different_detections(version):
    # The script's quirk, kept in both versions: g = [0,100]x[0,20]; d0 = [0,100]x[0,100] (sigma 1, tau 0.2)
    # and d1 = [10,40]x[0,20] (sigma 0.3, tau 1): one sigma > 0.7 and one tau > 0.6 in the row, each column
    # unique -> one-to-one (recall 1), d0 marked; d1 stays a false positive: precision 1 / 2.
    result = evaluate(items(box(0, 0, 100, 20)), items(box(0, 0, 100, 100), box(10, 0, 40, 20)), version)
    assert (result['precision'], result['recall'], result['one_to_one']) == (0.5, 1.0, 1)


@both
def test_one_to_one(version):
    result = evaluate(items(box(0, 0, 100, 20)), items(box(0, 0, 100, 20)), version)
    assert (result['precision'], result['recall'], result['one_to_one']) == (1.0, 1.0, 1)


@both
def test_split_one_ground_truth_over_two_detections(version):
    # sigma = 960 / 2000 = 0.48 each (sum 0.96 >= 0.7), tau = 1 each: recall + 0.8, precision + 2 * 0.8
    result = evaluate(items(box(0, 0, 100, 20)), items(box(0, 0, 48, 20), box(52, 0, 100, 20)), version)
    assert result['split'] == 1 and result['merge'] == 0
    assert result['recall'] == pytest.approx(0.8) and result['precision'] == pytest.approx(1.6 / 2)


@both
def test_split_covering_too_little_is_no_match(version):
    # sigma 0.3 + 0.3 = 0.6 < 0.7
    result = evaluate(items(box(0, 0, 100, 20)), items(box(0, 0, 30, 20), box(70, 0, 100, 20)), version)
    assert (result['precision'], result['recall'], result['split']) == (0.0, 0.0, 0)


@both
def test_merge_two_ground_truths_into_one_detection(version):
    # sigma = 1 for each ground truth (>= tp), tau = 0.48 each (sum 0.96 >= 0.6): recall + 2 * 0.8, precision + 0.8
    result = evaluate(items(box(0, 0, 48, 20), box(52, 0, 100, 20)), items(box(0, 0, 100, 20)), version)
    assert result['merge'] == 1 and result['split'] == 0
    assert result['recall'] == pytest.approx(1.6 / 2) and result['precision'] == pytest.approx(0.8)


@both
def test_sigma_is_rounded_to_two_decimals(version):
    # sigma 0.7049 rounds to 0.70, not > 0.7: no match; 0.706 rounds to 0.71: match
    assert evaluate(items(box(0, 0, 100, 100)), items(box(0, 0, 70.49, 100)), version)['recall'] == 0.0
    assert evaluate(items(box(0, 0, 100, 100)), items(box(0, 0, 70.6, 100)), version)['recall'] == 1.0


@both
def test_detection_on_dont_care_is_removed(version):
    # 800 / (800 + 1) > 0.5: the detection is gone; nothing cared remains: precision 0, recall 0
    result = evaluate(items(box(0, 0, 100, 20), ignore=(0,)), items(box(10, 0, 50, 20)), version)
    assert (result['num_det'], result['num_gt'], result['precision'], result['recall']) == (0, 0, 0.0, 0.0)
    # half on it: 400 / 801 < 0.5, kept as a false positive
    assert evaluate(items(box(0, 0, 100, 20), ignore=(0,)), items(box(80, 0, 120, 20)), version)['num_det'] == 1


@both
def test_data_set_combination(version):
    evaluator = DetEvalEvaluator(version=version)
    split = evaluator.evaluate_image(items(box(0, 0, 100, 20)), items(box(0, 0, 48, 20), box(52, 0, 100, 20)))
    perfect = evaluator.evaluate_image(items(box(0, 0, 100, 20)), items(box(0, 0, 100, 20)))
    combined = evaluator.combine_results([split, perfect])
    assert combined['recall'] == pytest.approx(1.8 / 2) and combined['precision'] == pytest.approx(2.6 / 3)


def test_versions_agree_when_no_detection_reaches_two_ground_truths():
    # Property: the column test can only fail when a detection has sigma > 0.7 or tau > 0.6 with two ground
    # truths. Ground truths in separate 100 x 100 cells, every detection inside one cell: the two versions
    # must give identical per-image results.
    rng = np.random.default_rng(7)
    images = []
    for _ in range(20):
        gts, dets = [], []
        for cell in range(6):
            x, y = 100 * (cell % 3), 100 * (cell // 3)
            w, h = rng.integers(30, 80), rng.integers(10, 40)
            gts.append(box(x + 10, y + 10, x + 10 + w, y + 10 + h))
            pieces = rng.integers(0, 3)
            for piece in range(pieces):
                x0 = x + 10 + w * piece / pieces + rng.uniform(-3, 3)
                dets.append(box(max(x0, x + 1), y + 10 + rng.uniform(-3, 3),
                                min(x0 + w / pieces + rng.uniform(-5, 5), x + 99), y + 10 + h + rng.uniform(-3, 3)))
        images.append((items(*gts), items(*dets)))
    results = {version: [evaluate(gts, dets, version) for gts, dets in images] for version in VERSIONS}
    assert results['current'] == results['pre-2019']
    assert sum(r['one_to_one'] for r in results['current']) > 10 and sum(r['split'] for r in results['current']) > 5


def test_unknown_version_is_rejected_with_the_allowed_values():
    with pytest.raises(ValueError, match=r"version must be one of 'current', 'pre-2019', got '2019'"):
        DetEvalEvaluator(version='2019')
    assert VERSIONS == ('current', 'pre-2019') and DetEvalEvaluator().version == 'current'
