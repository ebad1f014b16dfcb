"""ICDARCollectFN: validation batches (image stacked, annotations kept per image)."""
from typing import Any, Dict, List

import numpy as np
import torch


class ICDARCollectFN:
    """``image`` stacked to (B, 3, H, W); every other key becomes a per-image list
    (arrays other than polygons become tensors, as in the original)."""

    def __call__(self, batch: List[Dict[str, Any]]) -> Dict[str, Any]:
        collected: Dict[str, list] = {}
        for sample in batch:
            for key, value in sample.items():
                if isinstance(value, np.ndarray) and key != 'polygons':
                    value = torch.from_numpy(value)
                collected.setdefault(key, []).append(value)
        images = collected.get('image')
        if images is None:
            raise KeyError(f'ICDARCollectFN: expected key "image" in the samples, got {sorted(collected)}')
        sizes = {tuple(image.shape) for image in images}
        if len(sizes) > 1:
            raise ValueError(f'ICDARCollectFN: cannot stack images of different sizes {sorted(sizes)}; '
                             'use batch_size 1 for keep_ratio validation')
        collected['image'] = torch.stack(images, 0)
        return collected
