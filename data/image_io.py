"""Image reading: stored pixels (EXIF orientation ignored), always 3-channel uint8 BGR."""
import os

import cv2
import numpy as np


class DataError(ValueError):
    """A sample cannot be used: unreadable image or malformed ground truth (message names file and line)."""


def to_bgr_uint8(image: np.ndarray, source: str = '<array>') -> np.ndarray:
    """Convert gray / gray+alpha / BGRA / 16-bit / float images to (H, W, 3) uint8 BGR."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(image * 255.0 if image.max() <= 1.0 else image, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f'{source}: unsupported image dtype {image.dtype}, expected uint8/uint16/float')
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3:
        raise DataError(f'{source}: expected an image of 2 or 3 dimensions, got shape {image.shape}')
    channels = image.shape[2]
    if channels == 3:
        return np.ascontiguousarray(image)
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if channels == 2:  # gray + alpha: drop alpha
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise DataError(f'{source}: expected 1-4 channels, got {channels}')


def read_image(path: str) -> np.ndarray:
    """Read ``path`` as stored (EXIF orientation ignored) as (H, W, 3) uint8 BGR; DataError if unreadable."""
    if not os.path.isfile(path):
        raise DataError(f'{path}: image file not found')
    # IMREAD_UNCHANGED keeps 16-bit/alpha and never applies EXIF rotation; the conversion is ours.
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f'{path}: cannot decode image')
    return to_bgr_uint8(image, path)
