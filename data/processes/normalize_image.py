"""NormalizeImage: BGR uint8 (H, W, 3) -> float32 tensor (3, H, W), (BGR - mean) / 255."""
from typing import Any, Dict

import numpy as np
import torch

from data.normalization import denormalize, normalize

from .data_process import DataProcess
from .pending_warp import materialize


class NormalizeImage(DataProcess):
    def process(self, data: Dict[str, Any]) -> Dict[str, Any]:
        materialize(data)
        image = data['image']
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'NormalizeImage: expected image (H, W, 3) ndarray, got '
                             f'{getattr(image, "shape", type(image))}')
        data['image'] = torch.from_numpy(normalize(image))
        return data

    @classmethod
    def restore(cls, image: torch.Tensor) -> np.ndarray:
        """Inverse: tensor (3, H, W) -> uint8 BGR (H, W, 3)."""
        return denormalize(image)
