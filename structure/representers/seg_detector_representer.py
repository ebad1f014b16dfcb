"""Probability map -> text boxes or polygons in original image coordinates (DBNet post-processing).

The steps are those of the paper's code base (see docs/evaluation.md). This version keeps, per candidate, only
the OpenCV / pyclipper calls that define the result (minAreaRect, boxPoints, approxPolyDP, cv2.mean over the
same mask pixels, the pyclipper offset) and does the rest for all candidates of a map at once: corner ordering,
score windows, the score masks (one cv2.fillPoly call for many candidates, `mean_scores`), the unclip distances
(vectorised shapely for boxes; exact NumPy, bit for bit GEOS's, for integer polygons), pyclipper's output read
with one np.fromiter, and the final scaling and validity check. Its output is identical, box for box and bit
for bit in the scores, to `structure.representers.reference.ReferenceRepresenter`, which follows the original
code base's per-contour code path call for call (tests/test_postprocess_reference.py and
tests/test_postprocess_representer.py; speed: benchmarks/bench_postprocess.py). Both end with
`data.geometry.to_image_polygons`, which scales, rounds and clips as the original code did and replaces the rare
output that this leaves invalid (self-intersecting, zero area, repeated points) by a valid one. The polygon
geometry (corner order, unclip distances and offsets, validity, repair) lives in `data.geometry`; this module
keeps what reads the probability map: contours, candidate selection and scores.
"""
from __future__ import annotations

import warnings
from itertools import accumulate
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from concern.config import constructor_parameters
from data.geometry import (integer_unclip_distances, order_corners, packed_points, split_rows, to_image_polygons,
                           unclip_distances, unclip_paths)

SCORE_MODES = ('fast', 'slow')


class CandidateCapWarning(UserWarning):
    """More candidates passed the filters than ``max_candidates`` keeps (one per map that hits the cap)."""


class SegDetectorRepresenter:
    """Turns the probability map of `SegDetectorModel` into detections.

    thresh: binarisation threshold of the map. box_thresh: minimum mean probability of a kept detection.
    polygon_box_thresh: the same minimum in polygon mode (None, the default: box_thresh in both modes, as the
    original). The two modes score a candidate over different pixels (box mode the minimum-area rectangle, with the
    background in its corners; polygon mode the simplified contour), so a polygon scores higher than the box of
    the same region and the best threshold differs by mode: 0.35-0.40 for boxes against 0.45-0.55 for polygons
    at the paper's thresh 0.3 on the synthetic validation split in every run of docs/training.md ("A threshold per
    mode and the evaluation size"). This object owns both (``box_thresh_for`` gives the one of a mode):
    ``represent`` (inference, evaluation, validation) keeps the detections scoring at least it, and nothing else
    filters by it (``select`` keeps the same ones from ``candidates`` for a box_thresh sweep). Their values are
    ``structure.representer.box_thresh`` and ``polygon_box_thresh`` of the experiment; the precedence of the
    settings that change them (a dedicated flag or argument > ``--opt`` > the file; a dedicated box_thresh sets
    both) is ``concern.config.set_representer_thresholds``'.
    max_candidates: detections kept per map at most. Candidates are filtered first (min_size, the score at
    least box_thresh, the size after growing) and capped after: when more pass, the ``max_candidates``
    highest-scoring are kept (in findContours order) and a ``CandidateCapWarning`` names the image (or map), the
    number dropped and the setting. The
    original capped the raw contour list before any filter, so that on a dense page small specks or low-score
    contours took the places of words, with no message; ``cap_before_filtering: true`` restores that order
    (``structure.representers.reference`` follows it), for reproducing the original on such inputs.
    unclip_ratio / polygon_unclip_ratio: how far boxes / polygons grow back (D = area * ratio / perimeter).
    min_size: minimum short side of a candidate's minimum-area rectangle (min_size + 2 after growing).
    score_mode: 'fast' scores the mean probability inside the box (box mode) or the simplified polygon
    (polygon mode); 'slow' inside the contour itself. dest: key of the map when `pred` is a dict.
    """

    def __init__(self, thresh: float = 0.3, box_thresh: float = 0.7, max_candidates: int = 100,
                 unclip_ratio: float = 1.5, polygon_unclip_ratio: float = 2.0, min_size: int = 3,
                 score_mode: str = 'fast', dest: str = 'binary', cap_before_filtering: bool = False,
                 polygon_box_thresh: Optional[float] = None):
        if score_mode not in SCORE_MODES:
            raise ValueError(f'score_mode: expected one of {SCORE_MODES}, got {score_mode!r}')
        if max_candidates < 0:
            raise ValueError(f'max_candidates: expected >= 0, got {max_candidates}')
        if not 0.0 <= float(thresh) < 1.0:
            raise ValueError(f'thresh: expected a probability in [0, 1) (pixels above it form the binary map), '
                             f'got {thresh}')
        if not 0.0 <= float(box_thresh) <= 1.0:
            raise ValueError(f'box_thresh: expected a mean probability in [0, 1], got {box_thresh}')
        if polygon_box_thresh is not None and not 0.0 <= float(polygon_box_thresh) <= 1.0:
            raise ValueError(f'polygon_box_thresh: expected a mean probability in [0, 1] or null (box_thresh in '
                             f'both modes), got {polygon_box_thresh}')
        for name, ratio in (('unclip_ratio', unclip_ratio), ('polygon_unclip_ratio', polygon_unclip_ratio)):
            if not float(ratio) > 0.0 or not np.isfinite(float(ratio)):
                raise ValueError(f'{name}: expected a positive finite ratio (D = area * ratio / perimeter), '
                                 f'got {ratio}')
        self.thresh = float(thresh)
        self.box_thresh = float(box_thresh)
        self.polygon_box_thresh = None if polygon_box_thresh is None else float(polygon_box_thresh)
        self.max_candidates = int(max_candidates)
        self.unclip_ratio = float(unclip_ratio)
        self.polygon_unclip_ratio = float(polygon_unclip_ratio)
        if min_size < 1:
            raise ValueError(f'min_size must be at least 1 (a zero-area candidate cannot be grown), got {min_size}')
        self.min_size = min_size
        self.score_mode = score_mode
        self.dest = dest
        self.cap_before_filtering = bool(cap_before_filtering)

    # ------------------------------------------------------------------ batch interface
    def represent(self, batch: Mapping[str, Any], pred: Any, is_output_polygon: bool = False
                  ) -> Tuple[List[Any], List[List[float]]]:
        """Per image: boxes (int32 array (N, 4, 2), top-left first, clockwise) or, with ``is_output_polygon``,
        a list of int32 (Ni, 2) polygons; and a list of float scores, each at least the mode's threshold
        (``box_thresh_for``).
        Coordinates are in the original image size given by ``batch['shape'][i]`` = (H, W), within
        [0, W] x [0, H]. Every box and polygon is a valid simple polygon with positive area and no repeated
        consecutive points (shapely's rules; see `to_image_polygons`). The representer is never changed by a
        call, so one instance can serve several threads."""
        return self.candidates(batch, pred, is_output_polygon, min_score=self.box_thresh_for(is_output_polygon))

    def replaced(self, **changes: Any) -> 'SegDetectorRepresenter':
        """A new representer with this one's settings except ``changes`` (constructor arguments by name, e.g.
        ``thresh=0.15, unclip_ratio=0.8``), built and checked by the constructor (a bad value is its ValueError);
        this one is not changed. TypeError naming an argument the constructor does not take."""
        names = list(constructor_parameters(type(self))[0])
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise TypeError(f'{type(self).__name__}: no setting named {", ".join(map(repr, unknown))} '
                            f'(settings: {", ".join(names)})')
        return type(self)(**{name: changes.get(name, getattr(self, name)) for name in names})

    def box_thresh_for(self, is_output_polygon: bool = False) -> float:
        """The minimum score (a mean probability in [0, 1]) of a kept detection in a mode: ``polygon_box_thresh``
        in polygon mode where set, else ``box_thresh``."""
        if is_output_polygon and self.polygon_box_thresh is not None:
            return self.polygon_box_thresh
        return self.box_thresh

    def candidates(self, batch: Mapping[str, Any], pred: Any, is_output_polygon: bool = False,
                   min_score: float = 0.0) -> Tuple[List[Any], List[List[float]]]:
        """As ``represent``, with every candidate scoring at least ``min_score`` instead of the mode's threshold
        (``box_thresh_for``): what a box_thresh sweep varies the threshold over. A candidate's geometry and score do
        not depend on the threshold, so ``select`` of these (in the same mode) gives exactly ``represent``'s
        detections when ``min_score`` <= that threshold: the cap keeps the highest-scoring detections, so capping at
        the floor and then keeping those at the threshold keeps the same ones as keeping those at the threshold and
        then capping."""
        probs = self.probability_maps(pred)
        shapes = original_shapes(batch, len(probs))
        names = batch.get('filename')
        boxes_batch: List[Any] = []
        scores_batch: List[List[float]] = []
        for index, (prob, (dest_height, dest_width)) in enumerate(zip(probs, shapes)):
            boxes: Union[np.ndarray, List[np.ndarray]]  # (N, 4, 2) boxes or a list of polygons
            name = str(names[index]) if names is not None and len(names) == len(probs) else None
            if is_output_polygon:
                boxes, scores = self.polygons_from_map(prob, dest_height, dest_width, min_score, name)
            else:
                boxes, scores = self.boxes_from_map(prob, dest_height, dest_width, min_score, name)
            boxes_batch.append(boxes)
            scores_batch.append(scores)
        return boxes_batch, scores_batch

    def select(self, boxes: Any, scores: Sequence[float], is_output_polygon: bool = False
               ) -> Tuple[Any, List[float]]:
        """One image's detections (``candidates``' boxes (N, 4, 2) array or list of polygons, and their scores)
        kept at the mode's threshold (``box_thresh_for``): those scoring at least it, in order, in the same
        container kind."""
        floor = self.box_thresh_for(is_output_polygon)
        kept = [index for index, score in enumerate(scores) if score >= floor]
        if isinstance(boxes, np.ndarray):
            return boxes[kept], [scores[index] for index in kept]
        return [boxes[index] for index in kept], [scores[index] for index in kept]

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
    def boxes_from_map(self, prob: np.ndarray, dest_height: int, dest_width: int,
                       min_score: Optional[float] = None, name: Optional[str] = None
                       ) -> Tuple[np.ndarray, List[float]]:
        """Box mode on one (H, W) float32 map: (N, 4, 2) int32 boxes in the (dest_height, dest_width) image
        and N float scores, each at least ``min_score`` (None: ``box_thresh``). name: the image, for the
        ``CandidateCapWarning``."""
        min_score = self.box_thresh_for(False) if min_score is None else float(min_score)
        height, width = prob.shape
        empty = np.zeros((0, 4, 2), dtype=np.int32)
        contours = self._contours(prob)
        rects = [cv2.minAreaRect(contour) for contour in contours]
        large = [index for index, rect in enumerate(rects) if min(rect[1]) >= self.min_size]
        if not large:
            return empty, []
        corners = order_corners(np.array([cv2.boxPoints(rects[index]) for index in large]))
        if self.score_mode == 'fast':
            scores = mean_scores(prob, corners)
        else:
            scores = mean_scores(prob, [contours[index].reshape(-1, 2) for index in large])
        passed = [index for index, score in enumerate(scores) if score >= min_score]
        if not passed:
            return empty, []
        corners = corners[passed]
        distances = unclip_distances(corners, self.unclip_ratio)
        grown = packed_points(unclip_paths(corners.tolist(), distances))
        final_rects = [cv2.minAreaRect(points) for points in grown]
        big_enough = [index for index, rect in enumerate(final_rects) if min(rect[1]) >= self.min_size + 2]
        if not big_enough:
            return empty, []
        boxes = order_corners(np.array([cv2.boxPoints(final_rects[index]) for index in big_enough]))
        quadrilaterals, kept = to_image_polygons(boxes, (height, width), (dest_height, dest_width),
                                                 quadrilaterals=True)
        if not kept:
            return empty, []
        final_scores = [scores[passed[big_enough[index]]] for index in kept]
        chosen = self._capped(final_scores, prob.shape, name, self.box_thresh_for(False))
        if not chosen:  # max_candidates 0
            return empty, []
        return np.stack([quadrilaterals[index] for index in chosen]), [final_scores[index] for index in chosen]

    def polygons_from_map(self, prob: np.ndarray, dest_height: int, dest_width: int,
                          min_score: Optional[float] = None, name: Optional[str] = None
                          ) -> Tuple[List[np.ndarray], List[float]]:
        """Polygon mode on one (H, W) float32 map: a list of (Ni, 2) int32 polygons in the (dest_height,
        dest_width) image and their scores, each at least ``min_score`` (None: the polygon mode's threshold,
        ``box_thresh_for(True)``)."""
        min_score = self.box_thresh_for(True) if min_score is None else float(min_score)
        height, width = prob.shape
        contours = self._contours(prob)
        approximated = [cv2.approxPolyDP(contour, 0.002 * cv2.arcLength(contour, True), True)
                        for contour in contours]
        sources = [index for index, approx in enumerate(approximated) if len(approx) >= 4]
        if not sources:
            return [], []
        candidates = [approximated[index].reshape(-1, 2) for index in sources]
        if self.score_mode == 'fast':
            scores = mean_scores(prob, candidates)
        else:
            scores = mean_scores(prob, [contours[index].reshape(-1, 2) for index in sources])
        passed = [index for index, score in enumerate(scores) if score >= min_score]
        if not passed:
            return [], []
        counts = [len(candidates[index]) for index in passed]
        points = np.concatenate([candidates[index] for index in passed])
        distances = integer_unclip_distances(points, counts, self.polygon_unclip_ratio)
        flat = points.tolist()
        ends = list(accumulate(counts))
        expanded = unclip_paths([flat[end - count:end] for count, end in zip(counts, ends)], distances)
        # growing can split a region (or erase it): such a candidate has no single polygon to report
        single = [position for position, paths in enumerate(expanded) if len(paths) == 1]
        grown = packed_points([expanded[position] for position in single])
        kept = [position for position, polygon in enumerate(grown)
                if min(cv2.minAreaRect(polygon)[1]) >= self.min_size + 2]
        polygons, indices = to_image_polygons([grown[position] for position in kept], (height, width),
                                              (dest_height, dest_width))
        final_scores = [scores[passed[single[kept[index]]]] for index in indices]
        chosen = self._capped(final_scores, prob.shape, name, self.box_thresh_for(True))
        return [polygons[index] for index in chosen], [final_scores[index] for index in chosen]

    def _contours(self, prob: np.ndarray) -> Sequence[np.ndarray]:
        if prob.ndim != 2:
            raise ValueError(f'probability map: expected shape (H, W), got {prob.shape}')
        bitmap = np.greater(prob, self.thresh).view(np.uint8)
        contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        return contours[:self.max_candidates] if self.cap_before_filtering else contours

    def _capped(self, scores: Sequence[float], shape: Tuple[int, ...], name: Optional[str], floor: float
                ) -> List[int]:
        """Positions of the detections kept of those that passed every filter (``scores`` in findContours order):
        all, or the ``max_candidates`` highest-scoring (order kept). A ``CandidateCapWarning`` when the cap drops
        a detection scoring at least ``floor``, the mode's threshold (a sweep's lower floor alone does not warn)."""
        if len(scores) <= self.max_candidates or self.cap_before_filtering:
            return list(range(len(scores)))
        ranked = sorted(range(len(scores)), key=lambda index: -scores[index])  # stable: ties keep the order
        counted = sum(score >= floor for score in scores)
        if counted > self.max_candidates:
            where = name if name is not None else f'a {shape[0]}x{shape[1]} probability map'
            warnings.warn(f'{where}: {counted} detections passed the filters (min_size, the mode\'s box_thresh); '
                          f'max_candidates {self.max_candidates} kept the highest-scoring and dropped '
                          f'{counted - self.max_candidates} (raise structure.representer.max_candidates, e.g. '
                          f'--opt structure.representer.max_candidates={2 * counted})', CandidateCapWarning,
                          stacklevel=3)
        return sorted(ranked[:self.max_candidates])


# ---------------------------------------------------------------------- the batch and the scores
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


STACKED_MASK_BYTES = 1 << 22  # the most one image of stacked score masks holds; more windows take several


def mean_scores(prob: np.ndarray, polygons: Union[np.ndarray, Sequence[np.ndarray]]) -> List[float]:
    """Mean of ``prob`` over each polygon as cv2.fillPoly rasterises it (vertices truncated to integers)
    within the polygon's bounding box clipped to the map (floor of the minima, ceil of the maxima); zero for
    a polygon wholly outside the map. ``polygons``: an (N, K, 2) array or a sequence of (Ni, 2) arrays.

    The same mask pixels and the same cv2.mean call per polygon as the original's box_score_fast, hence the
    same bits. Truncating before shifting by the window origin is what the original did after shifting: the
    shift is an integer no larger than any coordinate it is subtracted from, except where clipping moved it
    to 0, so both orders give the same pixels. The masks are drawn by one cv2.fillPoly call for many polygons:
    their windows are stacked from top to bottom in one mask image (`stacked_groups`), so that no row holds
    two polygons and each is rasterised as if alone. A polygon whose window the map clips is drawn on its
    own, clipped by its window as in the original (fillPoly's clipping decides some of its pixels).
    """
    height, width = prob.shape
    if not len(polygons):
        return []
    if isinstance(polygons, np.ndarray):
        counts = [polygons.shape[1]] * len(polygons)
        points = polygons.reshape(-1, 2)
        lowest, highest = polygons.min(axis=1), polygons.max(axis=1)
    else:
        counts = [len(polygon) for polygon in polygons]
        points = np.concatenate(polygons)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        lowest, highest = np.minimum.reduceat(points, starts), np.maximum.reduceat(points, starts)
    if points.dtype.kind == 'f':
        lowest, highest = np.floor(lowest), np.ceil(highest)
    limits = [width - 1, height - 1]
    low = np.clip(lowest, 0, limits).astype(np.int64)
    high = np.clip(highest, 0, limits).astype(np.int64)
    inside = ((low == lowest).all(axis=1) & (high == highest).all(axis=1)).tolist()
    widths, heights = (high - low + 1).T
    groups = stacked_groups(heights.tolist(), widths.tolist())
    tops = np.cumsum(heights) - heights
    for start, end in groups[1:]:
        tops[start:end] -= tops[start]
    integer = points.astype(np.int32)
    shifts = np.stack([-low[:, 0], tops - low[:, 1]], axis=1).astype(np.int32)
    stacked = split_rows(integer + np.repeat(shifts, counts, axis=0), counts)
    unshifted = split_rows(integer, counts) if not all(inside) else []
    windows = list(zip(low.tolist(), high.tolist(), tops.tolist()))
    scores: List[float] = []
    for start, end in groups:
        masks = np.zeros((int(heights[start:end].sum()), int(widths[start:end].max())), dtype=np.uint8)
        together = [stacked[index] for index in range(start, end) if inside[index]]
        if together:
            cv2.fillPoly(masks, together, 1)
        for index in range(start, end):
            if not inside[index]:
                (xmin, ymin), (xmax, ymax), top = windows[index]
                cv2.fillPoly(masks[top:top + ymax - ymin + 1, :xmax - xmin + 1], [unshifted[index]], 1,
                             offset=(-xmin, -ymin))
        scores.extend(cv2.mean(prob[ymin:ymax + 1, xmin:xmax + 1], masks[top:top + ymax - ymin + 1,
                                                                         :xmax - xmin + 1])[0]
                      for (xmin, ymin), (xmax, ymax), top in windows[start:end])
    return scores


def stacked_groups(heights: Sequence[int], widths: Sequence[int], limit: Optional[int] = None
                   ) -> List[Tuple[int, int]]:
    """Consecutive windows (heights, widths) in groups [start, end) whose stack (the sum of the heights times
    the largest width) holds at most ``limit`` bytes (None: STACKED_MASK_BYTES); a larger window alone."""
    limit = STACKED_MASK_BYTES if limit is None else limit
    groups, start, rows, widest = [], 0, 0, 0
    for index, (window_height, window_width) in enumerate(zip(heights, widths)):
        if index > start and (rows + window_height) * max(widest, window_width) > limit:
            groups.append((start, index))
            start, rows, widest = index, 0, 0
        rows += window_height
        widest = max(widest, window_width)
    groups.append((start, len(heights)))
    return groups
