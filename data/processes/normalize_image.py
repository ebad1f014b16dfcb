"""NormalizeImage: BGR uint8 (H, W, 3) -> float32 tensor (3, H, W), (BGR - mean) / 255."""
from typing import Any, Dict

import numpy as np
import torch

from .data_process import DataProcess
from .pending_warp import materialize

# The released checkpoints were trained with exactly these BGR means.
RGB_MEAN = np.array([122.67891434, 116.66876762, 104.00698793], dtype=np.float64)


class NormalizeImage(DataProcess):
    def process(self, data: Dict[str, Any]) -> Dict[str, Any]:
        materialize(data)
        image = data['image']
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'NormalizeImage: expected image (H, W, 3) ndarray, got '
                             f'{getattr(image, "shape", type(image))}')
        chw = np.ascontiguousarray(image.transpose(2, 0, 1))
        normalized = np.empty(chw.shape, dtype=np.float32)
        for channel in range(3):
            np.subtract(chw[channel], np.float32(RGB_MEAN[channel]), out=normalized[channel], dtype=np.float32)
        normalized *= np.float32(1.0 / 255.0)
        data['image'] = torch.from_numpy(normalized)
        return data

    @classmethod
    def restore(cls, image: torch.Tensor) -> np.ndarray:
        """Inverse: tensor (3, H, W) -> uint8 BGR (H, W, 3)."""
        array = image.detach().cpu().numpy().transpose(1, 2, 0) * 255.0 + RGB_MEAN
        return np.clip(np.round(array), 0, 255).astype(np.uint8)
