"""ICDARCollectFN: validation batches (image stacked, annotations kept per image), bad samples set aside."""
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

BAD_SAMPLE = 'bad_sample'    # key of the marker sample ImageDataset(on_bad_sample='skip') gives for a bad sample
BAD_SAMPLES = 'bad_samples'  # key of a batch's list of their messages


class ICDARCollectFN:
    """``image`` stacked to (B, 3, H, W); every other key becomes a per-image list
    (arrays other than polygons become tensors, as in the original).

    Marker samples of unusable images (``{'filename', 'data_id', 'bad_sample': message}``, from
    ``ImageDataset(on_bad_sample='skip')``) are taken out: their messages go to ``batch['bad_samples']`` (present
    only when there are some), and a batch of bad samples only is ``{'bad_samples': [...]}``."""

    def __call__(self, batch: List[Dict[str, Any]]) -> Dict[str, Any]:
        bad = [str(sample[BAD_SAMPLE]) for sample in batch if BAD_SAMPLE in sample]
        batch = [sample for sample in batch if BAD_SAMPLE not in sample]
        if not batch:
            return {BAD_SAMPLES: bad}
        collected: Dict[str, Any] = {}  # lists of the samples' values; the images stacked in one tensor
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
                             'use batch_size 1 for keep_ratio validation and for eval.py --image_short_side')
        collected['image'] = torch.stack(images, 0)
        if bad:
            collected[BAD_SAMPLES] = bad
        return collected


def split_bad_samples(batch: Mapping[str, Any]) -> Tuple[Optional[Mapping[str, Any]], List[str]]:
    """``(batch without 'bad_samples', their messages)`` of an ``ICDARCollectFN`` batch; the batch is None when
    no image is left (every sample was bad). Call it before the forward pass, and report the messages."""
    if BAD_SAMPLES not in batch:
        return batch, []
    messages = list(batch[BAD_SAMPLES])
    rest = {key: value for key, value in batch.items() if key != BAD_SAMPLES}
    return (rest if 'image' in rest else None), messages
