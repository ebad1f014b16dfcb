"""The straightforward per-contour post-processing, kept as the reference for the fast representer.

`ReferenceRepresenter` walks the contours one by one, the way the original code base did, with one
NumPy allocation per step. `SegDetectorRepresenter` must give exactly its boxes and scores (checked by
tests/test_postprocess_representer.py on random maps) while being at least twice as fast
(benchmarks/bench_postprocess.py). The last step, from map coordinates to valid integer polygons in the
original image (`to_image_polygons`: scaling, rounding, clipping, repair of the outputs this leaves
invalid), is the same function in both. `random_probability_map` makes the maps both use.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import cv2
import numpy as np
import pyclipper
from shapely.geometry import Polygon

from .seg_detector_representer import to_image_polygons


class ReferenceRepresenter:
    """One probability map (H, W) float32 -> (boxes, scores), one contour at a time."""

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
        fast version (`to_image_polygons`: scaling, rounding, clipping, repair of invalid outputs), on all
        detections at once so that the speed comparison is about the rest."""
        detections, map_scores = self.map_detections(prob, is_output_polygon)
        outputs, kept = to_image_polygons(detections, prob.shape, (dest_height, dest_width),
                                          quadrilaterals=not is_output_polygon)
        return outputs, [map_scores[index] for index in kept]

    def map_detections(self, prob: np.ndarray, is_output_polygon: bool = False
                       ) -> Tuple[List[np.ndarray], List[float]]:
        """The detections in map coordinates, before scaling and rounding: float32 (4, 2) boxes (top-left
        first, clockwise) or integer (Ni, 2) grown polygons (pyclipper's), and their scores."""
        bitmap = (prob > self.thresh).astype(np.uint8) * 255
        contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        if is_output_polygon:
            return self._polygons(prob, contours)
        return self._boxes(prob, contours)

    def _boxes(self, prob, contours):
        boxes, scores = [], []
        for contour in contours[:self.max_candidates]:
            points, short_side = mini_box(contour)
            if short_side < self.min_size:
                continue
            points = np.array(points)
            if self.score_mode == 'fast':
                score = score_fast(prob, points.reshape(-1, 2))
            else:
                score = score_fast(prob, contour.reshape(-1, 2))
            if score < self.box_thresh:
                continue
            expanded = np.concatenate(unclip(points, self.unclip_ratio)).reshape(-1, 1, 2)
            box, short_side = mini_box(expanded)
            if short_side < self.min_size + 2:
                continue
            boxes.append(np.array(box))
            scores.append(float(score))
        return boxes, scores

    def _polygons(self, prob, contours):
        polygons, scores = [], []
        for contour in contours[:self.max_candidates]:
            epsilon = 0.002 * cv2.arcLength(contour, True)
            approx = cv2.approxPolyDP(contour, epsilon, True)
            points = approx.reshape(-1, 2)
            if points.shape[0] < 4:
                continue
            if self.score_mode == 'fast':
                score = score_fast(prob, points)
            else:
                score = score_fast(prob, contour.reshape(-1, 2))
            if score < self.box_thresh:
                continue
            expanded = unclip(points, self.polygon_unclip_ratio)
            if len(expanded) != 1:  # split in two, grown into a ring (outline and hole), or erased
                continue
            polygon = expanded[0]
            _, short_side = mini_box(polygon.reshape(-1, 1, 2))
            if short_side < self.min_size + 2:
                continue
            polygons.append(polygon)
            scores.append(float(score))
        return polygons, scores


def mini_box(contour: np.ndarray) -> Tuple[list, float]:
    """Minimum-area rectangle as 4 points (top-left, top-right, bottom-right, bottom-left), short side."""
    rect = cv2.minAreaRect(contour)
    points = sorted(list(cv2.boxPoints(rect)), key=lambda point: point[0])
    if points[1][1] > points[0][1]:
        top_left, bottom_left = points[0], points[1]
    else:
        top_left, bottom_left = points[1], points[0]
    if points[3][1] > points[2][1]:
        top_right, bottom_right = points[2], points[3]
    else:
        top_right, bottom_right = points[3], points[2]
    return [top_left, top_right, bottom_right, bottom_left], min(rect[1])


def score_fast(prob: np.ndarray, polygon: np.ndarray) -> float:
    """Mean probability inside ``polygon`` (rasterised by cv2.fillPoly within its bounding box)."""
    height, width = prob.shape
    polygon = polygon.copy()
    xmin = np.clip(np.floor(polygon[:, 0].min()).astype(np.int32), 0, width - 1)
    xmax = np.clip(np.ceil(polygon[:, 0].max()).astype(np.int32), 0, width - 1)
    ymin = np.clip(np.floor(polygon[:, 1].min()).astype(np.int32), 0, height - 1)
    ymax = np.clip(np.ceil(polygon[:, 1].max()).astype(np.int32), 0, height - 1)
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    polygon[:, 0] = polygon[:, 0] - xmin
    polygon[:, 1] = polygon[:, 1] - ymin
    cv2.fillPoly(mask, polygon.reshape(1, -1, 2).astype(np.int32), 1)
    return cv2.mean(prob[ymin:ymax + 1, xmin:xmax + 1], mask)[0]


def unclip(points: np.ndarray, ratio: float) -> List[np.ndarray]:
    """Grow a polygon by D = area * ratio / perimeter (round joins): the resulting paths, each an integer
    (Ni, 2) array (several when growing closes a ring around a hole, of different lengths)."""
    polygon = Polygon(points)
    distance = polygon.area * ratio / polygon.length
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(points, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return [np.array(path) for path in offset.Execute(distance)]


def random_probability_map(height: int = 736, width: int = 1280, num_regions: int = 60,
                           seed: int = 0, noise_blobs: int = 20) -> np.ndarray:
    """A float32 map in [0, 1] like a trained network's: ``num_regions`` text-like regions, one per cell of a
    jittered grid so that few merge (rotated bars, and every seventh a curved band), with soft edges and
    varying confidence (about one in five below the default box_thresh), plus small noise blobs; the
    pixel noise is blurred with the regions, so that contours are as smooth as a network's."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros((height, width), dtype=np.float32)
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


def reference_represent(probs: Sequence[np.ndarray], shapes: Sequence[Tuple[int, int]],
                        is_output_polygon: bool = False, **options) -> Tuple[list, list]:
    """Batch form of `ReferenceRepresenter`: per image lists of boxes and scores."""
    representer = ReferenceRepresenter(**options)
    boxes_batch, scores_batch = [], []
    for prob, (dest_height, dest_width) in zip(probs, shapes):
        boxes, scores = representer.represent_map(prob, int(dest_height), int(dest_width), is_output_polygon)
        boxes_batch.append(boxes)
        scores_batch.append(scores)
    return boxes_batch, scores_batch
