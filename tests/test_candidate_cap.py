"""max_candidates caps the detections that passed the filters, never the raw contours, and says so when it binds;
the representer's settings are range-checked."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from structure.representers import SegDetectorRepresenter
from structure.representers.reference import ReferenceRepresenter
from structure.representers.seg_detector_representer import CandidateCapWarning


def word_grid(rows: int, columns: int, height: int = 12, width: int = 40, gap: int = 12, value: float = 0.9,
              low_rows: int = 0, low_value: float = 0.75) -> np.ndarray:
    """A probability map of rows x columns word rectangles (``value`` inside, 0 outside); the first ``low_rows``
    rows score ``low_value`` instead."""
    prob = np.zeros((gap + rows * (height + gap), gap + columns * (width + gap)), dtype=np.float32)
    for row in range(rows):
        for column in range(columns):
            top, left = gap + row * (height + gap), gap + column * (width + gap)
            prob[top:top + height, left:left + width] = low_value if row < low_rows else value
    return prob


def with_specks(prob: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` 2x2 specks of probability 0.9 in the empty part of the map (below the words), away from each other."""
    rng = np.random.default_rng(seed)
    extra_rows = int(np.ceil(count / (prob.shape[1] // 6))) * 6 + 6
    out = np.zeros((prob.shape[0] + extra_rows, prob.shape[1]), dtype=np.float32)
    out[:prob.shape[0]] = prob
    cells = [(prob.shape[0] + 3 + 6 * (i // (prob.shape[1] // 6)), 3 + 6 * (i % (prob.shape[1] // 6)))
             for i in range(count)]
    rng.shuffle(cells)
    for top, left in cells:
        out[top:top + 2, left:left + 2] = 0.9
    return out


@pytest.mark.parametrize('polygon', [False, True])
def test_specks_do_not_take_the_places_of_words(polygon):
    prob = with_specks(word_grid(15, 20), 2000)  # 300 words, then 2000 specks below them
    representer = SegDetectorRepresenter(thresh=0.3, box_thresh=0.6, max_candidates=1000)
    with warnings.catch_warnings():
        warnings.simplefilter('error', CandidateCapWarning)  # 300 detections pass: the cap must not bind
        found, scores = (representer.polygons_from_map if polygon else representer.boxes_from_map)(
            prob, *prob.shape)
    assert len(found) == 300 and min(scores) == pytest.approx(0.9)
    # the original's order (the first 1000 contours, before min_size and the score): findContours lists the
    # bottom of the map first, so specks take most of the places; the switch reproduces the original exactly
    legacy = SegDetectorRepresenter(thresh=0.3, box_thresh=0.6, max_candidates=1000, cap_before_filtering=True)
    old, old_scores = (legacy.polygons_from_map if polygon else legacy.boxes_from_map)(prob, *prob.shape)
    reference, reference_scores = ReferenceRepresenter(thresh=0.3, box_thresh=0.6, max_candidates=1000
                                                       ).represent_map(prob, *prob.shape, polygon)
    assert len(old) < 300 and old_scores == reference_scores


def test_a_binding_cap_keeps_the_best_and_says_so():
    # 45 x 25 = 1125 words; the first 5 rows (125 words) score lower: the cap of 1000 must drop exactly those
    prob = word_grid(45, 25, low_rows=5)
    representer = SegDetectorRepresenter(thresh=0.3, box_thresh=0.6, max_candidates=1000)
    batch = {'shape': [prob.shape], 'filename': ['page.png']}
    with pytest.warns(CandidateCapWarning) as caught:
        boxes, scores = representer.represent(batch, prob[None])
    assert len(boxes[0]) == 1000 and min(scores[0]) == pytest.approx(0.9)
    assert min(box[:, 1].min() for box in boxes[0]) > 5 * 24  # nothing left in the low-scoring top rows
    message = str(caught[0].message)
    assert 'page.png' in message and '1125' in message and 'dropped 125' in message and 'max_candidates' in message
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter('error', CandidateCapWarning)
        raised = SegDetectorRepresenter(thresh=0.3, box_thresh=0.6, max_candidates=5000)
        assert len(raised.represent(batch, prob[None])[0][0]) == 1125


@pytest.mark.parametrize('setting, value', [('thresh', -1.0), ('thresh', 1.0), ('thresh', float('nan')),
                                            ('box_thresh', -0.1), ('box_thresh', 2.0),
                                            ('unclip_ratio', -1.0), ('unclip_ratio', 0.0),
                                            ('polygon_unclip_ratio', float('inf'))])
def test_out_of_range_settings_are_refused(setting, value):
    with pytest.raises(ValueError, match=setting):
        SegDetectorRepresenter(**{setting: value})


def test_in_range_settings_are_kept():
    representer = SegDetectorRepresenter(thresh=0.0, box_thresh=1.0, unclip_ratio=0.5, polygon_unclip_ratio=3.0)
    assert (representer.thresh, representer.box_thresh, representer.unclip_ratio) == (0.0, 1.0, 0.5)


@pytest.mark.parametrize('polygon', [False, True])
def test_a_cap_of_zero_gives_no_detections(polygon):
    prob = word_grid(2, 3)
    representer = SegDetectorRepresenter(thresh=0.3, box_thresh=0.6, max_candidates=0)
    with pytest.warns(CandidateCapWarning):
        found, scores = (representer.polygons_from_map if polygon else representer.boxes_from_map)(prob, *prob.shape)
    assert len(found) == 0 and scores == []


def test_a_sweep_floor_keeps_represents_detections_and_warns_only_at_box_thresh():
    # 60 words at 0.9, 60 at 0.75; box_thresh 0.8 keeps 60 words, max_candidates 70: the cap binds only at a floor
    prob = word_grid(12, 10, low_rows=6)
    representer = SegDetectorRepresenter(thresh=0.3, box_thresh=0.8, max_candidates=70)
    batch = {'shape': [prob.shape]}
    with warnings.catch_warnings():
        warnings.simplefilter('error', CandidateCapWarning)
        boxes, scores = representer.represent(batch, prob[None])
        floor_boxes, floor_scores = representer.candidates(batch, prob[None], min_score=0.5)
    assert len(boxes[0]) == 60 and len(floor_boxes[0]) == 70
    selected, selected_scores = representer.select(floor_boxes[0], floor_scores[0])
    np.testing.assert_array_equal(selected, boxes[0])
    assert selected_scores == scores[0]
    # box_thresh 0.7: 120 detections at the threshold, 70 kept: now it warns, and select still equals represent
    lower = SegDetectorRepresenter(thresh=0.3, box_thresh=0.7, max_candidates=70)
    with pytest.warns(CandidateCapWarning, match='dropped 50'):
        boxes, scores = lower.represent(batch, prob[None])
    with pytest.warns(CandidateCapWarning):
        floor_boxes, floor_scores = lower.candidates(batch, prob[None], min_score=0.5)
    selected, selected_scores = lower.select(floor_boxes[0], floor_scores[0])
    np.testing.assert_array_equal(selected, boxes[0])
    assert selected_scores == scores[0]
    assert sorted(round(score, 2) for score in scores[0]) == [0.75] * 10 + [0.9] * 60  # the best 70 of 120
