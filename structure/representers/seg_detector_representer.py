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
`to_image_polygons`, which scales, rounds and clips as the original code did and replaces the rare output that
this leaves invalid (self-intersecting, zero area, repeated points) by a valid one.
"""
from __future__ import annotations

from itertools import accumulate, chain
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

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
    def represent(self, batch: Mapping[str, Any], pred: Any, is_output_polygon: bool = False,
                  box_thresh: Optional[float] = None) -> Tuple[List[Any], List[List[float]]]:
        """Per image: boxes (int32 array (N, 4, 2), top-left first, clockwise) or, with ``is_output_polygon``,
        a list of int32 (Ni, 2) polygons; and a list of float scores. Coordinates are in the original
        image size given by ``batch['shape'][i]`` = (H, W), within [0, W] x [0, H]. Every box and polygon
        is a valid simple polygon with positive area and no repeated consecutive points (shapely's rules;
        see `to_image_polygons`). ``box_thresh``: this call's score threshold (None: ``self.box_thresh``);
        the representer itself is never changed, so one instance can serve several threads."""
        probs = self.probability_maps(pred)
        shapes = original_shapes(batch, len(probs))
        boxes_batch, scores_batch = [], []
        for prob, (dest_height, dest_width) in zip(probs, shapes):
            if is_output_polygon:
                boxes, scores = self.polygons_from_map(prob, dest_height, dest_width, box_thresh)
            else:
                boxes, scores = self.boxes_from_map(prob, dest_height, dest_width, box_thresh)
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
    def boxes_from_map(self, prob: np.ndarray, dest_height: int, dest_width: int,
                       box_thresh: Optional[float] = None) -> Tuple[np.ndarray, List[float]]:
        """Box mode on one (H, W) float32 map: (N, 4, 2) int32 boxes in the (dest_height, dest_width) image
        and N float scores; ``box_thresh`` None means ``self.box_thresh``."""
        box_thresh = self.box_thresh if box_thresh is None else float(box_thresh)
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
        passed = [index for index, score in enumerate(scores) if score >= box_thresh]
        if not passed:
            return empty, []
        corners = corners[passed]
        distances = shapely_distances(corners, self.unclip_ratio)
        grown = packed_points(offset_paths(corners.tolist(), distances))
        final_rects = [cv2.minAreaRect(points) for points in grown]
        big_enough = [index for index, rect in enumerate(final_rects) if min(rect[1]) >= self.min_size + 2]
        if not big_enough:
            return empty, []
        boxes = order_corners(np.array([cv2.boxPoints(final_rects[index]) for index in big_enough]))
        boxes, kept = to_image_polygons(boxes, (height, width), (dest_height, dest_width), quadrilaterals=True)
        if not kept:
            return empty, []
        return np.stack(boxes), [scores[passed[big_enough[index]]] for index in kept]

    def polygons_from_map(self, prob: np.ndarray, dest_height: int, dest_width: int,
                          box_thresh: Optional[float] = None) -> Tuple[List[np.ndarray], List[float]]:
        """Polygon mode on one (H, W) float32 map: a list of (Ni, 2) int32 polygons in the (dest_height,
        dest_width) image and their scores; ``box_thresh`` None means ``self.box_thresh``."""
        box_thresh = self.box_thresh if box_thresh is None else float(box_thresh)
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
        passed = [index for index, score in enumerate(scores) if score >= box_thresh]
        if not passed:
            return [], []
        counts = [len(candidates[index]) for index in passed]
        points = np.concatenate([candidates[index] for index in passed])
        distances = integer_distances(points, counts, self.polygon_unclip_ratio)
        flat = points.tolist()
        ends = list(accumulate(counts))
        expanded = offset_paths([flat[end - count:end] for count, end in zip(counts, ends)], distances)
        # growing can split a region (or erase it): such a candidate has no single polygon to report
        single = [position for position, paths in enumerate(expanded) if len(paths) == 1]
        grown = packed_points([expanded[position] for position in single])
        kept = [position for position, polygon in enumerate(grown)
                if min(cv2.minAreaRect(polygon)[1]) >= self.min_size + 2]
        polygons, indices = to_image_polygons([grown[position] for position in kept], (height, width),
                                              (dest_height, dest_width))
        return polygons, [scores[passed[single[kept[index]]]] for index in indices]

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
    ends = list(accumulate(counts))
    return [array[end - count:end] for count, end in zip(counts, ends)]


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
    scores = []
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


def shapely_distances(boxes: np.ndarray, ratio: float) -> np.ndarray:
    """D = area * ratio / perimeter of each (N, K, 2) polygon, area and perimeter by shapely (GEOS), as the
    original's unclip computed them one polygon at a time; here in one vectorised call each."""
    shapes = shapely.polygons(boxes.astype(np.float64))
    return shapely.area(shapes) * ratio / shapely.length(shapes)


def integer_distances(points: np.ndarray, counts: Sequence[int], ratio: float) -> np.ndarray:
    """`shapely_distances` for polygons with integer vertices, stored one after the other in ``points`` (M, 2)
    with sizes ``counts``, in NumPy and bit for bit what GEOS gives. The area is exact both ways: GEOS sums
    (x_i - x_0) * (y_(i-1) - y_(i+1)) in doubles, all integers below 2**53 here, as the int64 shoelace sum
    is. The perimeter is GEOS's sum, in ring order starting from 0.0, of sqrt(dx * dx + dy * dy) per edge (the
    closing one last): the same correctly rounded square roots of exact integers, added in the same order
    (np.bincount adds each ring's weights one after the other)."""
    points = points.astype(np.int64)
    counts = np.asarray(counts)
    ring = np.repeat(np.arange(len(counts)), counts)
    ends = np.cumsum(counts)
    following = np.arange(1, len(points) + 1)
    following[ends - 1] = ends - counts
    x, y = points[:, 0], points[:, 1]
    cross = x * y[following] - x[following] * y
    twice_area = np.add.reduceat(cross, ends - counts)
    dx, dy = (x[following] - x).astype(np.float64), (y[following] - y).astype(np.float64)
    perimeter = np.bincount(ring, weights=np.sqrt(dx * dx + dy * dy), minlength=len(counts))
    return np.abs(twice_area) / 2.0 * ratio / perimeter


def offset_paths(polygons: Sequence[list], distances: np.ndarray) -> List[list]:
    """Each polygon (a list of [x, y] pairs: pyclipper reads lists ten times faster than array rows) grown
    by its distance with pyclipper's round joins, as the original's unclip did: a list of paths (lists of
    [x, y] ints) per polygon. One offset object, cleared between polygons."""
    offset = pyclipper.PyclipperOffset()
    clear, add_path, execute = offset.Clear, offset.AddPath, offset.Execute
    results = []
    for polygon, distance in zip(polygons, distances.tolist()):
        clear()
        add_path(polygon, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
        results.append(execute(distance))
    return results


def packed_points(paths_per_candidate: Sequence[list]) -> List[np.ndarray]:
    """pyclipper's output (per candidate, a list of paths of [x, y] ints) as one (Ni, 2) int32 array per
    candidate holding all its paths' vertices in order (views of one array). One np.fromiter over the
    flattened numbers costs about half of converting each nested list with np.array."""
    counts = [sum(map(len, paths)) for paths in paths_per_candidate]
    if not counts:
        return []
    numbers = chain.from_iterable(chain.from_iterable(chain.from_iterable(paths_per_candidate)))
    flat = np.fromiter(numbers, dtype=np.int32, count=2 * sum(counts)).reshape(-1, 2)
    return split_rows(flat, counts)


# ---------------------------------------------------------------------- final step, shared with the reference
def to_image_polygons(polygons: Union[np.ndarray, Sequence[np.ndarray]], map_size: Tuple[int, int],
                      dest_size: Tuple[int, int], quadrilaterals: bool = False) -> Tuple[List[np.ndarray], List[int]]:
    """Detections in map coordinates -> valid int32 polygons in the original image, and which inputs they are.

    polygons: a sequence of (Ni, 2) arrays, or an (N, 4, 2) array of boxes, x then y in map pixels (float32
    boxes are scaled in float32, as the original code did; anything else in float64). map_size = (h, w) of
    the probability map, dest_size = (H, W) of the original image. Returns a list of int32 polygons (each
    (4, 2) with ``quadrilaterals``) and, for each, the index of its input. This is the last step of both
    `SegDetectorRepresenter` and the reference version, so that both repair alike.

    Each point is scaled per axis (x * W / w, y * H / h), rounded, and clipped to [0, W] x [0, H], as in the
    original code (MhLiao/DB). That rounding and clipping can collapse a thin or heavily scaled-down
    detection to repeated points, zero area or a ring that crosses or touches itself, and a polygon crossing
    the border can fold back on itself along it (pyclipper's ring can also touch itself before any
    rounding); the official ICDAR 2015 script counts such outputs, shapely-based evaluators drop them. So
    every output is checked at once (`valid_packed`: no point equal to the next, shapely `is_valid`, area
    > 0); outputs that pass are exactly the original code's. In polygon mode a
    failing output first loses its repeated consecutive points (the region is unchanged), and is kept
    if that makes it valid; what still fails (and every failing box) is replaced by `repair_polygon`. An
    input is left out (its score too, in the callers) only when no valid polygon with positive area can
    be made of it, which does not happen for the representer's detections: their region in the image
    always has a positive area. Raises ValueError for points that are not (x, y) pairs.
    """
    if isinstance(polygons, np.ndarray):
        if polygons.ndim != 3 or polygons.shape[2] != 2:
            raise ValueError(f'polygons: expected an (N, K, 2) array of boxes, got shape {polygons.shape}')
        counts = [polygons.shape[1]] * len(polygons)
        points = polygons.reshape(-1, 2)
    else:
        counts = [len(polygon) for polygon in polygons]
        points = np.concatenate(polygons) if counts else np.zeros((0, 2))
    if not counts:
        return [], []
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f'polygons: expected (Ni, 2) arrays of x, y points, got {points.shape[1:]} per point')
    if quadrilaterals and any(count != 4 for count in counts):
        raise ValueError(f'polygons: expected 4 corners per box with quadrilaterals=True, got {sorted(set(counts))}')
    if not np.issubdtype(points.dtype, np.floating):
        points = points.astype(np.float64)
    (map_height, map_width), (dest_height, dest_width) = map_size, dest_size
    scaled = np.empty_like(points)
    scaled[:, 0] = points[:, 0] / map_width * dest_width
    scaled[:, 1] = points[:, 1] / map_height * dest_height
    rounded = np.empty_like(scaled)
    rounded[:, 0] = np.clip(np.round(scaled[:, 0]), 0, dest_width)
    rounded[:, 1] = np.clip(np.round(scaled[:, 1]), 0, dest_height)
    integer = rounded.astype(np.int32)
    outputs = split_rows(integer, counts)
    counts_array = np.asarray(counts)
    repeated = repeated_points(integer, counts_array)
    good = valid_packed(integer, counts_array, repeated)
    if good.all():
        return outputs, list(range(len(outputs)))
    failing = np.flatnonzero(~good)
    if not quadrilaterals:
        # drop the repeated points of all failing rings at once (a ring of one repeated point keeps one)
        starts = np.concatenate([[0], np.cumsum(counts_array)[:-1]])
        keep = ~repeated
        keep[starts[~np.logical_or.reduceat(keep, starts)]] = True
        keep &= np.repeat(~good, counts_array)
        distinct_counts = np.add.reduceat(keep, starts)[failing]
        distinct_points = integer[keep]
        fixed = valid_packed(distinct_points, distinct_counts)
        for index, polygon, ok in zip(failing.tolist(), split_rows(distinct_points, distinct_counts.tolist()),
                                      fixed.tolist()):
            if ok:
                outputs[index] = polygon
        failing = failing[~fixed]
    scaled_rows = split_rows(scaled, counts)
    for index in failing.tolist():
        outputs[index] = repair_polygon(outputs[index], scaled_rows[index], dest_height, dest_width, quadrilaterals)
    kept = [index for index, output in enumerate(outputs) if output is not None]
    return [outputs[index] for index in kept], kept


def valid_rings(rings: Sequence[np.ndarray]) -> np.ndarray:
    """Whether each (Ni, 2) ring is a valid polygon by shapely's (GEOS, OGC) rules with a positive area and no
    point equal to the next one (cyclically); fewer than 3 points is not. (N,) bool. See `valid_packed`."""
    if not len(rings):
        return np.zeros(0, dtype=bool)
    return valid_packed(np.concatenate(rings), np.array([len(ring) for ring in rings]))


def repeated_points(points: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(M,) bool: whether each point of the integer rings stored one after the other in ``points`` (M, 2),
    with sizes ``counts`` (N,), equals the next point of its ring (the last one: the first)."""
    points = np.ascontiguousarray(points, dtype=np.int32)
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    following = np.arange(1, len(points) + 1)
    following[starts + counts - 1] = starts
    as_one_number = points.view(np.int64).ravel()  # x and y together: one comparison per point
    return as_one_number == as_one_number[following]


def valid_packed(points: np.ndarray, counts: np.ndarray, repeated: Optional[np.ndarray] = None) -> np.ndarray:
    """`valid_rings` for integer rings stored one after the other in ``points`` (M, 2) with sizes ``counts``
    (N,); ``repeated``: their `repeated_points`, when already known.

    NumPy first, on all rings at once: a ring with a point equal to the next one fails; a quadrilateral
    that turns the same way at all 4 corners (cross products of consecutive edges all > 0 or all < 0) is
    convex, hence valid with positive area (4 such turns can only add up to one full turn). One
    vectorised shapely call (is_valid, area > 0) decides the other rings.
    """
    points = np.ascontiguousarray(points, dtype=np.int32)
    counts = np.asarray(counts, dtype=np.int64)
    if len(counts) == 0:
        return np.zeros(0, dtype=bool)
    if repeated is None:
        repeated = repeated_points(points, counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    good = (counts >= 3) & ~np.logical_or.reduceat(repeated, starts)
    undecided = good.copy()
    quads = counts == 4
    if quads.any():
        following = np.arange(1, len(points) + 1)
        following[starts + counts - 1] = starts
        edges = (points[following] - points).astype(np.float64)
        next_edges = edges[following]
        cross = edges[:, 0] * next_edges[:, 1] - edges[:, 1] * next_edges[:, 0]
        convex = np.logical_and.reduceat(cross > 0, starts) | np.logical_and.reduceat(cross < 0, starts)
        undecided &= ~(quads & convex)
    check = np.flatnonzero(undecided)
    if len(check):
        selected = points if len(check) == len(counts) else points[np.repeat(undecided, counts)]
        shapes = shapely.polygons(shapely.linearrings(selected.astype(np.float64),
                                                      indices=np.repeat(np.arange(len(check)), counts[check])))
        good[check] = shapely.is_valid(shapes) & (shapely.area(shapes) > 0)
    return good


SNAP_GROWTHS = (0.0, 0.25, 0.5)  # pixels the exact region grows by before snapping to the grid (repair)


def repair_polygon(rounded: np.ndarray, scaled: np.ndarray, dest_height: int, dest_width: int,
                   quadrilateral: bool = False) -> Optional[np.ndarray]:
    """A valid int32 polygon, clockwise on screen, without repeated points, with positive area, for one
    detection whose rounded and clipped points ``rounded`` (N, 2) do not make one; None when none exists.

    scaled: the same points before rounding and clipping, in image pixels. The target is the detection's
    exact region in the image, T = polygon(scaled) (its make_valid form when pyclipper's ring touches
    itself) intersected with [0, W] x [0, H]. Of the candidates below that are valid, the one with the
    highest IoU with T wins (the first on ties): IoU counts both the part of the detection that is lost
    and what is added around it, and it is what the IoU protocol thresholds.

    Box mode (`box_candidates`): a box fails only by collapsing (two corners on one point, or zero area;
    in 200 000 random rectangles rounded and clipped on a small grid, no box with positive area crossed
    itself), so the convex hull or the valid form of its points would have fewer than 4 corners. The
    candidates are the quadrilaterals whose corners are integer points around the exact corners (floor
    or ceil of each coordinate: 4^4 = 256 choices), kept when strictly convex, clockwise and in
    `order_corners` order, and the integer bounding box of T (floor / ceil of its bounds). For a box
    thinner than a pixel the winner can be a parallelogram slanted across the thin side: it overlaps T
    more than any axis-aligned integer box does.

    Polygon mode (`polygon_candidates`): the largest part of the valid form of the rounded polygon
    (shapely make_valid, without its repeated points), and T grown by 0, 1/4 and 1/2 pixel (mitre joins,
    clipped to the image again), each snapped to the integer grid (GEOS set_precision, which keeps it
    valid) and reduced to the exterior of its largest part (growing keeps a sub-pixel-thin curved band in
    one piece); the convex hull of the rounded points (best for a detection a few pixels across); the
    integer bounding box of T (which exists whenever T has an area).

    Cost: a few milliseconds per repaired output (2 to 5 ms on a 2-core CPU: the IoUs with T, 257 of them
    for a box), paid only by the outputs that fail the check.
    """
    target = shapely.Polygon(scaled.astype(np.float64))
    if not target.is_valid:
        target = shapely.make_valid(target)
    image = shapely.box(0, 0, dest_width, dest_height)
    target = shapely.intersection(target, image)
    if target.is_empty or target.area <= 0:
        return None
    xmin, ymin, xmax, ymax = target.bounds
    left, top, right, bottom = np.floor(xmin), np.floor(ymin), np.ceil(xmax), np.ceil(ymax)
    bounding_box = np.array([[left, top], [right, top], [right, bottom], [left, bottom]], dtype=np.int32)
    if quadrilateral:
        candidates = box_candidates(scaled, bounding_box, dest_height, dest_width)
        shapes = shapely.polygons(np.stack(candidates).astype(np.float64)) if candidates else []
    else:
        candidates = polygon_candidates(rounded, target, image, bounding_box)
        shapes = np.array([shapely.Polygon(candidate.astype(np.float64)) for candidate in candidates])
    if not len(candidates):
        return None
    intersection = shapely.area(shapely.intersection(shapes, target))
    iou = intersection / (shapely.area(shapes) + target.area - intersection)
    best = candidates[int(np.argmax(iou))]
    return best if shoelace(best) > 0 else best[::-1].copy()


def box_candidates(corners: np.ndarray, bounding_box: np.ndarray, dest_height: int, dest_width: int
                   ) -> List[np.ndarray]:
    """Integer (4, 2) boxes near the exact box ``corners`` (4, 2) (image pixels, `order_corners` order): each
    corner on one of the up to 4 integer points around it (floor or ceil of x and of y, clipped to the
    image), in the order of the 256 choices, then ``bounding_box``; only the strictly convex, clockwise
    ones (on screen) that `order_corners` leaves as they are."""
    corners = np.asarray(corners, dtype=np.float64)
    low = np.clip(np.floor(corners), 0, [dest_width, dest_height])
    high = np.clip(np.ceil(corners), 0, [dest_width, dest_height])
    choice = np.array(np.meshgrid(*[np.arange(4)] * 4, indexing='ij')).reshape(4, -1).T  # (256, 4)
    quads = np.stack([np.where(choice & 1, high[:, 0], low[:, 0]), np.where(choice & 2, high[:, 1], low[:, 1])],
                     axis=2).astype(np.int32)
    quads = np.concatenate([quads, bounding_box[None]])
    edges = (np.roll(quads, -1, axis=1) - quads).astype(np.int64)
    following = np.roll(edges, -1, axis=1)
    turns = edges[..., 0] * following[..., 1] - edges[..., 1] * following[..., 0]
    usable = np.all(turns > 0, axis=1) & np.all(order_corners(quads) == quads, axis=(1, 2))
    return list(quads[usable])


def polygon_candidates(rounded: np.ndarray, target: Any, image: Any, bounding_box: np.ndarray
                       ) -> List[np.ndarray]:
    """Valid integer polygons (Ni, 2) inside ``image`` (a shapely box) covering about the region ``target``
    (shapely, image pixels) of a detection whose rounded ring ``rounded`` is invalid: see `repair_polygon`
    for the list and its order."""
    distinct = drop_repeated_points(rounded).astype(np.float64)
    regions = [shapely.make_valid(shapely.Polygon(distinct))] if len(distinct) >= 3 else []
    regions += [shapely.intersection(shapely.buffer(target, growth, join_style='mitre'), image) if growth
                else target for growth in SNAP_GROWTHS]
    candidates = []
    for region in regions:
        parts = polygon_parts(region)
        snapped = polygon_parts(shapely.set_precision(shapely.MultiPolygon(parts), 1.0)) if parts else []
        if snapped:
            candidates.append(np.asarray(max(snapped, key=lambda part: part.area).exterior.coords)[:-1])
    hull = shapely.convex_hull(shapely.MultiPoint(distinct))
    if hull.geom_type == 'Polygon':
        candidates.append(np.asarray(hull.exterior.coords)[:-1])
    candidates.append(bounding_box)
    candidates = [drop_repeated_points(np.round(candidate).astype(np.int32)) for candidate in candidates]
    return [candidate for candidate, ok in zip(candidates, valid_rings(candidates).tolist()) if ok]


def drop_repeated_points(points: np.ndarray) -> np.ndarray:
    """The (N, 2) ring without the points equal to the next one (cyclically; one stays if all are equal)."""
    if len(points) == 0:
        return points
    keep = np.any(points != np.roll(points, -1, axis=0), axis=1)
    if not keep.any():
        return points[:1]
    return points[keep]


def shoelace(points: np.ndarray) -> float:
    """Twice the signed area of an (N, 2) ring: the sum of x_i * y_(i+1) - x_(i+1) * y_i, positive when the
    ring runs clockwise on screen (y pointing down), like pyclipper's outer rings and `order_corners`' boxes."""
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    return float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def polygon_parts(geometry: Any) -> List[Any]:
    """The polygons with positive area in a shapely geometry (collections and multi-parts flattened)."""
    parts = []
    for part in shapely.get_parts(geometry):
        if part.geom_type in ('MultiPolygon', 'GeometryCollection'):
            parts.extend(polygon_parts(part))
        elif part.geom_type == 'Polygon' and part.area > 0:
            parts.append(part)
    return parts
