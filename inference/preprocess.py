"""Preprocessing of an image for the network, NumPy / OpenCV only (no torch): the resize to the input size (the
size comes from ``data.input_size.InputSize``, the one rule) and the normalisation, both from
``data.normalization`` (the original's arithmetic: float32, then resize, then ``(image - mean) / 255``).
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import numpy as np

from data.normalization import IMAGE_DIVISOR, IMAGE_MEAN_BGR, normalize, resize_image


def prepare_image(image_bgr: np.ndarray, size: Tuple[int, int], resize_dtype: str = 'float32') -> np.ndarray:
    """Resize to ``size`` (height, width) and normalise: float32 (1, 3, H, W). resize_dtype: 'float32' (the
    original's preprocessing) or 'uint8' (``data.normalization.resize_image``)."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f'image: expected (H, W, 3) BGR, got shape {image_bgr.shape}')
    return normalize(resize_image(image_bgr, size, resize_dtype))[None]


def stack_inputs(runner: Any, arrays: Sequence[np.ndarray]) -> Any:
    """(1, 3, H, W) float32 inputs of one size -> a batch for ``runner``: its ``stack`` when it has one
    (``TorchRunner``: page-locked memory for CUDA), else the one array or their concatenation."""
    stack = getattr(runner, 'stack', None)
    if stack is not None:
        return stack(arrays)
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)


def normalization_settings() -> Dict[str, Any]:
    """What ``prepare_image`` applies, as an exported model's metadata records it (convert_to_onnx.py): the
    (1, 3, H, W) float32 input is ``(image - mean) / divisor`` per channel, channels in BGR order, after a linear
    resize of the image converted to float32 (the default ``resize_dtype``)."""
    return {'channel_order': 'BGR', 'layout': 'NCHW', 'mean': [float(value) for value in IMAGE_MEAN_BGR],
            'divisor': IMAGE_DIVISOR, 'formula': '(image - mean) / divisor',
            'resize': 'linear interpolation of the image converted to float32, to multiples of 32'}


def check_normalization(stored: Any, source: str) -> None:
    """ValueError unless ``stored`` (an exported model's ``normalization``) is what ``prepare_image`` applies: this
    project has one normalisation, so a model that asks for another one cannot be fed correctly here."""
    expected = normalization_settings()
    if not isinstance(stored, dict):
        raise ValueError(f'{source}: metadata normalization: expected a mapping, got {stored!r}')
    differing = [key for key in ('channel_order', 'layout', 'mean', 'divisor') if stored.get(key) != expected[key]]
    if differing:
        raise ValueError(f'{source}: the model asks for another input normalisation than this project applies '
                         f'(' + '; '.join(f'{key}: {stored.get(key)!r}, here {expected[key]!r}' for key in differing)
                         + ')')
