"""Polygon offsetting and measures shared by the label makers."""
from typing import Optional

import numpy as np
import pyclipper

# Fixed-point scale for pyclipper (integer coordinates) and cv2.fillPoly (shift bits): 1/16 px.
SHIFT_BITS = 4
FIXED_SCALE = 1 << SHIFT_BITS
# Largest gap (px) between a round join and its polygonal approximation: the Clipper default at 1 px units.
ARC_TOLERANCE = 0.25


def area_and_perimeter(polygon: np.ndarray):
    """Signed shoelace area and perimeter of a closed polygon (N, 2)."""
    points = np.asarray(polygon, dtype=np.float64)
    following = np.concatenate((points[1:], points[:1]))
    area = 0.5 * float(np.dot(points[:, 0], following[:, 1]) - np.dot(following[:, 0], points[:, 1]))
    steps = following - points
    perimeter = float(np.sqrt(np.einsum('ij,ij->i', steps, steps)).sum())
    return area, perimeter


def shrink_distance(polygon: np.ndarray, shrink_ratio: float) -> float:
    """D = A (1 - r^2) / L, the offset of DBNet's shrunk / dilated text regions."""
    area, perimeter = area_and_perimeter(polygon)
    if perimeter <= 0:
        return 0.0
    return abs(area) * (1.0 - shrink_ratio ** 2) / perimeter


def offset_polygon(polygon: np.ndarray, delta: float) -> Optional[np.ndarray]:
    """Offset with round joins (negative = shrink); fixed-point int64 (N, 2) at FIXED_SCALE, None if empty."""
    fixed = np.round(np.asarray(polygon, dtype=np.float64) * FIXED_SCALE).astype(np.int64)
    offset = pyclipper.PyclipperOffset()
    offset.ArcTolerance = ARC_TOLERANCE * FIXED_SCALE
    offset.AddPath(fixed.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    result = offset.Execute(delta * FIXED_SCALE)
    if not result:
        return None
    largest = result[0] if len(result) == 1 else max(result, key=lambda path: abs(pyclipper.Area(path)))
    return np.asarray(largest, dtype=np.int64).reshape(-1, 2)
