"""ICDAR 2015 IoU protocol for polygons, with the semantics of the official Robust Reading evaluation
script (rrc_evaluation_funcs.py + script.py of task 4.1), re-implemented with shapely.

Per image:
- a detection is don't care when its intersection with one don't-care ground truth covers more than
  ``area_precision_constraint`` (0.5) of the detection's own area (zero-area detection: never);
- ground truths x detections are matched greedily, ground truths in order, each taking the first still
  free detection (in order) whose IoU is strictly greater than ``iou_constraint`` (0.5); don't-care items
  on either side never match;
- recall = matched / cared ground truths, precision = matched / cared detections; with no cared ground
  truth, recall is 1 and precision is 1 without cared detections, else 0.
Over a data set: P = sum matched / sum cared detections, R = sum matched / sum cared ground truths
(0 when the denominator is 0), F = 2PR / (P + R) (0 when P + R = 0).

Polygons that are not valid simple polygons by shapely's rules (fewer than 3 points, zero area,
self-intersecting, non-finite coordinates) are dropped, ground truths and detections alike, before anything
is counted. The official script, built on the Polygon library, would instead take a self-intersecting
quadrilateral's signed-area arithmetic at face value; for valid polygons the numbers are identical.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import shapely
from shapely.geometry import Polygon


def to_polygon(points: Any) -> Optional[Polygon]:
    """A shapely polygon of ``points`` ((N, 2) array-like), or None when it is not a valid simple polygon."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim == 1 and array.size % 2 == 0:  # flat x1, y1, x2, y2, ...
        array = array.reshape(-1, 2)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f'polygon: expected (N, 2) points or a flat list of x, y, got shape {array.shape}')
    if len(array) < 3 or not np.isfinite(array).all():
        return None
    polygon = Polygon(array)
    if not polygon.is_valid or not polygon.is_simple or polygon.area <= 0:
        return None
    return polygon


@dataclass
class IoUTables:
    """The geometry of one image, computed once: enough to score any subset of the detections."""
    iou: np.ndarray            # (G, D) intersection over union of the valid polygons
    gt_dont_care: np.ndarray   # (G,) bool
    det_dont_care: np.ndarray  # (D,) bool


class DetectionIoUEvaluator:
    """``evaluate_image(gt, pred)`` -> per-image dict; ``combine_results(list)`` -> data-set P/R/F.

    gt: sequence of ``{'points': (N, 2), 'ignore': bool}``; pred: sequence of ``{'points': (N, 2)}``.
    """

    protocol = 'iou'

    def __init__(self, iou_constraint: float = 0.5, area_precision_constraint: float = 0.5):
        self.iou_constraint = iou_constraint
        self.area_precision_constraint = area_precision_constraint

    def prepare(self, gt: Sequence[Mapping[str, Any]], pred: Sequence[Mapping[str, Any]]) -> IoUTables:
        gt_polygons, gt_dont_care = [], []
        for index, item in enumerate(gt):
            polygon = to_polygon(_points(item, f'gt[{index}]'))
            if polygon is not None:
                gt_polygons.append(polygon)
                gt_dont_care.append(bool(item.get('ignore', False)))
        det_polygons = [polygon for polygon in (to_polygon(_points(item, f'pred[{index}]'))
                                                for index, item in enumerate(pred)) if polygon is not None]
        gt_dont_care = np.array(gt_dont_care, dtype=bool)
        det_dont_care = np.zeros(len(det_polygons), dtype=bool)
        iou = np.zeros((len(gt_polygons), len(det_polygons)), dtype=np.float64)
        if gt_polygons and det_polygons:
            gts = np.array(gt_polygons, dtype=object)[:, None]
            dets = np.array(det_polygons, dtype=object)[None, :]
            intersection = shapely.area(shapely.intersection(gts, dets))
            gt_area = shapely.area(gts)
            det_area = shapely.area(dets)
            union = gt_area + det_area - intersection
            iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
            if gt_dont_care.any():
                covered = intersection[gt_dont_care] / det_area  # det_area > 0 for valid polygons
                det_dont_care = (covered > self.area_precision_constraint).any(axis=0)
        return IoUTables(iou=iou, gt_dont_care=gt_dont_care, det_dont_care=det_dont_care)

    def match(self, tables: IoUTables, keep: Optional[np.ndarray] = None) -> Dict[str, Any]:
        """Greedy matching on the detections selected by the boolean mask ``keep`` (all by default)."""
        columns = np.arange(tables.iou.shape[1]) if keep is None else np.flatnonzero(keep)
        iou = tables.iou[:, columns]
        det_dont_care = tables.det_dont_care[columns]
        gt_taken = np.zeros(iou.shape[0], dtype=bool)
        det_taken = det_dont_care.copy()  # don't-care detections never match
        pairs = []
        for gt_index in np.flatnonzero(~tables.gt_dont_care):
            candidates = np.flatnonzero(~det_taken & (iou[gt_index] > self.iou_constraint))
            if len(candidates):
                det_index = int(candidates[0])
                gt_taken[gt_index] = det_taken[det_index] = True
                pairs.append((int(gt_index), int(columns[det_index])))
        matched = len(pairs)
        gt_care = int((~tables.gt_dont_care).sum())
        det_care = int((~det_dont_care).sum())
        if gt_care == 0:
            recall = 1.0
            precision = 0.0 if det_care > 0 else 1.0
        else:
            recall = matched / gt_care
            precision = 0.0 if det_care == 0 else matched / det_care
        hmean = 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)
        return {'protocol': self.protocol, 'precision': precision, 'recall': recall, 'hmean': hmean,
                'matched': matched, 'gt_care': gt_care, 'det_care': det_care, 'pairs': pairs}

    def evaluate_image(self, gt: Sequence[Mapping[str, Any]], pred: Sequence[Mapping[str, Any]]
                       ) -> Dict[str, Any]:
        return self.match(self.prepare(gt, pred))

    def combine_results(self, results: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
        matched = sum(result['matched'] for result in results)
        gt_care = sum(result['gt_care'] for result in results)
        det_care = sum(result['det_care'] for result in results)
        recall = 0.0 if gt_care == 0 else matched / gt_care
        precision = 0.0 if det_care == 0 else matched / det_care
        hmean = 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)
        return {'precision': precision, 'recall': recall, 'hmean': hmean}


def _points(item: Mapping[str, Any], where: str) -> Any:
    if 'points' not in item:
        raise KeyError(f"{where}: expected a key 'points', got keys {sorted(item)}")
    return item['points']
