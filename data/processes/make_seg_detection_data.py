"""MakeSegDetectionData: the probability target ``gt`` (shrunk text regions) and its ``mask``."""
from typing import Any, Dict

import cv2
import numpy as np

from ..geometry import area_and_perimeter, fill_fixed_point, offset_fixed_point, shrink_distance
from .data_process import DataProcess
from .pending_warp import image_hw


def fill_mask(canvas: np.ndarray, polygon: np.ndarray, value: float) -> None:
    cv2.fillPoly(canvas, [np.round(polygon).astype(np.int32).reshape(-1, 1, 2)], value)


class MakeSegDetectionData(DataProcess):
    """``gt`` (1, H, W): each cared-for polygon shrunk by D = A (1 - r^2) / L (round joins) filled 1, every
    piece of the shrink (the original, MhLiao/DB, kept only pyclipper's first piece);
    ``mask`` (H, W): 0 over don't-care polygons, polygons with a box side under ``min_text_size``
    and polygons whose shrink is empty (these become don't care), 1 elsewhere.

    In training, polygons are first clipped to the image, those with |area| < 1 become don't care,
    and all are oriented consistently (positive shoelace area).
    """

    def __init__(self, min_text_size: int = 8, shrink_ratio: float = 0.4):
        self.min_text_size, self.shrink_ratio = min_text_size, shrink_ratio

    def validate_polygons(self, data: Dict[str, Any], height: int, width: int) -> None:
        polygons, ignore_tags = [], np.asarray(data['ignore_tags'], dtype=bool).copy()
        for i, polygon in enumerate(data['polygons']):
            polygon = np.asarray(polygon, dtype=np.float32).copy()
            np.clip(polygon[:, 0], 0, width - 1, out=polygon[:, 0])
            np.clip(polygon[:, 1], 0, height - 1, out=polygon[:, 1])
            area, _ = area_and_perimeter(polygon)
            if abs(area) < 1:
                ignore_tags[i] = True
            if area < 0:
                polygon = polygon[::-1].copy()
            polygons.append(polygon)
        data['polygons'], data['ignore_tags'] = polygons, ignore_tags

    def process(self, data: Dict[str, Any]) -> Dict[str, Any]:
        height, width = image_hw(data)
        if data.get('is_training', False):
            self.validate_polygons(data, height, width)
        ignore_tags = np.asarray(data['ignore_tags'], dtype=bool).copy()
        gt = np.zeros((1, height, width), dtype=np.float32)
        mask = np.ones((height, width), dtype=np.float32)
        for i, polygon in enumerate(data['polygons']):
            polygon = np.asarray(polygon, dtype=np.float64)
            box_h = polygon[:, 1].max() - polygon[:, 1].min()
            box_w = polygon[:, 0].max() - polygon[:, 0].min()
            if ignore_tags[i] or min(box_h, box_w) < self.min_text_size:
                fill_mask(mask, polygon, 0)
                ignore_tags[i] = True
                continue
            pieces = offset_fixed_point(polygon, -shrink_distance(polygon, self.shrink_ratio))
            if not pieces:
                fill_mask(mask, polygon, 0)
                ignore_tags[i] = True
                continue
            # Every piece: a word whose letters join through necks thinner than 2 D shrinks to several
            # pieces, and leaving any out would train text as background (mask 1, gt 0).
            fill_fixed_point(gt[0], pieces, 1)
        data.update(gt=gt, mask=mask)
        if data.get('is_training', False):
            data['ignore_tags'] = ignore_tags
        # In evaluation the ground truth stays as annotated: small or unshrinkable regions are left out of
        # the training targets above, but the protocol scores every annotated region.
        return data
