"""DetEval with the semantics of Total-Text's official Python evaluation (Deteval.py with the shapely
area helpers of polygon_fast.py, cs-chan/Total-Text-Dataset, Evaluation_Protocol/Python_scripts),
re-implemented.

Two versions of the script's one-to-one rule are available (constructor keyword ``version``):
- ``'current'`` (default): the script as it stands since pull request #21 ("bug fix in function
  one_to_one", opened 2019-04-08 and merged; text read at commit 986d93c7). A ground truth g and a
  detection d match one-to-one only when row g holds exactly one sigma > tr and exactly one tau > tp
  (the DetEval paper's "row i of both matrices") and, in addition, the column of that sigma detection holds
  exactly one sigma > tr and the column of that tau detection exactly one tau > tp over all cared ground
  truths ("column j of both matrices"). A detection reaching the thresholds with two ground truths is
  therefore no one-to-one match and is left to the split / merge steps.
- ``'pre-2019'``: the script before that fix (read at commit 4b657103, which still took its areas from the
  mask-counting polygon_wrapper.py; here areas are geometric for both versions): the row test only. With
  ground truths [0,100]x[0,20] and [101,109]x[2,18] and one detection [0,110]x[0,20] (sigma 1 and 1, tau
  0.91 and 0.06) it counts a one-to-one match (P 1.0, R 0.5) where the current script counts a merge
  (P 0.8, R 0.8). Only this rule differs; everything else below is shared.

Per image:
- a detection is removed (don't care) when, for some don't-care ground truth with at least two points,
  intersection / (detection area + 1) > 0.5 (the official "+1", polygon_fast.iod);
- sigma[g, d] = intersection / area(g) (area recall) and tau[g, d] = intersection / area(d) (area
  precision), both rounded to 2 decimals (np.round), over the cared ground truths and the remaining
  detections;
- one-to-one, for each ground truth g in order: the version's rule above -> recall and precision each gain
  1; g and the detection with sigma > tr are marked (as the official script does, the detection is not
  checked for being free, nor for being the one with tau > tp);
- one-to-many (split), for each unmarked g with at least k = 2 detections of sigma > 0: the unmarked
  detections with tau >= tp are its candidates; a single candidate with sigma >= tr counts as one-to-one;
  two or more (or none) whose sigmas sum to >= tr give recall + fsc_k and precision + n * fsc_k;
- many-to-one (merge), for each unmarked d with at least k ground truths of tau > 0: the unmarked ground
  truths with sigma >= tp (tp, as in the official script) are its candidates; a single one with tau >= tp
  and sigma >= tr counts as one-to-one; otherwise, when their taus sum to >= tp, recall + n * fsc_k and
  precision + fsc_k;
- precision = accumulated precision / detections (0 without detections), recall = accumulated recall /
  cared ground truths (0 without); over a data set the accumulations and counts are summed first (the
  script's global_accumulative_* / total_num_*), not the per-image ratios averaged.

Defaults tr = 0.7, tp = 0.6, fsc_k = 0.8, k = 2 are Total-Text's. Areas are geometric (shapely), as in
polygon_fast.py; intersections use polygons repaired with buffer(0) as there, the areas the shoelace
areas of the polygons as given; a zero-area ground truth or detection gets sigma / tau 0 (the script
would raise ZeroDivisionError). The script reads integer coordinates; here they are used as given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import shapely
from shapely.geometry import Polygon


@dataclass
class DetEvalTables:
    sigma: np.ndarray          # (G cared, D) area recall
    tau: np.ndarray            # (G cared, D) area precision
    det_dont_care: np.ndarray  # (D,) bool: removed by the don't-care filter


VERSIONS = ('current', 'pre-2019')  # values of DetEvalEvaluator(version=...), the default first


class DetEvalEvaluator:
    """Total-Text DetEval: ``evaluate_image(gt, pred)`` -> per-image dict; ``combine_results(list)`` -> P/R/F.

    gt: sequence of ``{'points': (N, 2) or flat x, y list, 'ignore': bool}``; pred: sequence of
    ``{'points': ...}``; coordinates in pixels, ground truth and detections in the same image frame.

    area_recall (tr, 0.7), area_precision (tp, 0.6), split_merge_weight (fsc_k, 0.8) and min_split_merge
    (k, 2) are the script's constants; dont_care_threshold (0.5) is its detection_filtering threshold.
    version: ``'current'`` (the script since its April 2019 one-to-one fix, the default) or ``'pre-2019'``
    (the earlier one-to-one rule); see the module docstring. Raises ValueError for any other version.
    """

    protocol = 'deteval'

    def __init__(self, area_recall: float = 0.7, area_precision: float = 0.6, split_merge_weight: float = 0.8,
                 min_split_merge: int = 2, dont_care_threshold: float = 0.5, version: str = 'current'):
        if version not in VERSIONS:
            raise ValueError(f"DetEvalEvaluator: version must be one of {', '.join(map(repr, VERSIONS))}, "
                             f"got {version!r}")
        self.tr = area_recall
        self.tp = area_precision
        self.fsc_k = split_merge_weight
        self.k = min_split_merge
        self.dont_care_threshold = dont_care_threshold
        self.version = version

    def prepare(self, gt: Sequence[Mapping[str, Any]], pred: Sequence[Mapping[str, Any]]) -> DetEvalTables:
        """sigma / tau tables (G cared ground truths, D detections), rounded to 2 decimals, and the (D,)
        don't-care mask of the detections. Raises KeyError / ValueError naming ``gt[i]`` / ``pred[i]`` when
        an item has no 'points' or points that are not (N, 2)."""
        cared, dont_care = [], []
        for index, item in enumerate(gt):
            points = _points(item, f'gt[{index}]')
            if item.get('ignore', False):
                if len(points) > 1:
                    dont_care.append(points)
            else:
                cared.append(points)
        dets = [_points(item, f'pred[{index}]') for index, item in enumerate(pred)]
        det_raw = _raw_polygons(dets)
        det_area = shapely.area(det_raw)
        # a repaired polygon lies within its raw polygon's box: only detections whose box meets a ground truth's
        # are repaired and intersected (the others' intersections are exactly 0)
        det_box = shapely.bounds(det_raw).reshape(-1, 4)
        dont_care_fixed = _repaired(_raw_polygons(dont_care)) if dont_care else np.empty(0, dtype=object)
        gt_raw = _raw_polygons(cared) if cared else np.empty(0, dtype=object)
        gt_fixed = _repaired(gt_raw) if cared else np.empty(0, dtype=object)
        meets_dont_care = _boxes_meet(shapely.bounds(dont_care_fixed).reshape(-1, 4), det_box)
        meets_gt = _boxes_meet(shapely.bounds(gt_fixed).reshape(-1, 4), det_box)
        needed = meets_dont_care.any(axis=0) | meets_gt.any(axis=0)
        det_fixed = np.empty(len(dets), dtype=object)
        det_fixed[needed] = _repaired(det_raw[needed])
        det_dont_care = np.zeros(len(dets), dtype=bool)
        if dont_care and dets:
            inter = _intersection_areas(dont_care_fixed, det_fixed, meets_dont_care)
            det_dont_care = (inter / (det_area[None] + 1.0) > self.dont_care_threshold).any(axis=0)
        sigma = np.zeros((len(cared), len(dets)))
        tau = np.zeros((len(cared), len(dets)))
        if cared and dets:
            gt_area = shapely.area(gt_raw)
            inter = _intersection_areas(gt_fixed, det_fixed, meets_gt)
            sigma = np.round(_safe_divide(inter, gt_area[:, None]), 2)
            tau = np.round(_safe_divide(inter, det_area[None, :]), 2)
        return DetEvalTables(sigma=sigma, tau=tau, det_dont_care=det_dont_care)

    def match(self, tables: DetEvalTables, keep: Optional[np.ndarray] = None) -> Dict[str, Any]:
        """One-to-one, split and merge matching on the detections selected by the boolean (D,) mask ``keep``
        (all by default; don't-care detections are always left out). Returns precision, recall, hmean, the
        accumulated sums (recall_sum, precision_sum), num_gt, num_det and the match counts (one_to_one,
        split, merge)."""
        selected = ~tables.det_dont_care if keep is None else (np.asarray(keep, dtype=bool) & ~tables.det_dont_care)
        sigma = tables.sigma[:, selected]
        tau = tables.tau[:, selected]
        num_gt, num_det = sigma.shape
        gt_flag = np.zeros(num_gt, dtype=bool)
        det_flag = np.zeros(num_det, dtype=bool)
        recall_sum = precision_sum = 0.0
        counts = {'one_to_one': 0, 'split': 0, 'merge': 0}
        tr, tp, fsc_k = self.tr, self.tp, self.fsc_k

        current = self.version == 'current'
        for g in range(num_gt):  # one-to-one
            by_sigma = np.flatnonzero(sigma[g] > tr)
            by_tau = np.flatnonzero(tau[g] > tp)
            unique = len(by_sigma) == 1 and len(by_tau) == 1
            if unique and current:  # since April 2019: the columns must be unique too, over all ground truths
                unique = (np.count_nonzero(sigma[:, by_sigma[0]] > tr) == 1
                          and np.count_nonzero(tau[:, by_tau[0]] > tp) == 1)
            if unique:
                recall_sum += 1.0
                precision_sum += 1.0
                gt_flag[g] = True
                det_flag[by_sigma] = True
                counts['one_to_one'] += 1

        for g in range(num_gt):  # one-to-many: one ground truth split over several detections
            if gt_flag[g] or np.count_nonzero(sigma[g] > 0) < self.k:
                continue
            candidates = np.flatnonzero((tau[g] >= tp) & ~det_flag)
            if len(candidates) == 1:
                if tau[g, candidates[0]] >= tp and sigma[g, candidates[0]] >= tr:
                    recall_sum += 1.0
                    precision_sum += 1.0
                    gt_flag[g] = True
                    det_flag[candidates] = True
                    counts['one_to_one'] += 1
            elif sigma[g, candidates].sum() >= tr:
                gt_flag[g] = True
                det_flag[candidates] = True
                recall_sum += fsc_k
                precision_sum += len(candidates) * fsc_k
                counts['split'] += 1

        # the detections the merge step may take, found at once: within the loop only det_flag[d] of the
        # detection at hand changes, so this is the loop's own test, without a Python step per detection
        eligible = np.flatnonzero(~det_flag & (np.count_nonzero(tau > 0, axis=0) >= self.k))
        for d in eligible:  # many-to-one: several ground truths merged into one detection
            candidates = np.flatnonzero((sigma[:, d] >= tp) & ~gt_flag)
            if len(candidates) == 1:
                if tau[candidates[0], d] >= tp and sigma[candidates[0], d] >= tr:
                    recall_sum += 1.0
                    precision_sum += 1.0
                    gt_flag[candidates] = True
                    det_flag[d] = True
                    counts['one_to_one'] += 1
            elif tau[candidates, d].sum() >= tp:
                det_flag[d] = True
                gt_flag[candidates] = True
                recall_sum += len(candidates) * fsc_k
                precision_sum += fsc_k
                counts['merge'] += 1

        precision = precision_sum / num_det if num_det else 0.0
        recall = recall_sum / num_gt if num_gt else 0.0
        hmean = 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)
        return {'protocol': self.protocol, 'precision': precision, 'recall': recall, 'hmean': hmean,
                'recall_sum': recall_sum, 'precision_sum': precision_sum, 'num_gt': num_gt, 'num_det': num_det,
                **counts}

    def evaluate_image(self, gt: Sequence[Mapping[str, Any]], pred: Sequence[Mapping[str, Any]]
                       ) -> Dict[str, Any]:
        """``match(prepare(gt, pred))``: the per-image numbers of the script's per-image output line."""
        return self.match(self.prepare(gt, pred))

    def combine_results(self, results: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
        """Data-set precision, recall, hmean: summed precision_sum / summed num_det and summed recall_sum /
        summed num_gt (0 when the denominator is 0), as the script's global accumulators."""
        num_gt = sum(result['num_gt'] for result in results)
        num_det = sum(result['num_det'] for result in results)
        recall = sum(result['recall_sum'] for result in results) / num_gt if num_gt else 0.0
        precision = sum(result['precision_sum'] for result in results) / num_det if num_det else 0.0
        hmean = 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)
        return {'precision': precision, 'recall': recall, 'hmean': hmean}


def _points(item: Mapping[str, Any], where: str) -> np.ndarray:
    if 'points' not in item:
        raise KeyError(f"{where}: expected a key 'points', got keys {sorted(item)}")
    array = np.asarray(item['points'], dtype=np.float64)
    if array.ndim == 1 and array.size % 2 == 0:
        array = array.reshape(-1, 2)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f'{where}: expected (N, 2) points or a flat list of x, y, got shape {array.shape}')
    return array


def _raw_polygons(point_arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Polygons as given (no repair); fewer than 3 points give an empty polygon (area 0). Polygons of one point
    count are built in one vectorised call (what ``Polygon(points)`` does for each)."""
    if point_arrays and len({len(points) for points in point_arrays}) == 1 and len(point_arrays[0]) >= 3:
        return np.asarray(shapely.polygons(np.stack(point_arrays)), dtype=object)
    return np.array([Polygon(points) if len(points) >= 3 else Polygon() for points in point_arrays], dtype=object)


def _boxes_meet(box_a: np.ndarray, box_b: np.ndarray) -> np.ndarray:
    """(A, B) bool: whether boxes (min x, min y, max x, max y) meet (touching counts; a NaN box meets nothing)."""
    return ((box_a[:, None, 0] <= box_b[None, :, 2]) & (box_b[None, :, 0] <= box_a[:, None, 2])
            & (box_a[:, None, 1] <= box_b[None, :, 3]) & (box_b[None, :, 1] <= box_a[:, None, 3]))


def _intersection_areas(first: np.ndarray, second: np.ndarray, meets: np.ndarray) -> np.ndarray:
    """(len(first), len(second)) areas of the pairwise intersections, computed only for the pairs whose bounding
    boxes meet (``meets``): every other pair's intersection is exactly 0 (an empty polygon has NaN bounds and
    meets nothing), so the table equals intersecting every pair, at a fraction of the cost for many
    detections."""
    rows, columns = np.nonzero(meets)
    areas = np.zeros((len(first), len(second)), dtype=np.float64)
    if len(rows):
        areas[rows, columns] = shapely.area(shapely.intersection(first[rows], second[columns]))
    return areas


def _repaired(polygons: np.ndarray) -> np.ndarray:
    return shapely.buffer(polygons, 0)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator, denominator = np.broadcast_arrays(numerator, denominator)
    return np.divide(numerator, denominator, out=np.zeros(numerator.shape), where=denominator > 0)
