"""Polygon offsetting and measures shared by the label makers."""
from typing import List, Tuple

import cv2
import numpy as np
import pyclipper

# Fixed-point scale for pyclipper (integer coordinates) and cv2.fillPoly (shift bits): 1/16 px.
SHIFT_BITS = 4
FIXED_SCALE = 1 << SHIFT_BITS
# Largest gap (px) between a round join and its polygonal approximation: the Clipper default at 1 px units.
ARC_TOLERANCE = 0.25


def area_and_perimeter(polygon: np.ndarray) -> Tuple[float, float]:
    """Signed shoelace area (px^2, positive for clockwise in image coordinates) and perimeter (px) of a
    closed polygon (N, 2)."""
    points = np.asarray(polygon, dtype=np.float64)
    following = np.concatenate((points[1:], points[:1]))
    area = 0.5 * float(np.dot(points[:, 0], following[:, 1]) - np.dot(following[:, 0], points[:, 1]))
    steps = following - points
    perimeter = float(np.sqrt(np.einsum('ij,ij->i', steps, steps)).sum())
    return area, perimeter


def shrink_distance(polygon: np.ndarray, shrink_ratio: float) -> float:
    """D = A (1 - r^2) / L (px): the offset of DBNet's shrunk / dilated text regions (paper, "Label
    generation"), with A the polygon's area, L its perimeter and r the shrink ratio; 0 for a zero perimeter."""
    area, perimeter = area_and_perimeter(polygon)
    if perimeter <= 0:
        return 0.0
    return abs(area) * (1.0 - shrink_ratio ** 2) / perimeter


def offset_paths(polygon: np.ndarray, delta: float) -> List[np.ndarray]:
    """Offset a closed polygon (N, 2), px, by ``delta`` px with round joins (negative = shrink).

    Returns every path pyclipper gives, each int64 (M, 2) in fixed point at FIXED_SCALE (draw with
    ``cv2.fillPoly(..., shift=SHIFT_BITS)``); an empty list when nothing is left. A shrink can split a
    polygon into several pieces (letters joined by necks thinner than 2 |delta|); a dilation of a
    polygon is one piece but can enclose holes (paths of opposite orientation). Fill all the paths
    in one ``cv2.fillPoly`` call so that holes stay empty. The original (MhLiao/DB) kept only the
    first path.
    """
    fixed = np.round(np.asarray(polygon, dtype=np.float64) * FIXED_SCALE).astype(np.int64)
    offset = pyclipper.PyclipperOffset()
    offset.ArcTolerance = ARC_TOLERANCE * FIXED_SCALE
    offset.AddPath(fixed.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return [np.asarray(path, dtype=np.int64).reshape(-1, 2) for path in offset.Execute(delta * FIXED_SCALE)]


def fill_paths(canvas: np.ndarray, paths: List[np.ndarray], value: float) -> None:
    """Fill fixed-point paths from :func:`offset_paths` (holes, i.e. paths inside another, stay unfilled)."""
    if paths:
        cv2.fillPoly(canvas, [path.astype(np.int32).reshape(-1, 1, 2) for path in paths], value, shift=SHIFT_BITS)
