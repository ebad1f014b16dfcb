"""Preprocessing of an image for the network, NumPy / OpenCV only (no torch): resizing to the input size (the size
comes from ``data.input_size.InputSize``, the one rule) and the one normalisation (``data.normalization``).

The original (its demo.py and its ImageDataset) resized the uint8 image; so does this module (OpenCV's 8-bit
linear interpolation).
"""
from __future__ import annotations

from typing import Any, Sequence, Tuple

import numpy as np

from data.normalization import normalize


def prepare_image(image_bgr: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resize to ``size`` (height, width) and normalise: float32 (1, 3, H, W)."""
    import cv2
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f'image: expected (H, W, 3) BGR, got shape {image_bgr.shape}')
    resized = cv2.resize(image_bgr, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    return normalize(resized)[None]


def stack_inputs(runner: Any, arrays: Sequence[np.ndarray]) -> Any:
    """(1, 3, H, W) float32 inputs of one size -> a batch for ``runner``: its ``stack`` when it has one
    (``TorchRunner``: page-locked memory for CUDA), else the one array or their concatenation."""
    stack = getattr(runner, 'stack', None)
    if stack is not None:
        return stack(arrays)
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
