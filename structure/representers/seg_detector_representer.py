"""Probability map -> text boxes or polygons in original image coordinates (DBNet post-processing).

The steps are those of the paper's code base (see docs/evaluation.md); this version batches whatever can
be batched across the candidates of one map (corner ordering, bounding boxes, the unclip distances with
vectorised shapely, the final scaling) and keeps the per-candidate work to the OpenCV / pyclipper calls
that define the result. Its output is identical, box for box and bit for bit in the scores, to the
straightforward version in `structure.representers.reference` (tests/test_postprocess_representer.py).
"""
from __future__ import annotations

from itertools import chain
from typing import Any, List, Mapping, Sequence, Tuple

import cv2
import numpy as np
import pyclipper
import shapely
import torch

SCORE_MODES = ('fast', 'slow')


class SegDetectorRepresenter:
    """Turns the probability map of `SegDetectorModel` into detections.

    thresh: binarisation threshold of the map. box_thresh: minimum mean probability of a kept detection.
    max_candidates: contours looked at per map (in findContours order). unclip_ratio /
    polygon_unclip_ratio: how far boxes / polygons grow back (D = area * ratio / perimeter).
    min_size: minimum short side of a candidate's minimum-area rectangle (min_size + 2 after growing).
    score_mode: 'fast' scores the mean probability inside the box (box mode) or the simplified polygon
    (polygon mode); 'slow' inside the contour itself. dest: key of the map when `pred` is a dict.
    """

    def __init__(self, thresh: float = 0.3, box_thresh: float = 0.7, max_candidates: int = 100,
                 unclip_ratio: float = 1.5, polygon_unclip_ratio: float = 2.0, min_size: int = 3,
                 score_mode: str = 'fast', dest: str = 'binary'):
        if score_mode not in SCORE_MODES:
            raise ValueError(f'score_mode: expected one of {SCORE_MODES}, got {score_mode!r}')
        if max_candidates < 0:
            raise ValueError(f'max_candidates: expected >= 0, got {max_candidates}')
        self.thresh = float(thresh)
        self.box_thresh = float(box_thresh)
        self.max_candidates = int(max_candidates)
        self.unclip_ratio = float(unclip_ratio)
        self.polygon_unclip_ratio = float(polygon_unclip_ratio)
        if min_size < 1:
            raise ValueError(f'min_size must be at least 1 (a zero-area candidate cannot be grown), got {min_size}')
        self.min_size = min_size
        self.score_mode = score_mode
        self.dest = dest

    # ------------------------------------------------------------------ batch interface
    def represent(self, batch: Mapping[str, Any], pred: Any, is_output_polygon: bool = False
                  ) -> Tuple[List[Any], List[List[float]]]:
        """Per image: boxes (int32 array (N, 4, 2), top-left first, clockwise) or, with ``is_output_polygon``,
        a list of int32 (Ni, 2) polygons; and a list of float scores. Coordinates are in the original
        image size given by ``batch['shape'][i]`` = (H, W)."""
        probs = self.probability_maps(pred)
        shapes = original_shapes(batch, len(probs))
        boxes_batch, scores_batch = [], []
        for prob, (dest_height, dest_width) in zip(probs, shapes):
            if is_output_polygon:
                boxes, scores = self.polygons_from_map(prob, dest_height, dest_width)
            else:
                boxes, scores = self.boxes_from_map(prob, dest_height, dest_width)
            boxes_batch.append(boxes)
            scores_batch.append(scores)
        return boxes_batch, scores_batch

    def probability_maps(self, pred: Any) -> np.ndarray:
        """(B, H, W) float32 C-contiguous NumPy maps from a tensor / array (B, 1, H, W) or (B, H, W), or a
        dict holding one under ``self.dest``; moved to the CPU once for the whole batch."""
        if isinstance(pred, Mapping):
            if self.dest not in pred:
                raise KeyError(f'pred: expected a key {self.dest!r} (representer dest), got keys {sorted(pred)}')
            pred = pred[self.dest]
        if isinstance(pred, torch.Tensor):
            pred = pred.detach().to(device='cpu', dtype=torch.float32).numpy()
        elif isinstance(pred, np.ndarray):
            pred = pred.astype(np.float32, copy=False)
        else:
            raise TypeError(f'pred: expected a tensor, an array or a dict of them, got {type(pred).__name__}')
        if pred.ndim == 4:
            if pred.shape[1] != 1:
                raise ValueError(f'pred: expected shape (B, 1, H, W) or (B, H, W), got {tuple(pred.shape)}')
            pred = pred[:, 0]
        elif pred.ndim != 3:
            raise ValueError(f'pred: expected shape (B, 1, H, W) or (B, H, W), got {tuple(pred.shape)}')
        return np.ascontiguousarray(pred)

    # ------------------------------------------------------------------ one map
    def boxes_from_map(self, prob: np.ndarray, dest_height: int, dest_width: int
                       ) -> Tuple[np.ndarray, List[float]]:
        """Box mode on one (H, W) float32 map: (N, 4, 2) int32 boxes and N float scores."""
        height, width = prob.shape
        empty = np.zeros((0, 4, 2), dtype=np.int32)
        contours = self._contours(prob)
        if not contours:
            return empty, []
        rects = [cv2.minAreaRect(contour) for contour in contours]
        large = [index for index, rect in enumerate(rects) if min(rect[1]) >= self.min_size]
        if not large:
            return empty, []
        corners = order_corners(np.stack([cv2.boxPoints(rects[index]) for index in large]))
        if self.score_mode == 'fast':
            scores = mean_scores(prob, list(corners))
        else:
            scores = mean_scores(prob, [contours[index].reshape(-1, 2) for index in large])
        passed = [index for index, score in enumerate(scores) if score >= self.box_thresh]
        if not passed:
            return empty, []
        corners = corners[passed]
        scores = [scores[index] for index in passed]
        grown = points_per_candidate(unclip_all(list(corners), self.unclip_ratio))
        final_rects = [cv2.minAreaRect(points) for points in grown]
        big_enough = [index for index, rect in enumerate(final_rects) if min(rect[1]) >= self.min_size + 2]
        if not big_enough:
            return empty, []
        boxes = order_corners(np.stack([cv2.boxPoints(final_rects[index]) for index in big_enough]))
        boxes[:, :, 0] = np.clip(np.round(boxes[:, :, 0] / width * dest_width), 0, dest_width)
        boxes[:, :, 1] = np.clip(np.round(boxes[:, :, 1] / height * dest_height), 0, dest_height)
        return boxes.astype(np.int32), [float(scores[index]) for index in big_enough]

    def polygons_from_map(self, prob: np.ndarray, dest_height: int, dest_width: int
                          ) -> Tuple[List[np.ndarray], List[float]]:
        """Polygon mode on one (H, W) float32 map: a list of (Ni, 2) int32 polygons and their scores."""
        height, width = prob.shape
        candidates, sources = [], []
        for contour in self._contours(prob):
            epsilon = 0.002 * cv2.arcLength(contour, True)
            approx = cv2.approxPolyDP(contour, epsilon, True).reshape(-1, 2)
            if approx.shape[0] >= 4:
                candidates.append(approx)
                sources.append(contour)
        if not candidates:
            return [], []
        if self.score_mode == 'fast':
            scores = mean_scores(prob, candidates)
        else:
            scores = mean_scores(prob, [contour.reshape(-1, 2) for contour in sources])
        passed = [index for index, score in enumerate(scores) if score >= self.box_thresh]
        if not passed:
            return [], []
        expanded = unclip_all([candidates[index] for index in passed], self.polygon_unclip_ratio)
        # growing can split a region (or erase it): such a candidate has no single polygon to report
        single = [position for position, paths in enumerate(expanded) if len(paths) == 1]
        grown = points_per_candidate([expanded[position] for position in single])
        kept, kept_scores = [], []
        for position, polygon in zip(single, grown):
            if min(cv2.minAreaRect(polygon)[1]) < self.min_size + 2:
                continue
            kept.append(polygon)
            kept_scores.append(float(scores[passed[position]]))
        if not kept:
            return [], []
        counts = [len(polygon) for polygon in kept]
        points = np.concatenate(kept).astype(np.float64)
        points[:, 0] = np.clip(np.round(points[:, 0] / width * dest_width), 0, dest_width)
        points[:, 1] = np.clip(np.round(points[:, 1] / height * dest_height), 0, dest_height)
        return split_rows(points.astype(np.int32), counts), kept_scores

    def _contours(self, prob: np.ndarray) -> Sequence[np.ndarray]:
        if prob.ndim != 2:
            raise ValueError(f'probability map: expected shape (H, W), got {prob.shape}')
        bitmap = np.greater(prob, self.thresh).view(np.uint8)
        contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        return contours[:self.max_candidates]


# ---------------------------------------------------------------------- helpers shared by both modes
def original_shapes(batch: Mapping[str, Any], batch_size: int) -> List[Tuple[int, int]]:
    """``batch['shape']`` as a list of (H, W) Python ints, one per map."""
    if 'shape' not in batch:
        raise KeyError("batch: expected a key 'shape' (original (H, W) of each image), got keys "
                       f'{sorted(batch)}')
    shapes = batch['shape']
    if isinstance(shapes, torch.Tensor):
        shapes = shapes.tolist()
    shapes = [tuple(int(value) for value in np.asarray(shape).reshape(-1)) for shape in shapes]
    if len(shapes) != batch_size:
        raise ValueError(f"batch['shape']: expected {batch_size} (H, W) pairs, one per map, got {len(shapes)}")
    for shape in shapes:
        if len(shape) != 2 or min(shape) <= 0:
            raise ValueError(f"batch['shape']: expected (H, W) with positive sizes, got {shape}")
    return shapes


def order_corners(corners: np.ndarray) -> np.ndarray:
    """(N, 4, 2) rectangle corners -> top-left, top-right, bottom-right, bottom-left.

    The rule of the original code: sort the corners by x (stable), the left pair ordered by y gives top-left
    and bottom-left (ties: the later one is top-left), the right pair likewise.
    """
    order = np.argsort(corners[:, :, 0], axis=1, kind='stable')
    by_x = np.take_along_axis(corners, order[:, :, None], axis=1)
    left_swap = ~(by_x[:, 1, 1] > by_x[:, 0, 1])
    right_swap = ~(by_x[:, 3, 1] > by_x[:, 2, 1])
    rows = np.arange(len(corners))
    top_left = np.where(left_swap, 1, 0)
    top_right = np.where(right_swap, 3, 2)
    pick = np.stack([top_left, top_right, 5 - top_right, 1 - top_left], axis=1)
    return by_x[rows[:, None], pick]


def split_rows(array: np.ndarray, counts: Sequence[int]) -> List[np.ndarray]:
    """Consecutive row blocks of ``array`` with the given sizes, as views (np.split does the same at a
    tenth of the speed for many small pieces)."""
    ends = np.cumsum(counts).tolist()
    return [array[start:end] for start, end in zip([0] + ends[:-1], ends)]


def mean_scores(prob: np.ndarray, polygons: Sequence[np.ndarray]) -> List[float]:
    """Mean of ``prob`` over each polygon as cv2.fillPoly rasterises it (vertices truncated to integers)
    within the polygon's bounding box clipped to the map; zero for a polygon wholly outside the map.

    One fillPoly and one cv2.mean per polygon on a reused mask buffer; the boxes are computed for all
    polygons at once. Truncating before shifting by the window origin is what the original did after
    shifting: the shift is an integer no larger than any coordinate it is subtracted from, except where
    clipping moved it to 0, so both orders give the same pixels.
    """
    height, width = prob.shape
    if not polygons:
        return []
    counts = [len(polygon) for polygon in polygons]
    points = np.concatenate(polygons)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    mins = np.minimum.reduceat(points, starts).astype(np.float64)
    maxs = np.maximum.reduceat(points, starts).astype(np.float64)
    low = np.clip(np.floor(mins), 0, [width - 1, height - 1]).astype(np.int64)
    high = np.clip(np.ceil(maxs), 0, [width - 1, height - 1]).astype(np.int64)
    extent = high - low + 1
    integer_points = points.astype(np.int32)
    integer_polygons = split_rows(integer_points, counts)
    buffer = np.empty((int(extent[:, 1].max()), int(extent[:, 0].max())), dtype=np.uint8)
    scores = []
    for polygon, (xmin, ymin), (xmax, ymax) in zip(integer_polygons, low.tolist(), high.tolist()):
        mask = buffer[:ymax - ymin + 1, :xmax - xmin + 1]
        mask.fill(0)
        cv2.fillPoly(mask, [polygon], 1, offset=(-xmin, -ymin))
        scores.append(cv2.mean(prob[ymin:ymax + 1, xmin:xmax + 1], mask)[0])
    return scores


def points_per_candidate(paths_per_candidate: Sequence[list]) -> List[np.ndarray]:
    """pyclipper's output (per candidate, a list of paths of [x, y] ints) as one (Ni, 2) int32 array per
    candidate holding all its paths' vertices in order. One np.fromiter over the flattened numbers costs
    about half of converting each nested list with np.array."""
    counts = [sum(len(path) for path in paths) for paths in paths_per_candidate]
    if not counts:
        return []
    numbers = chain.from_iterable(chain.from_iterable(chain.from_iterable(paths_per_candidate)))
    flat = np.fromiter(numbers, dtype=np.int32, count=2 * sum(counts)).reshape(-1, 2)
    return split_rows(flat, counts)


def unclip_all(polygons: Sequence[np.ndarray], ratio: float) -> List[list]:
    """Each polygon grown by D = area * ratio / perimeter with round joins (pyclipper): a list of paths
    (lists of [x, y] ints) per polygon. Areas and perimeters come from one vectorised shapely call; the
    vertices go to pyclipper as Python lists, which it reads ten times faster than array rows."""
    if not polygons:
        return []
    counts = [len(polygon) for polygon in polygons]
    rings = shapely.linearrings(np.concatenate(polygons).astype(np.float64),
                                indices=np.repeat(np.arange(len(polygons)), counts))
    shapes = shapely.polygons(rings)
    distances = (shapely.area(shapes) * ratio / shapely.length(shapes)).tolist()
    offset = pyclipper.PyclipperOffset()
    results = []
    for polygon, distance in zip(polygons, distances):
        offset.Clear()
        offset.AddPath(polygon.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
        results.append(offset.Execute(distance))
    return results
