"""The box_thresh sweep of validation during training (``ValidationSettings(sweep=True)`` or ``--sweep``).

The representer runs once per image at the lowest threshold of the sweep; its detections are then filtered
back to the representer's own box_thresh for the main figure, which is what the representer returns at that
threshold (scores do not depend on it), so best-model selection sees the same numbers with or without a sweep.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np


class SweepRequest:
    """What one validation pass needs to sweep box_thresh; ``active`` False makes every method a no-op."""

    def __init__(self, active: bool, thresholds: Sequence[float] = (), representer: Any = None,
                 protocol_options: Optional[Dict[str, str]] = None):
        self.active = active
        self.thresholds = tuple(thresholds)
        self.representer = representer
        # the measurer's protocol and switches (QuadMeasurer.protocol_options): the sweep scores as it does
        self.protocol_options = dict(protocol_options or {'protocol': 'iou'})
        self.keep_at: Optional[float] = getattr(representer, 'box_thresh', None) if active else None

    @classmethod
    def from_settings(cls, validation: Any, representer: Any, measurer: Any) -> 'SweepRequest':
        """Raises ValueError when the settings ask for a sweep the structure cannot give."""
        if not getattr(validation, 'sweep', False):
            return cls(False)
        from structure.measurers import DEFAULT_THRESHOLDS
        thresholds = getattr(validation, 'sweep_thresholds', None) or DEFAULT_THRESHOLDS
        if not isinstance(getattr(representer, 'box_thresh', None), (int, float)):
            raise ValueError(f'validation.sweep needs a representer with a numeric box_thresh (such as '
                             f'SegDetectorRepresenter), got {type(representer).__name__}')
        options = getattr(measurer, 'protocol_options', None)
        if options is None:
            raise ValueError(f'validation.sweep needs a measurer with a protocol (QuadMeasurer, DetEvalMeasurer), '
                             f'got {type(measurer).__name__}')
        return cls(True, thresholds, representer, options)

    @contextlib.contextmanager
    def lowered_threshold(self) -> Iterator[None]:
        """The representer keeps detections down to the lowest swept threshold while inside."""
        if not self.active:
            yield
            return
        self.representer.box_thresh = min(self.keep_at, min(self.thresholds))
        try:
            yield
        finally:
            self.representer.box_thresh = self.keep_at

    def collect(self, batch: Any, output: Tuple[Sequence, Sequence]) -> List[Dict[str, Any]]:
        """Per image of the batch: its detections and ground truth, as ``sweep_box_thresh`` takes them."""
        from structure.measurers.quad_measurer import ground_truth
        boxes_batch, scores_batch = output
        return [{'boxes': [np.asarray(box) for box in boxes], 'scores': list(scores),
                 'polygons': [item['points'] for item in gt], 'ignore_tags': [item['ignore'] for item in gt]}
                for boxes, scores, gt in zip(boxes_batch, scores_batch, ground_truth(batch))]

    def refilter(self, output: Tuple[Sequence, Sequence]) -> Tuple[List[Any], List[List[float]]]:
        """The detections the representer would have returned at its own box_thresh."""
        from structure.measurers import filter_by_score
        kept = [filter_by_score(boxes, scores, self.keep_at) for boxes, scores in zip(*output)]
        return [boxes for boxes, _ in kept], [scores for _, scores in kept]
