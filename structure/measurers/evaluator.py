"""``DetectionEvaluator``: what eval.py, validation during training, the demo and the ONNX check measure with.

Modelled on detectron2's ``DatasetEvaluator``: ``reset()``, then ``process()`` per batch, then ``evaluate()``;
the one loop that feeds it is ``inference.evaluation.evaluate_on_dataset``.

box_thresh belongs to the representer (``structure.representer.box_thresh``; ``SegDetectorRepresenter`` says
how it is set and in which precedence): the evaluator holds no copy and hands no threshold to it.

- ``detect(batch, pred)``: the representer's detections (``represent``, kept at its box_thresh); while sweeping,
  its scored candidates down to the lowest swept threshold (``candidates``). It changes nothing, so it may run in
  a post-processing thread while ``process`` runs in another;
- ``process(batch, detections)``: measures each image's detections at box_thresh (while sweeping, the
  representer's ``select`` keeps them from the candidates: exactly what ``represent`` returns, every score being
  computed before and independently of the filter), the measurer filtering nothing; so the main P/R/F is the
  same with or without a sweep;
- ``evaluate()``: P/R/F over the images measured, the box_thresh sweep (``sweep_box_thresh``) from the same
  candidates, and the samples that were skipped as unreadable or malformed (``batch['bad_samples']`` or
  ``skip()``), which count nowhere else.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .quad_measurer import ground_truth
from .sweep import DEFAULT_THRESHOLDS, sweep_box_thresh

Detections = Tuple[List[Any], List[List[float]]]


class DetectionEvaluator:
    """reset / detect / process / evaluate (detectron2 ``DatasetEvaluator`` style) over one data set.

    representer: turns the network's output into detections and owns box_thresh (``represent``, ``box_thresh``;
    for a sweep also ``candidates`` and ``select``: ``SegDetectorRepresenter``). measurer: scores them against
    the ground truth (``validate_measure`` / ``gather_measure``; ``protocol_options`` when sweeping, as
    ``QuadMeasurer``). is_output_polygon: polygons (curved text) instead of boxes. sweep_thresholds: also report
    P/R/F at each of these box_thresh values (None: no sweep). keep_outputs: keep every image's detections in
    ``outputs`` (for result files; always kept while sweeping).
    """

    def __init__(self, representer: Any, measurer: Any, is_output_polygon: bool = False,
                 sweep_thresholds: Optional[Sequence[float]] = None, keep_outputs: bool = False):
        if not _is_number(getattr(representer, 'box_thresh', None)):
            raise ValueError('representer: expected one with a numeric box_thresh (such as SegDetectorRepresenter), '
                             f'got {type(representer).__name__} with box_thresh '
                             f'{getattr(representer, "box_thresh", None)!r}')
        if sweep_thresholds is not None:
            if isinstance(sweep_thresholds, (str, bytes)) or not all(_is_number(value) for value in sweep_thresholds) \
                    or not len(sweep_thresholds):
                raise ValueError(f'sweep_thresholds: expected a non-empty list of numbers, got {sweep_thresholds!r}')
            if not isinstance(getattr(measurer, 'protocol_options', None), Mapping):
                raise ValueError('the box_thresh sweep needs a measurer with a protocol (QuadMeasurer, '
                                 f'DetEvalMeasurer), got {type(measurer).__name__}')
            missing = [name for name in ('candidates', 'select') if not callable(getattr(representer, name, None))]
            if missing:
                raise ValueError(f'the box_thresh sweep needs a representer with {" and ".join(missing)} (such as '
                                 f'SegDetectorRepresenter), got {type(representer).__name__}')
        self.representer = representer
        self.measurer = measurer
        self.is_output_polygon = bool(is_output_polygon)
        self.sweep_thresholds: Optional[Tuple[float, ...]] = (
            None if sweep_thresholds is None else tuple(float(value) for value in sweep_thresholds))
        self.keep_outputs = bool(keep_outputs)
        self.reset()

    @classmethod
    def from_settings(cls, structure: Any, settings: Any, keep_outputs: bool = False) -> 'DetectionEvaluator':
        """The evaluator of an experiment: ``structure`` (``experiment.Structure``: representer, measurer) and
        ``settings`` (``experiment.ValidationSettings``: is_output_polygon, sweep, sweep_thresholds). box_thresh
        is the representer's, its single source (``structure.representer.box_thresh``, and
        ``polygon_box_thresh`` in polygon mode where set)."""
        for part in ('representer', 'measurer'):
            if getattr(structure, part, None) is None:
                raise ValueError(f'evaluation needs structure.{part} in the experiment, got none')
        thresholds = None
        if getattr(settings, 'sweep', False):
            thresholds = getattr(settings, 'sweep_thresholds', None) or DEFAULT_THRESHOLDS
        return cls(structure.representer, structure.measurer,
                   is_output_polygon=bool(getattr(settings, 'is_output_polygon', False)),
                   sweep_thresholds=thresholds, keep_outputs=keep_outputs)

    @property
    def sweeping(self) -> bool:
        return self.sweep_thresholds is not None

    @property
    def box_thresh(self) -> float:
        """The representer's threshold of this evaluator's mode (read there at each use: the evaluator keeps no
        copy): ``box_thresh_for(is_output_polygon)`` where the representer has a threshold per mode
        (``SegDetectorRepresenter.polygon_box_thresh``), else its box_thresh."""
        if self._per_mode:
            return float(self.representer.box_thresh_for(self.is_output_polygon))
        return float(self.representer.box_thresh)

    @property
    def _per_mode(self) -> bool:
        """Whether the representer has a threshold per mode (``box_thresh_for``, ``select(..., is_output_polygon)``)."""
        return callable(getattr(self.representer, 'box_thresh_for', None))

    @property
    def candidate_floor(self) -> float:
        """While sweeping, the lowest score of a candidate ``detect`` keeps: the lowest swept threshold, or
        box_thresh when that is lower."""
        return min((self.box_thresh,) + tuple(self.sweep_thresholds or ()))

    def _select(self, boxes: Any, scores: Sequence[float]) -> Tuple[Any, List[float]]:
        """The representer's ``select`` at this evaluator's mode (a representer with one threshold: as is)."""
        if self._per_mode:
            return self.representer.select(boxes, scores, is_output_polygon=self.is_output_polygon)
        return self.representer.select(boxes, scores)

    # -- the DatasetEvaluator cycle ------------------------------------------------------------
    def reset(self) -> None:
        """Forget every image processed so far (call before each pass over a data set)."""
        self._results: List[Any] = []
        self._skipped: List[str] = []
        self.outputs: List[Dict[str, Any]] = []

    def detect(self, batch: Mapping[str, Any], pred: Any) -> Detections:
        """The representer's (boxes_batch, scores_batch) of ``pred``: its detections at box_thresh, or while
        sweeping its candidates scoring at least ``candidate_floor``; changes nothing."""
        if self.sweeping:
            return self.representer.candidates(batch, pred, is_output_polygon=self.is_output_polygon,
                                               min_score=self.candidate_floor)
        return self.representer.represent(batch, pred, is_output_polygon=self.is_output_polygon)

    def process(self, batch: Mapping[str, Any], detections: Detections) -> Detections:
        """Measure one batch: ``detections`` (``detect``'s output; while sweeping, kept at box_thresh by the
        representer's ``select``) are measured and returned as (boxes_batch, scores_batch).
        ``batch['bad_samples']`` (messages of skipped samples, see ``ICDARCollectFN``) is recorded; a batch of bad
        samples only has no detections to measure."""
        self.skip(batch.get('bad_samples', ()))
        boxes_batch, scores_batch = _unpack(detections)
        if not boxes_batch and 'polygons' not in batch:
            return [], []
        if self.sweeping:
            kept = [self._select(boxes, scores) for boxes, scores in zip(boxes_batch, scores_batch)]
            kept_boxes, kept_scores = [boxes for boxes, _ in kept], [list(scores) for _, scores in kept]
        else:
            kept_boxes, kept_scores = boxes_batch, scores_batch
        # the measurer measures every detection given: box_thresh was applied by the representer alone
        results = self.measurer.validate_measure(batch, (kept_boxes, kept_scores),
                                                 is_output_polygon=self.is_output_polygon)
        if len(results) != len(kept_boxes):
            raise ValueError(f'measurer: expected one result per image, got {len(results)} for '
                             f'{len(kept_boxes)} images')
        self._results.extend(results)
        if self.keep_outputs or self.sweeping:
            filenames = batch.get('filename') or [None] * len(kept_boxes)
            for index, gt in enumerate(ground_truth(batch)):
                self.outputs.append({
                    'filename': filenames[index], 'boxes': kept_boxes[index], 'scores': list(kept_scores[index]),
                    'all_boxes': boxes_batch[index], 'all_scores': list(scores_batch[index]),
                    'polygons': [item['points'] for item in gt], 'ignore_tags': [item['ignore'] for item in gt]})
        return kept_boxes, kept_scores

    def skip(self, messages: Sequence[str]) -> None:
        """Record samples left out as unreadable or malformed (one message each, naming the file)."""
        if isinstance(messages, str):
            messages = [messages]
        self._skipped.extend(str(message) for message in messages)

    def evaluate(self) -> Dict[str, Any]:
        """``{'precision', 'recall', 'fmeasure'}`` over the images measured, ``'images'`` (their number),
        ``'skipped'`` (the messages of the samples left out), ``'box_thresh'``, ``'is_output_polygon'`` and
        ``'sweep'`` (``sweep_box_thresh``'s table, or None). ValueError when no image was measured."""
        if not self._results:
            skipped = f'; {len(self._skipped)} skipped: ' + '; '.join(self._skipped[:3]) if self._skipped else ''
            raise ValueError(f'no images were evaluated (the data set gave none{skipped})')
        measured = self.measurer.gather_measure(self._results)
        # a measurer may give meters with an ``avg`` (the original's AverageMeter) instead of numbers
        metrics = {key: float(getattr(measured[key], 'avg', measured[key]))
                   for key in ('precision', 'recall', 'fmeasure')}
        sweep = None
        if self.sweeping:
            sweep = sweep_box_thresh([{'boxes': output['all_boxes'], 'scores': output['all_scores'],
                                       'polygons': output['polygons'], 'ignore_tags': output['ignore_tags']}
                                      for output in self.outputs],
                                     self.sweep_thresholds, **self.measurer.protocol_options)
        return {**metrics, 'images': len(self._results), 'skipped': list(self._skipped),
                'box_thresh': self.box_thresh, 'is_output_polygon': self.is_output_polygon, 'sweep': sweep}

    # -- several processes (DDP validation) ----------------------------------------------------
    def state(self) -> Dict[str, Any]:
        """What this evaluator has gathered, picklable: hand it to ``merge`` on another process."""
        return {'results': list(self._results), 'skipped': list(self._skipped), 'outputs': list(self.outputs)}

    def merge(self, states: Sequence[Mapping[str, Any]]) -> None:
        """Replace this evaluator's state by the union of ``states`` (``state()`` of each rank, in rank order)."""
        self.reset()
        for state in states:
            self._results.extend(state['results'])
            self._skipped.extend(state['skipped'])
            self.outputs.extend(state['outputs'])


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _unpack(detections: Any) -> Detections:
    if not isinstance(detections, (tuple, list)) or len(detections) != 2:
        raise ValueError('detections: expected (boxes_batch, scores_batch) from detect(), got '
                         f'{type(detections).__name__}')
    boxes_batch, scores_batch = detections
    if len(boxes_batch) != len(scores_batch):
        raise ValueError(f'detections: expected as many score lists as images, got {len(boxes_batch)} images and '
                         f'{len(scores_batch)} score lists')
    return list(boxes_batch), list(scores_batch)
