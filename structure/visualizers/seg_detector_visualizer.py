"""Images for looking at a validation batch: ground truth and detections on the original image, and the
network's maps."""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Sequence, Tuple

import cv2
import numpy as np
import torch

from data.normalization import denormalize
from data.image_io import DataError, read_image

from .drawing import DETECTION_COLOUR, DONT_CARE_COLOUR, GT_COLOUR, draw_polygons


class SegDetectorVisualizer:
    """``visualize(batch, output, pred)`` -> ``{name: BGR uint8 image}``: per image ``<stem>_output`` (ground
    truth green, don't care grey, detections red, on the original image read from ``batch['filename']``,
    or the de-normalised network input resized to ``batch['shape']`` when the file cannot be read) and one
    ``<stem>_<map>`` per probability map in ``pred`` (grey levels, 255 = 1)."""

    def __init__(self, line_width: int = 2):
        self.line_width = line_width

    def visualize(self, batch: Mapping[str, Any], output: Tuple[Sequence, Sequence], pred: Any
                  ) -> Dict[str, np.ndarray]:
        boxes_batch, _ = output
        images: Dict[str, np.ndarray] = {}
        maps = pred if isinstance(pred, Mapping) else {'pred': pred}
        for index in range(len(boxes_batch)):
            name = self._name(batch, index)
            canvas = self.original_image(batch, index).copy()
            polygons = batch.get('polygons', [[]] * len(boxes_batch))[index]
            ignore_tags = batch.get('ignore_tags', [[False] * len(polygons)] * len(boxes_batch))[index]
            for polygon, ignore in zip(polygons, ignore_tags):
                colour = DONT_CARE_COLOUR if bool(ignore) else GT_COLOUR
                self._draw(canvas, polygon, colour)
            for box in boxes_batch[index]:
                self._draw(canvas, box, DETECTION_COLOUR)
            images[f'{name}_output'] = canvas
            for key, value in maps.items():
                images[f'{name}_{key}'] = render_map(value, index)
        return images

    def original_image(self, batch: Mapping[str, Any], index: int) -> np.ndarray:
        filenames = batch.get('filename')
        if filenames is not None:
            # stored pixels (EXIF orientation ignored): the ones the ground truth and the detections are on
            try:
                return read_image(str(filenames[index]), orientation='stored')
            except DataError:
                pass
        if 'image' not in batch:
            raise KeyError("batch: expected 'filename' (readable) or 'image' to draw on, got keys "
                           f'{sorted(batch)}')
        tensor = batch['image'][index]
        if tuple(tensor.shape)[:1] != (3,) or len(tensor.shape) != 3:
            raise ValueError(f"batch['image'][{index}]: expected (3, H, W), got {tuple(tensor.shape)}")
        image = denormalize(tensor)
        if 'shape' in batch:
            height, width = (int(value) for value in np.asarray(batch['shape'][index]).reshape(-1)[:2])
            image = cv2.resize(image, (width, height))
        return np.ascontiguousarray(image)

    def _draw(self, canvas: np.ndarray, polygon: Any, colour: Tuple[int, int, int]) -> None:
        draw_polygons(canvas, [polygon], colour, self.line_width)

    @staticmethod
    def _name(batch: Mapping[str, Any], index: int) -> str:
        filenames = batch.get('filename')
        if filenames is None:
            return f'image_{index}'
        return os.path.splitext(os.path.basename(str(filenames[index])))[0]


def render_map(value: Any, index: int) -> np.ndarray:
    """Map ``index`` of a (B, 1, H, W) or (B, H, W) tensor / array in [0, 1] as a BGR uint8 image."""
    array = value[index].detach().cpu().float().numpy() if isinstance(value, torch.Tensor) else np.asarray(value[index])
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f'pred map: expected (B, 1, H, W) or (B, H, W), got a map of shape {array.shape}')
    grey = np.clip(array * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
