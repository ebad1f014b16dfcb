"""RandomCropData: EAST-style random crop that never cuts a cared-for text region."""
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..rng import get_rng
from .data_process import DataProcess
from .pending_warp import image_hw, keep_polygons, push_affine, sample_polygons, transform_polygons


def _free_runs(free: np.ndarray) -> List[np.ndarray]:
    """Maximal runs of consecutive indices in the sorted index array ``free``."""
    breaks = np.nonzero(np.diff(free) != 1)[0] + 1
    return np.split(free, breaks)


def _outside(poly: np.ndarray, x: float, y: float, w: float, h: float) -> bool:
    """True when the polygon lies entirely outside the rectangle (x, y, w, h)."""
    return (poly[:, 0].max() < x or poly[:, 0].min() > x + w or
            poly[:, 1].max() < y or poly[:, 1].min() > y + h)


class RandomCropData(DataProcess):
    """Pick a crop whose borders only cross rows/columns free of cared-for text, scale it to fit
    ``size`` (width, height), zero-pad bottom/right, drop polygons outside the result.

    The crop is composed into the sample's pending warp (no pixels are resampled here).
    """

    def __init__(self, size: Sequence[int] = (640, 640), max_tries: int = 50, min_crop_side_ratio: float = 0.1,
                 require_original_image: bool = False):
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f'RandomCropData: expected size [width, height] > 0, got {size!r}')
        self.size = (int(size[0]), int(size[1]))
        self.max_tries, self.min_crop_side_ratio = int(max_tries), float(min_crop_side_ratio)
        self.require_original_image = require_original_image

    def _select(self, rng, runs: List[np.ndarray], free: np.ndarray, limit: int) -> Tuple[int, int]:
        if len(runs) > 1:
            first, second = sorted(rng.choice(len(runs), size=2, replace=False))
            low, high = int(rng.choice(runs[first])), int(rng.choice(runs[second]))
        else:
            low, high = sorted(int(v) for v in rng.choice(free, size=2))
        return min(max(low, 0), limit - 1), min(max(high, 0), limit - 1)

    def crop_area(self, height: int, width: int, care_polys: List[np.ndarray]) -> Tuple[int, int, int, int]:
        """(x, y, w, h) of the crop in current image coordinates."""
        rows = np.zeros(height, dtype=bool)
        cols = np.zeros(width, dtype=bool)
        for poly in care_polys:
            xmin, ymin = np.floor(poly.min(axis=0)).astype(int)
            xmax, ymax = np.ceil(poly.max(axis=0)).astype(int)
            cols[max(xmin, 0):max(min(xmax + 1, width), 0)] = True
            rows[max(ymin, 0):max(min(ymax + 1, height), 0)] = True
        free_rows, free_cols = np.nonzero(~rows)[0], np.nonzero(~cols)[0]
        if len(free_rows) == 0 or len(free_cols) == 0:
            return 0, 0, width, height
        row_runs, col_runs = _free_runs(free_rows), _free_runs(free_cols)
        rng = get_rng()
        for _ in range(self.max_tries):
            xmin, xmax = self._select(rng, col_runs, free_cols, width)
            ymin, ymax = self._select(rng, row_runs, free_rows, height)
            if xmax - xmin < self.min_crop_side_ratio * width or ymax - ymin < self.min_crop_side_ratio * height:
                continue
            if any(not _outside(p, xmin, ymin, xmax - xmin, ymax - ymin) for p in care_polys):
                return xmin, ymin, xmax - xmin, ymax - ymin
        return 0, 0, width, height

    def process(self, data: Dict[str, Any]) -> Dict[str, Any]:
        height, width = image_hw(data)
        data.setdefault('shape', [height, width])
        polys, ignores = sample_polygons(data)
        care = [p for p, ignore in zip(polys, ignores) if not ignore]
        x, y, w, h = self.crop_area(height, width, care)
        scale = min(self.size[0] / w, self.size[1] / h)
        valid = (max(1, min(self.size[0], int(round(w * scale)))), max(1, min(self.size[1], int(round(h * scale)))))
        # pixel-centre convention: x' = (x - x0 + 0.5) * s - 0.5
        matrix = np.array([[scale, 0, (0.5 - x) * scale - 0.5], [0, scale, (0.5 - y) * scale - 0.5], [0, 0, 1]])
        push_affine(data, matrix, self.size, valid)
        transform_polygons(data, matrix)
        polys, _ = sample_polygons(data)
        keep_polygons(data, [i for i, p in enumerate(polys) if not _outside(p, 0, 0, valid[0], valid[1])])
        return data
