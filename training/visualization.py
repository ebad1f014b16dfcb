"""Images for TensorBoard: the input with its ground truth, and the predicted maps."""
from __future__ import annotations

from typing import Any, Dict, Mapping

import numpy as np
import torch

from data.normalization import denormalize as denormalize_bgr

# NormalizeImage subtracts this BGR mean and divides by 255 (docs/ARCHITECTURE.md).


def denormalize(image: torch.Tensor) -> np.ndarray:
    """A normalized (3, H, W) BGR tensor back to an (H, W, 3) uint8 RGB image."""
    return np.ascontiguousarray(denormalize_bgr(image)[:, :, ::-1])


def _map(value: Any) -> np.ndarray:
    array = value.detach().float().cpu().numpy()
    while array.ndim > 2:
        array = array[0]
    return np.clip(np.nan_to_num(array), 0.0, 1.0)


def training_images(batch: Mapping[str, Any], pred: Any) -> Dict[str, np.ndarray]:
    """The first sample of ``batch``: input (ground-truth text regions tinted red) and each predicted map."""
    images: Dict[str, np.ndarray] = {}
    image = batch.get('image') if isinstance(batch, Mapping) else None
    if isinstance(image, torch.Tensor) and image.dim() == 4 and image.shape[1] == 3:
        rgb = denormalize(image[0]).astype(np.float32)
        gt = batch.get('gt')
        if isinstance(gt, torch.Tensor) and gt.dim() >= 3:
            region = _map(gt[0]) > 0.5
            if region.shape == rgb.shape[:2]:
                rgb[region] = 0.5 * rgb[region] + 0.5 * np.array([255.0, 0.0, 0.0])
        images['input_gt'] = rgb.astype(np.uint8)
    maps = pred if isinstance(pred, Mapping) else {'binary': pred}
    for key, name in (('binary', 'probability'), ('thresh', 'threshold'), ('thresh_binary', 'binary')):
        value = maps.get(key)
        if isinstance(value, torch.Tensor) and value.dim() >= 2:
            images[name] = _map(value[0])
    return images
