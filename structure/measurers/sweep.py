"""P/R/F over a range of box_thresh values from one network pass: detections are only re-filtered by score.

The geometry of each image (IoU or sigma / tau tables against all its detections) is computed once; each
threshold then only re-runs the matching on the detections scoring at least that threshold, which gives
exactly what evaluating the filtered detections from scratch would.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from .quad_measurer import make_evaluator

DEFAULT_THRESHOLDS = tuple(round(0.3 + 0.05 * step, 2) for step in range(13))  # 0.3, 0.35, ..., 0.9


def sweep_box_thresh(outputs: Sequence[Mapping[str, Any]], thresholds: Optional[Sequence[float]] = None,
                     protocol: str = 'iou', invalid_polygons: str = 'official',
                     deteval_version: str = 'current') -> Dict[str, Any]:
    """``outputs``: per image ``{'boxes', 'scores', 'polygons', 'ignore_tags'}`` (detections and ground truth
    in the same coordinates, e.g. the per-image outputs eval.py collects). Returns ``{'rows': [{'box_thresh',
    'precision', 'recall', 'fmeasure'}, ...], 'best': the row of highest fmeasure (the lowest threshold on
    ties)}``. The representer must have run with box_thresh no higher than the lowest threshold swept.
    invalid_polygons / deteval_version: as QuadMeasurer's."""
    thresholds = DEFAULT_THRESHOLDS if thresholds is None else tuple(float(value) for value in thresholds)
    if not thresholds:
        raise ValueError('thresholds: expected at least one value, got none')
    evaluator = make_evaluator(protocol, invalid_polygons, deteval_version)
    prepared = []
    for index, output in enumerate(outputs):
        for key in ('boxes', 'scores', 'polygons', 'ignore_tags'):
            if key not in output:
                raise KeyError(f'outputs[{index}]: expected a key {key!r}, got keys {sorted(output)}')
        boxes, scores = output['boxes'], np.asarray(output['scores'], dtype=np.float64).reshape(-1)
        if len(boxes) != len(scores):
            raise ValueError(f'outputs[{index}]: expected one score per box, got {len(boxes)} boxes and '
                             f'{len(scores)} scores')
        ignore_tags = np.asarray(output['ignore_tags'], dtype=bool).reshape(-1)
        gt = [{'points': polygon, 'ignore': bool(ignore)} for polygon, ignore in zip(output['polygons'], ignore_tags)]
        pred = [{'points': box} for box in boxes]
        prepared.append((evaluator.prepare(gt, pred), scores))  # one table column per detection
    rows = []
    for threshold in thresholds:
        results = [evaluator.match(tables, keep=scores >= threshold) for tables, scores in prepared]
        combined = evaluator.combine_results(results)
        rows.append({'box_thresh': threshold, 'precision': combined['precision'], 'recall': combined['recall'],
                     'fmeasure': combined['hmean']})
    best = max(rows, key=lambda row: (row['fmeasure'], -row['box_thresh']))
    return {'rows': rows, 'best': best}


def format_sweep(sweep: Mapping[str, Any]) -> str:
    """The sweep as a Markdown table, the best row marked."""
    lines = ['| box_thresh | precision | recall | fmeasure |', '|---|---|---|---|']
    for row in sweep['rows']:
        mark = ' **best**' if row is sweep['best'] else ''
        lines.append(f"| {row['box_thresh']:.2f}{mark} | {row['precision']:.4f} | {row['recall']:.4f} | "
                     f"{row['fmeasure']:.4f} |")
    return '\n'.join(lines)
