"""ResizeImage: resize the image to a fixed size (inference / export)."""
import math
from typing import Any, Dict, Sequence

import cv2
import numpy as np

from .data_process import DataProcess
from .pending_warp import materialize, transform_polygons


class ResizeImage(DataProcess):
    """``image_size`` is [height, width].

    ``mode='keep_ratio'``: height = image_size[0], width follows the aspect ratio rounded up to a
    multiple of 32 (the validation resize); ``mode='resize'``: exactly image_size.
    ``resize_polygons`` maps the polygons too (default: they stay in original coordinates, as in
    validation, and post-processing maps back with ``shape``).
    """

    def __init__(self, image_size: Sequence[int] = (736, 1280), mode: str = 'keep_ratio', resize_polygons: bool = False):
        if mode not in ('keep_ratio', 'resize'):
            raise ValueError(f"ResizeImage: expected mode 'keep_ratio' or 'resize', got {mode!r}")
        self.image_size, self.mode, self.resize_polygons = [int(v) for v in image_size], mode, resize_polygons

    def process(self, data: Dict[str, Any]) -> Dict[str, Any]:
        materialize(data)
        height, width = data['image'].shape[:2]
        data.setdefault('shape', [height, width])
        new_h, new_w = self.image_size
        if self.mode == 'keep_ratio':
            new_w = int(math.ceil(width * new_h / height / 32.0)) * 32
        data['image'] = cv2.resize(data['image'], (new_w, new_h))
        if self.resize_polygons:
            sx, sy = new_w / width, new_h / height
            transform_polygons(data, np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]]))
        return data
