"""Measurers: detections of a validation batch against its ground truth, per image and over a data set."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from structure.measurers.protocols.deteval import VERSIONS, DetEvalEvaluator
from structure.measurers.protocols.icdar2015_eval import INVALID_POLYGONS, DetectionIoUEvaluator

PROTOCOLS = {'iou': DetectionIoUEvaluator, 'deteval': DetEvalEvaluator}


def make_evaluator(protocol: str, invalid_polygons: str = 'official', deteval_version: str = 'current') -> Any:
    """The evaluator of ``protocol`` ('iou': DetectionIoUEvaluator(invalid_polygons=...), 'deteval':
    DetEvalEvaluator(version=deteval_version)); each keyword goes to its own protocol, both are checked.
    Raises ValueError naming the allowed values for an unknown protocol, invalid_polygons or version."""
    if protocol not in PROTOCOLS:
        raise ValueError(f'protocol: expected one of {sorted(PROTOCOLS)}, got {protocol!r}')
    # both are checked whatever the protocol, so that a typo in the unused one never passes silently
    if invalid_polygons not in INVALID_POLYGONS:
        raise ValueError(f"invalid_polygons: expected one of {', '.join(map(repr, INVALID_POLYGONS))}, "
                         f'got {invalid_polygons!r}')
    if deteval_version not in VERSIONS:
        raise ValueError(f"deteval_version: expected one of {', '.join(map(repr, VERSIONS))}, got {deteval_version!r}")
    if protocol == 'iou':
        return DetectionIoUEvaluator(invalid_polygons=invalid_polygons)
    return DetEvalEvaluator(version=deteval_version)


class QuadMeasurer:
    """Detections of a validation batch against its ground truth (``polygons``, ``ignore_tags``, original
    image coordinates, as the representer's output).

    protocol: 'iou' (ICDAR 2015, the default of every benchmark in the paper) or 'deteval' (Total-Text's
    DetEval). invalid_polygons (IoU protocol): 'official' (the official ICDAR 2015 script's arithmetic for
    every polygon, default) or 'drop' (the original DBNet evaluator leaves out polygons that are not valid
    simple polygons). deteval_version (DetEval protocol): 'current' (Total-Text's Deteval.py since its
    April 2019 one-to-one fix, default) or 'pre-2019'. Raises ValueError for any other value."""

    def __init__(self, protocol: str = 'iou', invalid_polygons: str = 'official', deteval_version: str = 'current'):
        self.protocol = protocol
        self.invalid_polygons = invalid_polygons
        self.deteval_version = deteval_version
        self.evaluator = make_evaluator(protocol, invalid_polygons, deteval_version)

    @property
    def protocol_options(self) -> Dict[str, str]:
        """``protocol``, ``invalid_polygons`` and ``deteval_version``, as ``sweep_box_thresh`` takes them, so that
        a sweep scores exactly as this measurer does."""
        return {'protocol': self.protocol, 'invalid_polygons': self.invalid_polygons,
                'deteval_version': self.deteval_version}

    def validate_measure(self, batch: Mapping[str, Any], output: Tuple[Sequence, Sequence],
                         is_output_polygon: bool = False) -> List[Dict[str, Any]]:
        """One result per image. ``output`` is the representer's (boxes_batch, scores_batch). Every detection
        given is measured: box_thresh is the representer's alone, applied there (the original's measurer took
        a ``box_thresh`` of its own and filtered box mode a second time; that argument is gone).
        ``is_output_polygon`` is accepted for the original's call signature and changes nothing."""
        gt_batch = ground_truth(batch)
        boxes_batch, scores_batch = _unpack_output(output, len(gt_batch))
        results = []
        for gt, boxes, scores in zip(gt_batch, boxes_batch, scores_batch):
            if len(boxes) != len(scores):
                raise ValueError(f'output: expected one score per detection, got {len(boxes)} detections '
                                 f'and {len(scores)} scores')
            pred = [{'points': box} for box in boxes]
            results.append(self.evaluator.evaluate_image(gt, pred))
        return results

    def evaluate_measure(self, batch: Mapping[str, Any], output: Tuple[Sequence, Sequence],
                         is_output_polygon: bool = False) -> List[Dict[str, Any]]:
        """The original's name for ``validate_measure``."""
        return self.validate_measure(batch, output, is_output_polygon)

    def gather_measure(self, results: Sequence[Any]) -> Dict[str, float]:
        """{'precision', 'recall', 'fmeasure'} over all images; ``results`` is the per-image list, or a
        list of such lists (one per batch)."""
        flat = [item for entry in results for item in (entry if isinstance(entry, list) else [entry])]
        combined = self.evaluator.combine_results(flat)
        return {'precision': float(combined['precision']), 'recall': float(combined['recall']),
                'fmeasure': float(combined['hmean'])}


class DetEvalMeasurer(QuadMeasurer):
    """QuadMeasurer with Total-Text's DetEval protocol."""

    def __init__(self, protocol: str = 'deteval', invalid_polygons: str = 'official',
                 deteval_version: str = 'current'):
        super().__init__(protocol=protocol, invalid_polygons=invalid_polygons, deteval_version=deteval_version)


def ground_truth(batch: Mapping[str, Any]) -> List[List[Dict[str, Any]]]:
    """Per image, ``[{'points': (N, 2) float array, 'ignore': bool}]`` from ``polygons`` / ``ignore_tags``."""
    for key in ('polygons', 'ignore_tags'):
        if key not in batch:
            raise KeyError(f'batch: expected a key {key!r} (validation batch), got keys {sorted(batch)}')
    polygons_batch, ignore_batch = batch['polygons'], batch['ignore_tags']
    if len(polygons_batch) != len(ignore_batch):
        raise ValueError(f"batch: expected as many 'ignore_tags' as 'polygons' entries, got "
                         f'{len(ignore_batch)} and {len(polygons_batch)}')
    images = []
    for index, (polygons, ignore_tags) in enumerate(zip(polygons_batch, ignore_batch)):
        ignore_tags = np.asarray(_to_numpy(ignore_tags), dtype=bool).reshape(-1)
        if len(polygons) != len(ignore_tags):
            raise ValueError(f"batch image {index}: expected one ignore tag per polygon, got {len(polygons)} "
                             f'polygons and {len(ignore_tags)} tags')
        images.append([{'points': np.asarray(_to_numpy(polygon), dtype=np.float64).reshape(-1, 2),
                        'ignore': bool(ignore)} for polygon, ignore in zip(polygons, ignore_tags)])
    return images


def _unpack_output(output: Any, batch_size: int) -> Tuple[Sequence, Sequence]:
    if not isinstance(output, (tuple, list)) or len(output) != 2:
        raise ValueError('output: expected (boxes_batch, scores_batch) from the representer, got '
                         f'{type(output).__name__} of length {len(output) if hasattr(output, "__len__") else "?"}')
    boxes_batch, scores_batch = output
    if len(boxes_batch) != batch_size or len(scores_batch) != batch_size:
        raise ValueError(f'output: expected {batch_size} images of boxes and scores, got {len(boxes_batch)} '
                         f'and {len(scores_batch)}')
    return boxes_batch, scores_batch


def _to_numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if hasattr(value, 'detach') else value
