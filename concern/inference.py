"""What eval.py and demo.py share: loading trained weights and running the network on images."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

# Mean of the BGR training images; released checkpoints were trained with exactly these values.
IMAGE_MEAN_BGR = np.array([122.67891434, 116.66876762, 104.00698793], dtype=np.float32)


def load_trained_model(builder: Any, checkpoint_path: str, device: torch.device) -> torch.nn.Module:
    """A model from ``builder`` with the weights of ``checkpoint_path``, in eval mode on ``device``.

    Every key must fit: a checkpoint for another architecture is an error, never a run with random weights.
    """
    if not checkpoint_path:
        raise ValueError('a checkpoint is required (--resume PATH)')
    if not os.path.isfile(checkpoint_path):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint_path}')
    from structure.model import load_model_state
    model = builder.build()
    state = torch.load(checkpoint_path, map_location='cpu', weights_only=True)
    try:
        load_model_state(model, state, strict=True)
    except (KeyError, RuntimeError, ValueError) as error:
        raise ValueError(f'{checkpoint_path}: does not fit this experiment\'s model: {error}') from error
    return model.to(device).eval()


def inference_size(height: int, width: int, short_side: int, max_long_side: int = 2560) -> Tuple[int, int, bool]:
    """(new_height, new_width, capped): short side to ``short_side``, both multiples of 32, the long side
    at most ``max_long_side`` so that a huge photo cannot exhaust memory."""
    scale = short_side / min(height, width)
    capped = max(height, width) * scale > max_long_side
    if capped:
        scale = max_long_side / max(height, width)
    new_height = max(32, int(round(height * scale / 32)) * 32)
    new_width = max(32, int(round(width * scale / 32)) * 32)
    return new_height, new_width, capped


def image_to_tensor(image_bgr: np.ndarray, size: Tuple[int, int]) -> torch.Tensor:
    """Resize to ``size`` (height, width) and normalise like NormalizeImage: (1, 3, H, W) float32."""
    import cv2
    resized = cv2.resize(image_bgr, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    array = (resized.astype(np.float32) - IMAGE_MEAN_BGR) / 255.0
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def probability_map(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        pred = model(images, training=False)
    return pred['binary'] if isinstance(pred, dict) else pred


def detections_to_lines(boxes: Sequence[np.ndarray], scores: Sequence[float]) -> List[str]:
    """One line per detection: ``x1,y1,...,xn,yn,score``."""
    return [','.join(str(int(v)) for v in np.asarray(box).reshape(-1)) + f',{float(score):.4f}'
            for box, score in zip(boxes, scores)]


def evaluate_loader(model: torch.nn.Module, loader: Any, structure: Any, device: torch.device,
                    is_output_polygon: bool = False, box_thresh: float = 0.6) -> Tuple[List[Any], List[Dict]]:
    """Run ``loader`` through model, representer and measurer; per-image measures and raw outputs."""
    measures: List[Any] = []
    outputs: List[Dict] = []
    for batch in loader:
        pred = probability_map(model, batch['image'].to(device))
        boxes_batch, scores_batch = structure.representer.represent(batch, pred, is_output_polygon=is_output_polygon)
        measures.extend(structure.measurer.validate_measure(batch, (boxes_batch, scores_batch),
                                                            is_output_polygon=is_output_polygon,
                                                            box_thresh=box_thresh))
        for index in range(len(boxes_batch)):
            outputs.append({'filename': batch['filename'][index], 'boxes': boxes_batch[index],
                            'scores': scores_batch[index], 'polygons': batch['polygons'][index],
                            'ignore_tags': batch['ignore_tags'][index]})
    return measures, outputs
