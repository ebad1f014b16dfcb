"""Deferred affine warps, so that augmentation and cropping cost one image warp.

``AugmentDetectionData`` (training mode) and ``RandomCropData`` do not resample pixels. They compose
their geometric maps into ``data['pending_warp']``::

    {'matrix': (3, 3) float64, source pixel coordinates -> output pixel coordinates (pixel centres
               at integers, the OpenCV convention),
     'size': (width, height) of the output canvas,
     'valid': (width, height) of the top-left region holding pixels; the rest is zero padding}

while ``data['image']`` keeps the source pixels and the polygons are already in output coordinates.
A process that needs the size calls :func:`image_hw`; one that needs pixels calls
:func:`materialize`, which warps once and removes the key. ``ImageDataset`` materializes whatever
is still pending after the last process, so consumers of a sample never see this key.
"""
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

KEY = 'pending_warp'


def image_hw(data: Dict[str, Any]) -> Tuple[int, int]:
    """(height, width) of ``data['image']`` once pending warps are applied."""
    pending = data.get(KEY)
    if pending is None:
        return tuple(data['image'].shape[:2])
    width, height = pending['size']
    return height, width


def push_affine(data: Dict[str, Any], matrix: np.ndarray, size: Tuple[int, int],
                valid: Optional[Tuple[int, int]] = None) -> None:
    """Compose ``matrix`` (3x3, current output coordinates -> new ones) after the pending warp."""
    pending = data.get(KEY)
    if pending is None:
        height, width = data['image'].shape[:2]
        pending = {'matrix': np.eye(3), 'size': (width, height), 'valid': (width, height)}
    size = (int(size[0]), int(size[1]))
    data[KEY] = {'matrix': np.asarray(matrix, dtype=np.float64) @ pending['matrix'], 'size': size,
                 'valid': size if valid is None else (int(valid[0]), int(valid[1]))}


def warp_image(image: np.ndarray, matrix: np.ndarray, size: Tuple[int, int], valid: Tuple[int, int]) -> np.ndarray:
    width, height = size
    valid_w, valid_h = min(valid[0], width), min(valid[1], height)
    if np.allclose(matrix, np.eye(3)) and image.shape[1] == valid_w and image.shape[0] == valid_h:
        warped = image
    else:
        warped = cv2.warpAffine(image, matrix[:2], (max(valid_w, 1), max(valid_h, 1)), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if (valid_w, valid_h) == (width, height):
        return warped
    canvas = np.zeros((height, width) + image.shape[2:], dtype=image.dtype)
    canvas[:valid_h, :valid_w] = warped[:valid_h, :valid_w]
    return canvas


def materialize(data: Dict[str, Any]) -> Dict[str, Any]:
    """Apply and remove a pending warp (no-op without one)."""
    pending = data.pop(KEY, None)
    if pending is not None:
        data['image'] = warp_image(data['image'], pending['matrix'], pending['size'], pending['valid'])
    return data


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def transform_polygons(data: Dict[str, Any], matrix: np.ndarray) -> None:
    """Map every polygon of the sample (``lines`` before MakeICDARData, ``polygons`` after) by ``matrix``."""
    for line in data.get('lines', ()):
        line['poly'] = transform_points(line['poly'], matrix)
    if 'polygons' in data:
        data['polygons'] = [transform_points(p, matrix).astype(np.float32) for p in data['polygons']]


def sample_polygons(data: Dict[str, Any]):
    """(list of (N, 2) arrays, ignore flags) from ``lines`` or ``polygons``/``ignore_tags``."""
    if 'lines' in data:
        return ([np.asarray(line['poly'], dtype=np.float64).reshape(-1, 2) for line in data['lines']],
                [line['text'] == '###' for line in data['lines']])
    return ([np.asarray(p, dtype=np.float64) for p in data.get('polygons', [])],
            [bool(t) for t in data.get('ignore_tags', [])])


def keep_polygons(data: Dict[str, Any], keep) -> None:
    """Keep only the polygons whose index is in ``keep`` (in ``lines`` or ``polygons``/``ignore_tags``)."""
    keep = list(keep)
    if 'lines' in data:
        data['lines'] = [data['lines'][i] for i in keep]
    if 'polygons' in data:
        data['polygons'] = [data['polygons'][i] for i in keep]
        data['ignore_tags'] = np.asarray(data['ignore_tags'], dtype=bool)[keep] if keep else np.zeros(0, bool)
