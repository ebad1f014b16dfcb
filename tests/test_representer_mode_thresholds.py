"""polygon_box_thresh: a minimum score of its own for polygon mode (SegDetectorRepresenter), which the evaluator,
its sweep and the candidate cap's warning all follow; unset, one box_thresh serves both modes as in the original."""
import warnings

import numpy as np
import pytest
import torch

from structure.measurers import DetectionEvaluator, QuadMeasurer
from structure.representers import SegDetectorRepresenter


def box(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def two_regions():
    """A 100x200 map with two axis-aligned text regions of constant probability 0.45 and 0.8: the rectangle
    and the polygon of each hold only its own pixels, so both modes score each at its value (worked by hand), and
    the batch's ground truth is the two regions grown back (the original size is the map's, doubled)."""
    prob = np.zeros((100, 200), dtype=np.float32)
    prob[20:30, 10:50] = 0.45
    prob[60:80, 100:180] = 0.8
    batch = {'shape': [(200, 400)], 'ignore_tags': [np.array([False, False])],
             'polygons': [[box(10, 30, 108, 68), box(176, 96, 382, 182)]]}
    return batch, torch.from_numpy(prob)[None, None]


def scores_of(representer, polygon):
    batch, pred = two_regions()
    _, scores = representer.represent(batch, pred, is_output_polygon=polygon)
    return sorted(round(score, 4) for score in scores[0])


def test_polygon_mode_keeps_what_scores_at_least_its_own_threshold_and_box_mode_its():
    both = SegDetectorRepresenter(box_thresh=0.4, polygon_box_thresh=0.5)
    assert scores_of(both, polygon=False) == [0.45, 0.8]  # box mode: 0.45 >= 0.4
    assert scores_of(both, polygon=True) == [0.8]  # polygon mode: 0.45 < 0.5
    one = SegDetectorRepresenter(box_thresh=0.4)  # unset: box_thresh in both modes (the original)
    assert scores_of(one, polygon=True) == [0.45, 0.8]
    assert (one.box_thresh_for(True), both.box_thresh_for(True), both.box_thresh_for(False)) == (0.4, 0.5, 0.4)
    lower = SegDetectorRepresenter(box_thresh=0.5, polygon_box_thresh=0.4)  # either may be the lower one
    assert scores_of(lower, polygon=False) == [0.8] and scores_of(lower, polygon=True) == [0.45, 0.8]


@pytest.mark.parametrize('value', [-0.1, 1.5])
def test_a_polygon_threshold_outside_zero_one_is_refused(value):
    with pytest.raises(ValueError, match='polygon_box_thresh'):
        SegDetectorRepresenter(polygon_box_thresh=value)


@pytest.mark.parametrize('sweep', [None, (0.3, 0.4, 0.5, 0.6)])
def test_the_evaluator_measures_each_mode_at_its_threshold_with_or_without_a_sweep(sweep):
    batch, pred = two_regions()
    representer = SegDetectorRepresenter(box_thresh=0.4, polygon_box_thresh=0.5)
    results = {}
    for polygon in (False, True):
        evaluator = DetectionEvaluator(representer, QuadMeasurer(), is_output_polygon=polygon,
                                       sweep_thresholds=sweep)
        evaluator.process(batch, evaluator.detect(batch, pred))
        results[polygon] = evaluator.evaluate()
    # box mode finds both words, polygon mode only the 0.8 one: recall 1 and 1/2, precision 1 in both
    assert results[False]['box_thresh'] == 0.4 and results[True]['box_thresh'] == 0.5
    assert (results[False]['recall'], results[False]['precision']) == (1.0, 1.0)
    assert (results[True]['recall'], results[True]['precision']) == (0.5, 1.0)
    if sweep:  # the sweep's row at the mode's threshold is the main figure
        row = {r['box_thresh']: r for r in results[True]['sweep']['rows']}[0.5]
        assert row['recall'] == 0.5 and row['precision'] == 1.0


def test_the_cap_warns_only_about_detections_at_the_modes_threshold():
    batch, pred = two_regions()
    # max_candidates 1: the cap drops the 0.45 region; in polygon mode at 0.5 that region was never a detection
    capped = SegDetectorRepresenter(box_thresh=0.4, polygon_box_thresh=0.5, max_candidates=1)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        _, scores = capped.candidates(batch, pred, is_output_polygon=True, min_score=0.3)
    assert [round(s, 4) for s in scores[0]] == [0.8]
    with pytest.warns(UserWarning, match='2 detections passed'):
        capped.candidates(batch, pred, is_output_polygon=False, min_score=0.3)


def test_an_exported_description_leaves_an_unset_polygon_threshold_out_and_arguments_replace_a_set_one():
    from inference.detector import build_representer, representer_settings, with_thresholds
    unset = representer_settings(SegDetectorRepresenter(box_thresh=0.4))
    assert 'polygon_box_thresh' not in unset  # readable by a reader that predates the argument
    assert build_representer(unset, 'x.onnx').box_thresh_for(True) == 0.4
    filed = representer_settings(SegDetectorRepresenter(box_thresh=0.4, polygon_box_thresh=0.7))
    assert filed['polygon_box_thresh'] == 0.7
    rebuilt = build_representer(filed, 'x.onnx')
    assert (rebuilt.box_thresh_for(False), rebuilt.box_thresh_for(True)) == (0.4, 0.7)
    # TextDetector(onnx=..., box_thresh=0.9): the minimum in both modes, the stored polygon threshold replaced
    given = build_representer(with_thresholds(filed, box_thresh=0.9), 'x.onnx')
    assert (given.box_thresh_for(False), given.box_thresh_for(True)) == (0.9, 0.9)
    assert 'polygon_box_thresh' not in with_thresholds(unset, box_thresh=0.9)  # absent stays absent
    assert with_thresholds(filed, thresh=0.2) == dict(filed, thresh=0.2) and filed['polygon_box_thresh'] == 0.7
