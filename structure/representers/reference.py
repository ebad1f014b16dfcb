"""The baseline of the post-processing speed check: the original code base's per-contour code path, call for call.

`ReferenceRepresenter` walks the contours of one map the way MhLiao/DB's `SegDetectorRepresenter` does
(`boxes_from_bitmap`, `polygons_from_bitmap`, `get_mini_boxes`, `box_score_fast`, `unclip`): the same OpenCV,
NumPy, shapely and pyclipper calls, per contour, in the same order and on the same data types. Binarise,
`cv2.findContours` on the (bitmap * 255) uint8 image (RETR_LIST, CHAIN_APPROX_SIMPLE), the first
``max_candidates`` contours; box mode: `get_mini_boxes` (cv2.minAreaRect, cv2.boxPoints, a Python sort of the
float32 corners by x, then the top one of each side pair first), short side >= min_size, `box_score_fast` on the
float32 corners, score >= box_thresh, `unclip` (shapely area / length, pyclipper round-join offset, the paths
as an array), `get_mini_boxes` again, short side >= min_size + 2; polygon mode: cv2.approxPolyDP with epsilon =
0.002 x arc length, at least 4 points, `box_score_fast` on the int32 points, `unclip` with the polygon ratio, one
path, `get_mini_boxes` of the grown polygon for its short side >= min_size + 2. `SegDetectorRepresenter` must
give exactly its boxes, polygons and scores (tests/test_postprocess_representer.py,
tests/test_postprocess_reference.py) while being at least twice as fast (benchmarks/bench_postprocess.py).
`random_probability_map` makes the maps both use.

Where this project deliberately differs from the original in its output, the baseline follows the project, in
the cheapest way that keeps the original's code path:
- Final step: instead of the original's per-detection scaling, rounding and clipping (`np.round(x / w * W)`
  clipped to [0, W], per axis, in float32 for boxes and float64 for polygons, then int16 boxes / nested lists),
  all detections of the map go through `to_image_polygons`, the step shared with the fast version: the same
  arithmetic for all of them at once, plus the validity check and the repair of the rare output that rounding
  leaves invalid (docs/evaluation.md, "Valid outputs"). Vectorised, this is cheaper than the original's
  per-box NumPy calls even with the check, so the baseline stays no slower than the original.
- Box mode returns only the kept detections, not the original's array of ``max_candidates`` rows with zero
  boxes and zero scores where a contour was dropped; scores are the Python floats of cv2.mean, not stored
  in a float32 array as the original did in box mode.
- Polygon mode drops a candidate whose growth gives other than exactly one path, deciding on the path list
  before the single np.array call. The original made the array first and dropped ``len(array) > 1``: an
  array of paths of different lengths raises in NumPy >= 1.24, and no path at all (an empty array) failed in
  cv2.minAreaRect.
- A candidate is kept when ``score >= box_thresh``; the original dropped it when ``box_thresh > score``, which
  differs only for a NaN score (a NaN in the map under the candidate): the original kept such a detection.
- The original's ``points.shape[0] > 2`` test in polygon mode, always true after the at-least-4-points test,
  is left out.
- The options the original fixed in code (min_size 3, unclip ratios 1.5 and 2.0) are arguments, and
  ``score_mode='slow'`` scores the contour itself with the same `box_score_fast` (a later addition of
  DBNet's descendants; the original has the 'fast' mode only).
- The map arrives as a float32 NumPy array (the representer moves the batch to the CPU once) and is binarised
  with NumPy, not with torch on the whole batch followed by ``.cpu().numpy()`` per map.
"""
from __future__ import annotations

from typing import List, Tuple

import cv2
import numpy as np
import pyclipper
from shapely.geometry import Polygon

from data.geometry import to_image_polygons


class ReferenceRepresenter:
    """One probability map (H, W) float32 -> (boxes, scores), one contour at a time, as the original did."""

    def __init__(self, thresh: float = 0.3, box_thresh: float = 0.7, max_candidates: int = 100,
                 unclip_ratio: float = 1.5, polygon_unclip_ratio: float = 2.0, min_size: int = 3,
                 score_mode: str = 'fast'):
        self.thresh = thresh
        self.box_thresh = box_thresh
        self.max_candidates = max_candidates
        self.unclip_ratio = unclip_ratio
        self.polygon_unclip_ratio = polygon_unclip_ratio
        self.min_size = min_size
        self.score_mode = score_mode

    def represent_map(self, prob: np.ndarray, dest_height: int, dest_width: int,
                      is_output_polygon: bool = False) -> Tuple[list, List[float]]:
        """Boxes (a list of int32 (4, 2)) or polygons (a list of int32 (Ni, 2)) in the original image size
        (dest_height, dest_width), and their scores: `map_detections`, then the final step shared with the
        fast version (`to_image_polygons`: scaling, rounding, clipping, repair of invalid outputs)."""
        detections, map_scores = self.map_detections(prob, is_output_polygon)
        outputs, kept = to_image_polygons(detections, prob.shape, (dest_height, dest_width),
                                          quadrilaterals=not is_output_polygon)
        return outputs, [map_scores[index] for index in kept]

    def map_detections(self, prob: np.ndarray, is_output_polygon: bool = False
                       ) -> Tuple[List[np.ndarray], List[float]]:
        """The detections in map coordinates, before scaling and rounding: float32 (4, 2) boxes (top-left
        first, clockwise on screen) or integer (Ni, 2) grown polygons (pyclipper's), and their scores."""
        bitmap = prob > self.thresh
        if is_output_polygon:
            return self.polygons_from_bitmap(prob, bitmap)
        return self.boxes_from_bitmap(prob, bitmap)

    def boxes_from_bitmap(self, prob: np.ndarray, bitmap: np.ndarray) -> Tuple[List[np.ndarray], List[float]]:
        """Box mode on the binarised map ``bitmap`` (bool, (H, W)) of ``prob``."""
        contours, _ = cv2.findContours((bitmap * 255).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        boxes, scores = [], []
        for index in range(min(len(contours), self.max_candidates)):
            contour = contours[index]
            box_corners, short_side = get_mini_boxes(contour)
            if short_side < self.min_size:
                continue
            corners = np.array(box_corners)
            scored = corners.reshape(-1, 2) if self.score_mode == 'fast' else contour.reshape(-1, 2)
            score = box_score_fast(prob, scored)
            if not score >= self.box_thresh:
                continue
            grown = np.array(unclip(corners, self.unclip_ratio)).reshape(-1, 1, 2)
            box, short_side = get_mini_boxes(grown)
            if short_side < self.min_size + 2:
                continue
            boxes.append(np.array(box))
            scores.append(score)
        return boxes, scores

    def polygons_from_bitmap(self, prob: np.ndarray, bitmap: np.ndarray
                             ) -> Tuple[List[np.ndarray], List[float]]:
        """Polygon mode on the binarised map ``bitmap`` (bool, (H, W)) of ``prob``."""
        contours, _ = cv2.findContours((bitmap * 255).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        polygons, scores = [], []
        for contour in contours[:self.max_candidates]:
            epsilon = 0.002 * cv2.arcLength(contour, True)
            points = cv2.approxPolyDP(contour, epsilon, True).reshape((-1, 2))
            if points.shape[0] < 4:
                continue
            scored = points.reshape(-1, 2) if self.score_mode == 'fast' else contour.reshape(-1, 2)
            score = box_score_fast(prob, scored)
            if not score >= self.box_thresh:
                continue
            paths = unclip(points, self.polygon_unclip_ratio)
            if len(paths) != 1:  # split in two, grown into a ring (outline and hole), or erased
                continue
            polygon = np.array(paths).reshape(-1, 2)
            _, short_side = get_mini_boxes(polygon.reshape((-1, 1, 2)))
            if short_side < self.min_size + 2:
                continue
            polygons.append(polygon)
            scores.append(score)
        return polygons, scores


def get_mini_boxes(contour: np.ndarray) -> Tuple[list, float]:
    """The minimum-area rectangle of ``contour`` as its 4 float32 corners (top-left, top-right, bottom-right,
    bottom-left) and its short side.

    The corners of cv2.boxPoints are sorted by x (Python's stable sort). Of the two leftmost, the first is
    top-left when the second's y is strictly larger, else the second is (so on equal y the second of the
    pair is top-left); the two rightmost give top-right and bottom-right by the same rule.
    """
    rect = cv2.minAreaRect(contour)
    by_x = sorted(list(cv2.boxPoints(rect)), key=lambda point: point[0])
    top_left, bottom_left = (by_x[0], by_x[1]) if by_x[1][1] > by_x[0][1] else (by_x[1], by_x[0])
    top_right, bottom_right = (by_x[2], by_x[3]) if by_x[3][1] > by_x[2][1] else (by_x[3], by_x[2])
    return [top_left, top_right, bottom_right, bottom_left], min(rect[1])


def box_score_fast(prob: np.ndarray, points: np.ndarray) -> float:
    """Mean of ``prob`` inside the polygon ``points`` (N, 2), as cv2.fillPoly rasterises it in the window of
    its bounding box (floor of the minima, ceil of the maxima, each clipped to the map); the points are
    shifted into the window in their own dtype and then truncated to int32."""
    height, width = prob.shape[:2]
    shifted = points.copy()
    xmin = np.clip(np.floor(shifted[:, 0].min()).astype(int), 0, width - 1)
    xmax = np.clip(np.ceil(shifted[:, 0].max()).astype(int), 0, width - 1)
    ymin = np.clip(np.floor(shifted[:, 1].min()).astype(int), 0, height - 1)
    ymax = np.clip(np.ceil(shifted[:, 1].max()).astype(int), 0, height - 1)
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    shifted[:, 0] = shifted[:, 0] - xmin
    shifted[:, 1] = shifted[:, 1] - ymin
    # OpenCV's stubs want a sequence of contours; OpenCV reads a (1, N, 2) int32 array as one contour
    cv2.fillPoly(mask, shifted.reshape(1, -1, 2).astype(np.int32), 1)  # type: ignore[call-overload]
    return cv2.mean(prob[ymin:ymax + 1, xmin:xmax + 1], mask)[0]


def unclip(points: np.ndarray, ratio: float) -> list:
    """``points`` grown by D = area * ratio / perimeter (shapely) with pyclipper's round joins: pyclipper's
    list of paths (lists of [x, y] ints); one for a convex input, none, one or several for a polygon."""
    polygon = Polygon(points)
    distance = polygon.area * ratio / polygon.length
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(points, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return offset.Execute(distance)


def random_probability_map(height: int = 736, width: int = 1280, num_regions: int = 60,
                           seed: int = 0, noise_blobs: int = 20) -> np.ndarray:
    """A float32 map in [0, 1] like a trained network's: ``num_regions`` text-like regions, one per cell of a
    jittered grid so that few merge (rotated bars, and every seventh a curved band), with soft edges and
    varying confidence (about one in five below the default box_thresh), plus small noise blobs; the
    pixel noise is blurred with the regions, so that contours are as smooth as a network's."""
    rng = np.random.default_rng(seed)
    canvas: np.ndarray = np.zeros((height, width), dtype=np.float32)
    columns = max(1, int(round(np.sqrt(num_regions * width / height))))
    rows = int(np.ceil(num_regions / columns))
    cell_width, cell_height = width / columns, height / rows
    for index in range(num_regions):
        row, column = divmod(index, columns)
        center = ((column + rng.uniform(0.35, 0.65)) * cell_width, (row + rng.uniform(0.35, 0.65)) * cell_height)
        level = float(rng.uniform(0.75, 0.98) if rng.uniform() < 0.8 else rng.uniform(0.4, 0.65))
        if index % 7 == 6:  # a curved band
            axes = (int(cell_width * rng.uniform(0.25, 0.4)), int(cell_height * rng.uniform(0.2, 0.35)))
            thickness = int(rng.uniform(5, max(6, cell_height * 0.2)))
            cv2.ellipse(canvas, (int(center[0]), int(center[1])), axes, float(rng.uniform(-20, 20)),
                        float(rng.uniform(160, 200)), float(rng.uniform(320, 380)), level, thickness)
            continue
        size = (float(cell_width * rng.uniform(0.3, 0.8)), float(rng.uniform(4, max(5, cell_height * 0.4))))
        angle = float(rng.choice([0.0, 0.0, rng.uniform(-20, 20), rng.uniform(-90, 90)]))
        if abs(angle) > 20:
            size = (min(size[0], cell_height * 0.8), size[1])
        corners = cv2.boxPoints((center, size, angle))
        cv2.fillPoly(canvas, [np.round(corners).astype(np.int32)], level)
    for _ in range(noise_blobs):
        center = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        cv2.circle(canvas, center, int(rng.uniform(1, 4)), float(rng.uniform(0.3, 0.9)), -1)
    canvas += rng.normal(0.0, 0.03, canvas.shape).astype(np.float32)
    canvas = cv2.GaussianBlur(canvas, (7, 7), 2.0)
    return np.clip(canvas, 0.0, 1.0).astype(np.float32)
