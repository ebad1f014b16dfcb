"""The image normalisation of every DBNet input: ``(BGR - mean) / 255``, and its inverse.

Kept free of torch so that the ONNX inference path can use it. Released checkpoints were trained with
exactly these BGR means.
"""
from typing import Any

import numpy as np

IMAGE_MEAN_BGR = np.array([122.67891434, 116.66876762, 104.00698793], dtype=np.float64)


def normalize(image_bgr: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) BGR -> float32 (3, H, W)."""
    chw = np.ascontiguousarray(image_bgr.transpose(2, 0, 1))
    normalized = np.empty(chw.shape, dtype=np.float32)
    for channel in range(3):
        np.subtract(chw[channel], np.float32(IMAGE_MEAN_BGR[channel]), out=normalized[channel], dtype=np.float32)
    normalized *= np.float32(1.0 / 255.0)
    return normalized


def denormalize(image: Any) -> np.ndarray:
    """Inverse of :func:`normalize` for a (3, H, W) tensor or array: uint8 BGR (H, W, 3)."""
    if hasattr(image, 'detach'):
        image = image.detach().float().cpu().numpy()
    array = np.nan_to_num(np.asarray(image, dtype=np.float64)).transpose(1, 2, 0) * 255.0 + IMAGE_MEAN_BGR
    return np.clip(np.round(array), 0, 255).astype(np.uint8)
