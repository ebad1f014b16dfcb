"""ICDAR 2015 IoU protocol for polygons, with the arithmetic of the official Robust Reading evaluation
script (script.py + rrc_evaluation_funcs.py of task 4.1, "Incidental Scene Text"), re-implemented with
shapely.

Per image:
- a detection is don't care when its intersection with one don't-care ground truth is more than
  ``area_precision_constraint`` (0.5) of the detection's own area (a detection of area 0: never);
- ground truths x detections are matched greedily, ground truths in order, each taking the first still
  free detection (in order) whose IoU is strictly greater than ``iou_constraint`` (0.5); don't-care items
  on either side never match;
- recall = matched / cared ground truths, precision = matched / cared detections; with no cared ground
  truth, recall is 1 and precision is 1 without cared detections, else 0.
Over a data set: P = sum matched / sum cared detections, R = sum matched / sum cared ground truths
(0 when the denominator is 0), F = 2PR / (P + R) (0 when P + R = 0).

Polygons that are not valid simple polygons (``invalid_polygons``)
------------------------------------------------------------------
The official script builds every polygon with the Polygon library (Polygon3, Python bindings of Alan
Murta's GPC clipper) and counts every ground truth and every detection, whatever its shape:
- ``area()`` of a polygon built from a point list is the absolute shoelace area of that one contour,
  0.5 |sum (x_i + x_i+1)(y_i+1 - y_i)| (PolyUtil.c, poly_c_area): for a self-intersecting contour the
  lobes of opposite orientation cancel (a symmetric bow tie has area 0);
- ``p & q`` is GPC's intersection, which fills a self-intersecting contour by the even-odd rule; its
  area is the area of the intersection of the two even-odd regions (the result contours are simple, holes
  subtracted);
- IoU = area(p & q) / (area(p) + area(q) - area(p & q)), 0 when that union is exactly 0 (the script
  catches the ZeroDivisionError); it may exceed 1 or be negative for self-intersecting input, and it is
  used as it comes;
- the don't-care test divides by ``area()`` of the detection, 0 when that area is 0.
So a zero-area detection is a cared detection that never matches (it lowers precision), and a
self-intersecting one is scored with the arithmetic above. ``invalid_polygons='official'`` (the default)
reproduces this; valid simple polygons take a fast path (the polygon itself, shapely's intersection),
the others a careful one: their even-odd region is built as the symmetric difference of the fan triangles
(p0, p_i, p_i+1) (the winding number mod 2 adds up over a fan), their area is the shoelace area above.
For valid simple polygons every number is the same as with ``'drop'``. GPC itself crashes
(segmentation fault, Polygon3 3.0.9) on a few degenerate pairs, e.g. the ground truth
``41,27,29,12,53,42,37,22`` (corners on one line) against the detection ``35,66,31,60,54,40,58,45``: the
official script gives no number then; here that intersection is 0, as for every contour with points on
one line.

``invalid_polygons='drop'`` is the original DBNet evaluator's rule (MhLiao/DB,
concern/icdar2015_eval/detection/iou.py): ground truths and detections that are not valid simple
polygons by shapely (fewer than 3 points, zero area, self-intersecting, non-finite) are left out before
anything is counted. Items keep their index either way: ``pairs`` hold indices into the given lists.

Points: the official script reads exactly 8 integer coordinates per line (its regular expression
accepts ``-?[0-9]+`` only, and it casts them to int32), i.e. quadrilaterals with integer corners, and it
refuses a submission holding a quadrilateral whose corners run counter-clockwise on screen
(validate_clockwise_points); it has no rule for other point counts. This class takes N >= 3 points (for
Total-Text, CTW1500 and polygon-mode output) with the same arithmetic (shoelace area of the contour,
even-odd region for the intersection), uses the coordinates as given (the representer's are integers,
as in result files), and scores either orientation (areas do not depend on it). With
``'official'``, fewer than 3 points is a polygon of area 0 (counted, never matched), and a non-finite
coordinate is a ValueError naming the item (the project's readers refuse such files before).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import shapely
from shapely.geometry import Polygon

INVALID_POLYGONS = ('official', 'drop')

# Polygons of one side: a list of (N_i, 2) arrays, or one (M, N, 2) array when they all have N points.
PointArrays = Union[Sequence[np.ndarray], np.ndarray]


def to_polygon(points: Any) -> Optional[Polygon]:
    """A shapely polygon of ``points`` ((N, 2) array-like or a flat x1, y1, ... list), or None when it is
    not a valid simple polygon (fewer than 3 points, non-finite, self-intersecting, zero area): the
    ``invalid_polygons='drop'`` rule of the original DBNet evaluator. Raises ValueError for other shapes."""
    array = _as_points(points, 'polygon')
    if len(array) < 3 or not np.isfinite(array).all():
        return None
    polygon = Polygon(array)
    if not polygon.is_valid or not polygon.is_simple or polygon.area <= 0:
        return None
    return polygon


def contour_area(points: Any) -> float:
    """``area()`` of the Polygon library for one contour of (N, 2) ``points``, in squared pixels: the
    absolute shoelace area 0.5 |sum (x_i + x_i+1)(y_i+1 - y_i)| over the closed contour (PolyUtil.c,
    poly_c_area). Self-intersecting lobes of opposite orientation cancel; 0 for fewer than 3 points."""
    array = _as_points(points, 'polygon')
    if len(array) < 3:
        return 0.0
    return float(_shoelace_areas(array[None])[0])


def _shoelace_areas(contours: np.ndarray) -> np.ndarray:
    """``contour_area`` of each of M closed contours of N points, (M, N, 2) -> (M,)."""
    following = np.roll(contours, -1, axis=1)
    return 0.5 * np.abs(np.sum((contours[..., 0] + following[..., 0]) * (following[..., 1] - contours[..., 1]),
                               axis=1))


def even_odd_region(points: Any) -> Any:
    """The region a closed contour of (N, 2) ``points`` encloses by the even-odd rule (the fill GPC, and
    so the Polygon library's ``&``, gives a self-intersecting contour): a shapely Polygon or MultiPolygon,
    empty for fewer than 3 points or zero area. Built as the symmetric difference of the fan triangles
    (p0, p_i, p_i+1), i = 1 .. N-2: a point's winding number is the sum of its signed winding numbers in
    the fan triangles, so its parity is the parity of the number of triangles holding it. The triangles are
    combined pairwise, level by level (a balanced tree: on a random 50-point contour 40x faster than one
    after the other, and that sequential chain once drifted by 1.3 px^2 from GPC where the tree agrees)."""
    array = _as_points(points, 'polygon')
    if len(array) < 3:
        return Polygon()
    first, second = array[1:-1] - array[0], array[2:] - array[0]
    nonzero = np.flatnonzero(first[:, 0] * second[:, 1] - first[:, 1] * second[:, 0])
    if not len(nonzero):
        return Polygon()
    corners = np.stack([np.broadcast_to(array[0], (len(nonzero), 2)), array[nonzero + 1], array[nonzero + 2]], axis=1)
    parts = shapely.polygons(corners)
    while len(parts) > 1:
        if len(parts) % 2:
            parts = np.append(parts, Polygon())
        parts = shapely.symmetric_difference(parts[0::2], parts[1::2])
    return parts[0]


@dataclass
class IoUTables:
    """The geometry of one image, computed once: enough to score any subset of the detections.

    Rows are the given ground truths and columns the given detections, in order; with
    ``invalid_polygons='drop'`` the dropped ones stay in the tables with ``*_counted`` False."""
    iou: np.ndarray            # (G, D) intersection over union
    gt_dont_care: np.ndarray   # (G,) bool
    det_dont_care: np.ndarray  # (D,) bool
    gt_counted: Optional[np.ndarray] = None   # (G,) bool, None = all
    det_counted: Optional[np.ndarray] = None  # (D,) bool, None = all


class DetectionIoUEvaluator:
    """``evaluate_image(gt, pred)`` -> per-image dict; ``combine_results(list)`` -> data-set P/R/F.

    gt: sequence of ``{'points': (N, 2) or flat x, y list, 'ignore': bool}``; pred: sequence of
    ``{'points': ...}`` (or one (D, N, 2) array of points); pixel coordinates, ground truth and detections in
    the same image frame.

    iou_constraint (0.5) and area_precision_constraint (0.5) are the official script's IOU_CONSTRAINT and
    AREA_PRECISION_CONSTRAINT. invalid_polygons: ``'official'`` (default; the official script's arithmetic
    for every polygon, valid or not) or ``'drop'`` (the original DBNet evaluator: polygons that are not
    valid simple polygons are left out); see the module docstring. Raises ValueError for any other value.
    """

    protocol = 'iou'

    def __init__(self, iou_constraint: float = 0.5, area_precision_constraint: float = 0.5,
                 invalid_polygons: str = 'official'):
        if invalid_polygons not in INVALID_POLYGONS:
            raise ValueError(f"DetectionIoUEvaluator: invalid_polygons must be one of "
                             f"{', '.join(map(repr, INVALID_POLYGONS))}, got {invalid_polygons!r}")
        self.iou_constraint = iou_constraint
        self.area_precision_constraint = area_precision_constraint
        self.invalid_polygons = invalid_polygons

    def prepare(self, gt: Sequence[Mapping[str, Any]], pred: Union[Sequence[Mapping[str, Any]], np.ndarray]
                ) -> IoUTables:
        """The (G, D) IoU table and the don't-care masks of one image. ``pred`` may also be a (D, N, 2) array of
        D polygons of N points each (a result file's detections, without a dict per detection). Raises
        KeyError / ValueError naming ``gt[i]`` / ``pred[i]`` for an item without 'points', with points not
        (N, 2), or (with 'official') with a non-finite coordinate.

        Only the pairs whose bounding boxes meet are intersected (the others' intersection is exactly 0), and
        with 'official' only the detections that meet a ground truth's box are built as polygons: a file of a
        million detections costs numpy's time, not a million shapely polygons."""
        gt_points = [_as_points(_item_points(item, f'gt[{index}]'), f'gt[{index}]') for index, item in enumerate(gt)]
        det_stack: Optional[np.ndarray] = None
        if isinstance(pred, np.ndarray):
            if pred.ndim != 3 or pred.shape[2] != 2:
                raise ValueError(f'pred: expected a (D, N, 2) array of points, got shape {pred.shape}')
            det_stack = np.asarray(pred, dtype=np.float64)
            det_points: PointArrays = det_stack
        else:
            det_points = [_as_points(_item_points(item, f'pred[{index}]'), f'pred[{index}]')
                          for index, item in enumerate(pred)]
        gt_dont_care = np.array([bool(item.get('ignore', False)) for item in gt], dtype=bool)
        meets: Optional[np.ndarray] = None
        if self.invalid_polygons == 'drop':
            gt_regions, gt_area, gt_counted = _valid_only(gt_points)
            det_regions, det_area, det_counted = _valid_only(det_points)
        else:
            gt_regions, gt_area = _official_geometry(gt_points, 'gt')
            det_stack = _checked_stack(det_points, 'pred')
            meets = _boxes_meet(shapely.bounds(gt_regions), _point_boxes(det_points, det_stack))
            det_regions, det_area = _official_geometry(det_points, 'pred', needed=np.asarray(meets.any(axis=0)),
                                                       stacked=det_stack)
            gt_counted, det_counted = None, None
        det_dont_care = np.zeros(len(det_points), dtype=bool)
        iou = np.zeros((len(gt_points), len(det_points)), dtype=np.float64)
        if len(gt_points) and len(det_points):
            # IoU = intersection / (area + area - intersection), 0 where that union is 0; only the pairs whose
            # boxes meet can have an intersection, every other IoU and don't-care share is exactly 0
            rows, columns, intersection = _intersection_areas(gt_regions, det_regions, meets)
            union = gt_area[rows] + det_area[columns] - intersection
            iou[rows, columns] = np.divide(intersection, union, out=np.zeros_like(intersection), where=union != 0)
            # dropped polygons are empty with area 0: they cover nothing
            on_dont_care = gt_dont_care[rows]
            covered = np.divide(intersection[on_dont_care], det_area[columns[on_dont_care]],
                                out=np.zeros(int(on_dont_care.sum())), where=det_area[columns[on_dont_care]] != 0)
            det_dont_care[columns[on_dont_care][covered > self.area_precision_constraint]] = True
        return IoUTables(iou=iou, gt_dont_care=gt_dont_care, det_dont_care=det_dont_care,
                         gt_counted=gt_counted, det_counted=det_counted)

    def match(self, tables: IoUTables, keep: Optional[np.ndarray] = None) -> Dict[str, Any]:
        """Greedy matching on the detections selected by the boolean (D,) mask ``keep`` (all by default).
        Returns precision, recall, hmean, matched, gt_care, det_care and pairs ((gt index, detection index)
        into the given lists)."""
        columns = np.arange(tables.iou.shape[1]) if keep is None else np.flatnonzero(keep)
        iou = tables.iou if keep is None else tables.iou[:, columns]  # no copy of a large table to score it all
        gt_counted = np.ones(len(tables.gt_dont_care), dtype=bool) if tables.gt_counted is None else tables.gt_counted
        det_counted = (np.ones(tables.iou.shape[1], dtype=bool) if tables.det_counted is None
                       else tables.det_counted)[columns]
        det_dont_care = tables.det_dont_care[columns]
        gt_cared = gt_counted & ~tables.gt_dont_care
        det_cared = det_counted & ~det_dont_care
        det_taken = ~det_cared  # don't-care (and dropped) detections never match
        pairs = []
        for gt_index in np.flatnonzero(gt_cared):
            candidates = np.flatnonzero(~det_taken & (iou[gt_index] > self.iou_constraint))
            if len(candidates):
                det_index = int(candidates[0])
                det_taken[det_index] = True
                pairs.append((int(gt_index), int(columns[det_index])))
        matched = len(pairs)
        gt_care = int(gt_cared.sum())
        det_care = int(det_cared.sum())
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
        """``match(prepare(gt, pred))``: the official script's per-sample precision, recall, hmean."""
        return self.match(self.prepare(gt, pred))

    def combine_results(self, results: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
        """Data-set precision, recall, hmean from per-image results: the counts are summed, then divided
        (the official script's matchedSum / numGlobalCareDet and / numGlobalCareGt)."""
        matched = sum(result['matched'] for result in results)
        gt_care = sum(result['gt_care'] for result in results)
        det_care = sum(result['det_care'] for result in results)
        recall = 0.0 if gt_care == 0 else matched / gt_care
        precision = 0.0 if det_care == 0 else matched / det_care
        hmean = 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)
        return {'precision': precision, 'recall': recall, 'hmean': hmean}


def _boxes_meet(gt_box: np.ndarray, det_box: np.ndarray) -> np.ndarray:
    """(G, D) bool: whether the (G, 4) and (D, 4) boxes (min x, min y, max x, max y) meet (touching counts;
    a NaN box meets nothing)."""
    return ((gt_box[:, None, 0] <= det_box[None, :, 2]) & (det_box[None, :, 0] <= gt_box[:, None, 2])
            & (gt_box[:, None, 1] <= det_box[None, :, 3]) & (det_box[None, :, 1] <= gt_box[:, None, 3]))


def _point_boxes(point_arrays: PointArrays, stacked: Optional[np.ndarray]) -> np.ndarray:
    """(D, 4) box of each polygon's points (NaN for one without points): its region, even-odd or not, lies
    inside."""
    if stacked is not None:
        if stacked.shape[1] == 0:
            return np.full((len(stacked), 4), np.nan)
        return np.concatenate([stacked.min(axis=1), stacked.max(axis=1)], axis=1)
    boxes = np.full((len(point_arrays), 4), np.nan)
    for index, points in enumerate(point_arrays):
        if len(points):
            boxes[index, :2], boxes[index, 2:] = points.min(axis=0), points.max(axis=0)
    return boxes


def _intersection_areas(gt_regions: np.ndarray, det_regions: np.ndarray, meets: Optional[np.ndarray] = None
                        ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, areas): the intersection areas of the (ground truth, detection) pairs whose bounding boxes
    meet (``meets``, by default from the regions' bounds). Every other pair's intersection is exactly 0, as
    intersecting them would give (an empty region has NaN bounds and meets nothing): the same numbers as
    intersecting every pair, in a fraction of the time and memory when most pairs are far apart (a result file
    of many detections)."""
    if meets is None:
        meets = _boxes_meet(shapely.bounds(gt_regions), shapely.bounds(det_regions))
    rows, columns = np.nonzero(meets)
    areas = np.zeros(len(rows), dtype=np.float64)
    if len(rows):
        areas = np.asarray(shapely.area(shapely.intersection(gt_regions[rows], det_regions[columns])),
                           dtype=np.float64)
    return rows, columns, areas


def _item_points(item: Mapping[str, Any], where: str) -> Any:
    if 'points' not in item:
        raise KeyError(f"{where}: expected a key 'points', got keys {sorted(item)}")
    return item['points']


def _as_points(points: Any, where: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim == 1 and array.size % 2 == 0:  # flat x1, y1, x2, y2, ...
        array = array.reshape(-1, 2)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f'{where}: expected (N, 2) points or a flat list of x, y, got shape {array.shape}')
    return array


def _checked_stack(point_arrays: PointArrays, side: str) -> Optional[np.ndarray]:
    """ValueError naming ``side[i]`` for a polygon with a non-finite coordinate; the (M, N, 2) stack of the
    polygons when they all have N points (one finite check for all), else None."""
    if isinstance(point_arrays, np.ndarray):
        stacked: Optional[np.ndarray] = point_arrays
    else:
        counts = {len(points) for points in point_arrays}
        stacked = np.stack(point_arrays) if len(counts) == 1 else None
    if stacked is None or not np.isfinite(stacked).all():
        for index, points in enumerate(point_arrays):
            if not np.isfinite(points).all():
                raise ValueError(f'{side}[{index}]: non-finite coordinate in {np.asarray(points).tolist()}')
    return stacked


def _official_geometry(point_arrays: PointArrays, side: str, needed: Optional[np.ndarray] = None,
                       stacked: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Per polygon: the region its intersections are taken with (the polygon itself when it is a valid
    simple polygon, else its even-odd region) and the Polygon library's area (shoelace, absolute).
    ``needed``: a (M,) mask of the polygons whose region is used (the others' stays None: they meet no
    polygon of the other side); ``stacked``: the (M, N, 2) stack when ``_checked_stack`` made one."""
    regions = np.empty(len(point_arrays), dtype=object)
    areas = np.zeros(len(point_arrays), dtype=np.float64)
    if not len(point_arrays):
        return regions, areas
    if stacked is None:
        stacked = _checked_stack(point_arrays, side)
    chosen = np.arange(len(point_arrays)) if needed is None else np.flatnonzero(needed)
    if stacked is not None and stacked.shape[1] >= 3:  # the usual case: one shape, one vectorised construction
        areas = _shoelace_areas(stacked)
        polygons = shapely.polygons(stacked[chosen])
    else:
        areas = np.array([contour_area(points) for points in point_arrays], dtype=np.float64)
        polygons = np.array([Polygon(point_arrays[int(index)]) if len(point_arrays[int(index)]) >= 3 else Polygon()
                             for index in chosen], dtype=object)
    simple = shapely.is_valid(polygons) & (areas[chosen] > 0) if len(chosen) else np.zeros(0, dtype=bool)
    regions[chosen] = polygons
    for invalid in chosen[~simple]:
        regions[invalid] = even_odd_region(point_arrays[int(invalid)])
    return regions, areas


def _valid_only(point_arrays: PointArrays) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 'drop' rule: the valid simple polygons, their shapely areas, and which ones they are."""
    regions = np.empty(len(point_arrays), dtype=object)
    areas = np.zeros(len(point_arrays), dtype=np.float64)
    counted = np.zeros(len(point_arrays), dtype=bool)
    for index, points in enumerate(point_arrays):
        polygon = to_polygon(points)
        counted[index] = polygon is not None
        regions[index] = polygon if polygon is not None else Polygon()
        areas[index] = polygon.area if polygon is not None else 0.0
    return regions, areas, counted
