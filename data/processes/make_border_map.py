"""MakeBorderMap: the threshold target around text borders (``thresh_map``, ``thresh_mask``)."""
import math
from typing import Any, Dict

import numpy as np

from ..geometry import fill_fixed_point, offset_fixed_point, shrink_distance
from .data_process import DataProcess
from .pending_warp import image_hw


def draw_distance(polygon: np.ndarray, distance: float, canvas: np.ndarray) -> None:
    """canvas = min(canvas, d / distance), d the distance from each pixel centre to the nearest edge
    (segment) of ``polygon``, over the pixels that can be closer than ``distance`` to some edge.

    Each edge is done over the bounding box of the segment widened by ``distance`` (which holds every
    pixel within ``distance`` of it), not over the whole dilated polygon box. In edge-aligned units of
    ``distance``, the position along the edge and the perpendicular offset are each one broadcast sum
    of a row term and a column term; the distance to the segment is hypot(offset, overshoot of the
    position past the segment's ends).
    """
    height, width = canvas.shape
    inverse = 1.0 / distance
    count = len(polygon)
    for index in range(count):
        ax, ay = float(polygon[index, 0]), float(polygon[index, 1])
        bx, by = float(polygon[(index + 1) % count, 0]), float(polygon[(index + 1) % count, 1])
        x0 = max(math.ceil(min(ax, bx) - distance), 0)
        x1 = min(math.floor(max(ax, bx) + distance), width - 1)
        y0 = max(math.ceil(min(ay, by) - distance), 0)
        y1 = min(math.floor(max(ay, by) + distance), height - 1)
        if x0 > x1 or y0 > y1:
            continue
        ex, ey = bx - ax, by - ay
        length = math.hypot(ex, ey)
        ux, uy = (ex / length, ey / length) if length > 1e-9 else (1.0, 0.0)
        xs = (np.arange(x0, x1 + 1, dtype=np.float32) - np.float32(ax)) * np.float32(inverse)
        ys = (np.arange(y0, y1 + 1, dtype=np.float32) - np.float32(ay)) * np.float32(inverse)
        along = ys[:, None] * np.float32(uy) + (xs * np.float32(ux))[None, :]
        across = ys[:, None] * np.float32(ux) - (xs * np.float32(uy))[None, :]
        inside = np.maximum(along, np.float32(0.0))
        np.minimum(inside, np.float32(length * inverse), out=inside)
        np.subtract(along, inside, out=along)  # overshoot past either end (0 within the segment)
        # sqrt(along^2 + across^2) with NumPy's rounding, the same wherever the arrays lie in memory (cv2.magnitude's
        # SIMD and scalar paths differ by an ulp with the buffers' alignment, which broke bit-exact resume)
        np.multiply(along, along, out=along)
        np.multiply(across, across, out=across)
        np.add(along, across, out=along)
        np.sqrt(along, out=along)
        region = canvas[y0:y1 + 1, x0:x1 + 1]
        np.minimum(region, along, out=region)


class MakeBorderMap(DataProcess):
    """Each cared-for polygon, dilated by D = A (1 - r^2) / L (round joins), is filled 1 in ``thresh_mask``
    (the dilated region G_d of the paper: a hole the dilation encloses, e.g. inside a C-shaped word whose gap
    is under 2 D, is farther than D from the text and stays 0; the original filled only pyclipper's first path);
    inside its dilated bounding box the canvas keeps max(canvas, 1 - clip(d / D, 0, 1)) with d the
    distance to the nearest polygon edge; ``thresh_map = canvas * (thresh_max - thresh_min) + thresh_min``.
    """

    def __init__(self, shrink_ratio: float = 0.4, thresh_min: float = 0.3, thresh_max: float = 0.7):
        self.shrink_ratio, self.thresh_min, self.thresh_max = shrink_ratio, thresh_min, thresh_max

    def draw_border_map(self, polygon: np.ndarray, canvas: np.ndarray, mask: np.ndarray) -> None:
        """Fill the dilated polygon in ``mask``; lower ``canvas`` (normalized distance, starts at 1)."""
        polygon = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        distance = shrink_distance(polygon, self.shrink_ratio)
        if len(polygon) < 3 or distance <= 0:
            return
        dilated = offset_fixed_point(polygon, distance)
        if not dilated:
            return
        fill_fixed_point(mask, dilated, 1.0)  # outer path and holes: a hole is farther than D from the text
        draw_distance(polygon, distance, canvas)

    def process(self, data: Dict[str, Any]) -> Dict[str, Any]:
        height, width = image_hw(data)
        canvas = np.ones((height, width), dtype=np.float32)  # normalized distance d / D, 1 = far
        mask = np.zeros((height, width), dtype=np.float32)
        ignore_tags = data['ignore_tags']
        for i, polygon in enumerate(data['polygons']):
            if not ignore_tags[i]:
                self.draw_border_map(polygon, canvas, mask)
        # closeness 1 - min(d / D, 1), kept as the maximum over polygons, scaled to [thresh_min, thresh_max]
        scale = np.float32(self.thresh_max - self.thresh_min)
        data['thresh_map'] = np.float32(self.thresh_max) - canvas * scale
        data['thresh_mask'] = mask
        return data
