"""The one way polygons are drawn (demo.py, the Python API, eval.py --visualize) and the heat map of demo.py."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import cv2
import numpy as np

GT_COLOUR = (0, 255, 0)            # green: cared ground truth
DONT_CARE_COLOUR = (160, 160, 160)  # grey: don't-care ground truth
DETECTION_COLOUR = (0, 0, 255)     # red: detections
SCORE_COLOUR = (0, 255, 255)       # yellow: scores


def line_width_for(image: np.ndarray) -> int:
    """About one pixel per 400 pixels of the short side, at least 1."""
    return max(1, round(min(image.shape[:2]) / 400))


def draw_polygons(canvas: np.ndarray, polygons: Sequence[Any], colour: Tuple[int, int, int], thickness: int,
                  scores: Optional[Sequence[float]] = None) -> np.ndarray:
    """Outline each (N, 2) polygon (x, y pixels, rounded) on ``canvas`` (H, W, 3) uint8 BGR, in place; with
    ``scores``, each score written small above its polygon's top-left point. Returns ``canvas``."""
    for index, polygon in enumerate(polygons):
        points = np.round(np.asarray(polygon, dtype=np.float64).reshape(-1, 1, 2)).astype(np.int32)
        if len(points) == 0:
            continue
        cv2.polylines(canvas, [points], True, colour, thickness)
        if scores is not None:
            x, y = int(points[:, 0, 0].min()), int(points[:, 0, 1].min())
            cv2.putText(canvas, f'{float(scores[index]):.2f}', (x, max(y - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        SCORE_COLOUR, 1, cv2.LINE_AA)
    return canvas


def draw_detections(image: np.ndarray, polygons: Sequence[Any], scores: Sequence[float]) -> np.ndarray:
    """A copy of ``image`` with the detections outlined in red and their scores written small."""
    return draw_polygons(image.copy(), polygons, DETECTION_COLOUR, line_width_for(image), scores)


def heatmap(probability: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The (h, w) probability map in JET colours, resized to the image, blended half and half with it."""
    height, width = image.shape[:2]
    grey = np.clip(np.round(probability * 255.0), 0, 255).astype(np.uint8)
    colours = cv2.applyColorMap(cv2.resize(grey, (width, height), interpolation=cv2.INTER_LINEAR), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 0.5, colours, 0.5, 0)
