"""The ``--speed`` report of eval.py and demo.py, and the check that two runs gave the same detections."""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np

from inference.engine import StageTimer


class DetectionRecord(Protocol):
    """What ``same_detections`` compares: per image boxes and scores (an ``InferenceResult``, eval.py's record)."""

    @property
    def boxes(self) -> Sequence[Any]: ...

    @property
    def scores(self) -> Sequence[Any]: ...


def stage_rows(timer: StageTimer) -> List[Tuple[str, float, float]]:
    """(stage, ms per image, images per second) for each timed stage and end to end."""
    rows = []
    count = max(timer.images, 1)
    for stage in StageTimer.STAGES:
        seconds = timer.seconds[stage]
        rows.append((stage, 1e3 * seconds / count, count / seconds if seconds > 0 else float('inf')))
    rows.append(('end-to-end', 1e3 * timer.total / count, count / timer.total if timer.total > 0 else float('inf')))
    return rows


def format_speed(sequential: StageTimer, pipelined: Optional[StageTimer], header: Mapping[str, Any]) -> str:
    """The --speed report: context lines, then a Markdown table of stages."""
    lines = [f'{key}: {value}' for key, value in header.items()]
    lines += ['', '| stage | ms / image | images / s |', '|---|---|---|']
    for stage, milliseconds, fps in stage_rows(sequential):
        lines.append(f'| {stage} (sequential) | {milliseconds:.2f} | {fps:.2f} |')
    if pipelined is not None:
        _, milliseconds, fps = stage_rows(pipelined)[-1]
        lines.append(f'| end-to-end (pipelined) | {milliseconds:.2f} | {fps:.2f} |')
    return '\n'.join(lines)


def same_detections(first: Sequence[DetectionRecord], second: Sequence[DetectionRecord]) -> bool:
    """Whether two runs gave the same boxes (exact integer coordinates) and scores (exact floats) per image."""
    if len(first) != len(second):
        return False
    for a, b in zip(first, second):
        if len(a.boxes) != len(b.boxes) or [list(s) for s in a.scores] != [list(s) for s in b.scores]:
            return False
        for boxes_a, boxes_b in zip(a.boxes, b.boxes):
            if len(boxes_a) != len(boxes_b) or not all(np.array_equal(x, y) for x, y in zip(boxes_a, boxes_b)):
                return False
    return True
