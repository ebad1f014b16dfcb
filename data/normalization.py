"""The image preprocessing of every DBNet input: the resize to the network input size and the normalisation
``(BGR - mean) / 255``, and its inverse.

Kept free of torch so that the ONNX inference path can use it. Released checkpoints were trained with exactly
these BGR means.

The arithmetic is the original code base's (its demo.py and its ImageDataset, read by its eval.py): the image
is converted to float32 first, then resized by OpenCV's linear interpolation (``cv2.resize``'s float path),
then the float64 mean is subtracted (computed in float64, stored in float32: NumPy's ``img -= RGB_MEAN``) and
the result divided by 255 in float32. Resizing the uint8 image instead (OpenCV's fixed-point 8-bit path) gives
inputs up to 0.78/255 away and, with the same weights, other detections on most real photos; it is kept as
the explicit ``resize_dtype='uint8'`` option (faster on large photos: docs/inference.md).
"""
from typing import Any, Tuple

import numpy as np

IMAGE_MEAN_BGR = np.array([122.67891434, 116.66876762, 104.00698793], dtype=np.float64)
# The divisor after the mean is subtracted (the original's): pixel values in [0, 255] become about [-0.5, 0.5]
IMAGE_DIVISOR = 255.0
RESIZE_DTYPES = ('float32', 'uint8')


def check_resize_dtype(resize_dtype: str) -> str:
    """``resize_dtype`` if it is one of RESIZE_DTYPES, else ValueError naming the choices."""
    if resize_dtype not in RESIZE_DTYPES:
        raise ValueError(f'resize_dtype: expected one of {RESIZE_DTYPES} (float32: the original\'s preprocessing), '
                         f'got {resize_dtype!r}')
    return resize_dtype


def resize_image(image_bgr: np.ndarray, size: Tuple[int, int], resize_dtype: str = 'float32') -> np.ndarray:
    """(H, W, 3) BGR image -> (height, width, 3) by linear interpolation, ``size`` = (height, width).

    resize_dtype 'float32' (default, the original's): float32 conversion, then the resize; the result is float32.
    'uint8': the 8-bit image resized as it is (a float32 image is resized as float32); the result keeps its dtype.
    """
    import cv2
    check_resize_dtype(resize_dtype)
    if resize_dtype == 'float32' and image_bgr.dtype != np.float32:
        image_bgr = image_bgr.astype(np.float32)
    return cv2.resize(image_bgr, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)


def normalize(image_bgr: np.ndarray) -> np.ndarray:
    """uint8 or float32 (H, W, 3) BGR -> float32 (3, H, W): ``(image - mean) / 255`` with the original's rounding
    (the subtraction in float64 stored in float32, the division in float32)."""
    chw = image_bgr.transpose(2, 0, 1)
    normalized = np.empty(chw.shape, dtype=np.float32)
    for channel in range(3):
        np.subtract(chw[channel], IMAGE_MEAN_BGR[channel], out=normalized[channel], dtype=np.float64,
                    casting='same_kind')
    np.divide(normalized, np.float32(IMAGE_DIVISOR), out=normalized)
    return normalized


def denormalize(image: Any) -> np.ndarray:
    """Inverse of :func:`normalize` for a (3, H, W) tensor or array: uint8 BGR (H, W, 3)."""
    if hasattr(image, 'detach'):
        image = image.detach().float().cpu().numpy()
    array = np.nan_to_num(np.asarray(image, dtype=np.float64)).transpose(1, 2, 0) * IMAGE_DIVISOR + IMAGE_MEAN_BGR
    return np.clip(np.round(array), 0, 255).astype(np.uint8)
