"""Detections in the ICDAR submission format: one ``res_<image stem>.txt`` per image."""
from __future__ import annotations

import os
from typing import Any, List, Mapping, Sequence


def result_lines(boxes: Sequence[Any], scores: Sequence[float], with_score: bool = True) -> List[str]:
    """``x1,y1,...,xn,yn[,score]`` per detection, integer coordinates (rounded), score with 6 decimals."""
    if len(boxes) != len(scores):
        raise ValueError(f'expected one score per box, got {len(boxes)} boxes and {len(scores)} scores')
    lines = []
    for box, score in zip(boxes, scores):
        coordinates = [int(round(float(value))) for row in box for value in row]
        if len(coordinates) < 6:
            raise ValueError(f'box: expected at least 3 points, got {box!r}')
        line = ','.join(str(value) for value in coordinates)
        lines.append(f'{line},{float(score):.6f}' if with_score else line)
    return lines


def write_result_file(result_dir: str, image_path: str, boxes: Sequence[Any], scores: Sequence[float],
                      with_score: bool = True) -> str:
    """Write ``<result_dir>/res_<stem of image_path>.txt``; the path written (an empty file when no
    detection, as the submission expects one file per image)."""
    os.makedirs(result_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(image_path))[0]
    path = os.path.join(result_dir, f'res_{stem}.txt')
    lines = result_lines(boxes, scores, with_score)
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(''.join(line + '\n' for line in lines))
    return path


def write_result_files(result_dir: str, outputs: Sequence[Mapping[str, Any]], with_score: bool = True) -> List[str]:
    """One file per ``{'filename', 'boxes', 'scores'}`` entry; refuses two images with the same stem."""
    paths, seen = [], {}
    for index, output in enumerate(outputs):
        for key in ('filename', 'boxes', 'scores'):
            if key not in output:
                raise KeyError(f'outputs[{index}]: expected a key {key!r}, got keys {sorted(output)}')
        stem = os.path.splitext(os.path.basename(output['filename']))[0]
        if stem in seen:
            raise ValueError(f"outputs[{index}]: {output['filename']} and {seen[stem]} would both write "
                             f'res_{stem}.txt')
        seen[stem] = output['filename']
        paths.append(write_result_file(result_dir, output['filename'], output['boxes'], output['scores'],
                                       with_score))
    return paths
