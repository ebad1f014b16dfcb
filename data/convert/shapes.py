"""The annotation tools' shapes as polygons in image pixels: rectangles (rotated about their centre or a
corner), clipping to the image, the degenerate-polygon test, and the numbers as written."""
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..geometry import signed_area

Point = Tuple[float, float]

DECIMALS = 3  # coordinates are written to 1/1000 px; every test of a polygon sees the written values


def rectangle(x0: float, y0: float, x1: float, y1: float) -> List[Point]:
    """The axis-aligned rectangle with opposite corners (x0, y0) and (x1, y1) (any two, labelme's two-point
    ``rectangle``), clockwise on screen from the top-left corner."""
    left, right, top, bottom = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
    return [(left, top), (right, top), (right, bottom), (left, bottom)]


def rotated(points: Sequence[Point], degrees: float, pivot: Point) -> List[Point]:
    """``points`` turned by ``degrees`` clockwise on screen (image y pointing down) about ``pivot``: the
    rotation of CVAT's ``box`` (about its centre) and of Label Studio's rectangle (about its top-left corner)."""
    radians = math.radians(degrees)
    cos, sin = math.cos(radians), math.sin(radians)
    if degrees % 90 == 0:  # exact corners for the quarter turns
        cos, sin = float(round(cos)), float(round(sin))
    px, py = pivot
    return [(px + (x - px) * cos - (y - py) * sin, py + (x - px) * sin + (y - py) * cos) for x, y in points]


def finite(points: Sequence[Point]) -> bool:
    return all(math.isfinite(value) for point in points for value in point)


def clip_to_image(points: Sequence[Point], width: int, height: int) -> Tuple[List[Point], int]:
    """Every point moved onto the image (0..width, 0..height: the image's extent, a point on its right border
    has x = width), and how many points moved. A polygon wholly outside ends up on the border, with no area."""
    clipped: List[Point] = []
    moved = 0
    for x, y in points:
        inside = (min(max(x, 0.0), float(width)) + 0.0, min(max(y, 0.0), float(height)) + 0.0)
        moved += inside != (x, y)
        clipped.append(inside)
    return clipped, moved


def rounded(points: Sequence[Point]) -> List[Point]:
    """The points as written (:data:`DECIMALS`), ``-0`` written as ``0``."""
    return [(round(x, DECIMALS) + 0.0, round(y, DECIMALS) + 0.0) for x, y in points]


def format_number(value: float) -> str:
    """A coordinate as written: at most :data:`DECIMALS` decimals, no trailing zeros (``12``, ``12.5``)."""
    text = f'{value:.{DECIMALS}f}'.rstrip('0').rstrip('.')
    return '0' if text == '-0' else text


def degenerate_reason(points: Sequence[Point]) -> Optional[str]:
    """Why a polygon cannot be a word (None when it can): a non-finite number, fewer than 3 distinct points,
    or zero area (every point on one line)."""
    if not finite(points):
        return 'a non-finite coordinate'
    distinct = len(set(points))
    if distinct < 3:
        return f'fewer than 3 distinct points ({distinct})'
    if abs(signed_area(np.asarray(points, dtype=np.float64))) < 1e-6:
        return 'zero area'
    return None
