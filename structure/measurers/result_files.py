"""Detections in the ICDAR submission format: one ``res_<image stem>.txt`` per image."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Sequence


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


def prepare_result_dir(result_dir: str, what: str = '--result_dir', create: bool = True) -> str:
    """Create ``result_dir`` (and its parents) before any work, or raise ValueError naming it: it is an existing
    file, or it cannot be created or written to. ``create=False`` only checks what can be checked without
    creating it. Returns its absolute path."""
    path = os.path.abspath(result_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f'{what} {result_dir}: exists and is not a directory')
    if not create:
        existing = path
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f'{what} {result_dir}: cannot be created ({existing} is not a writable directory)')
        return path
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise ValueError(f'{what} {result_dir}: cannot create it ({error.strerror or error})') from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f'{what} {result_dir}: not writable')
    return path


def result_file_name(image_path: str) -> str:
    """``res_<stem of image_path>.txt``: the ICDAR submission name of an image's result file."""
    return f'res_{os.path.splitext(os.path.basename(image_path))[0]}.txt'


def check_unique_result_names(image_paths: Sequence[str]) -> None:
    """ValueError naming both images when two of them would write the same result file (names compared
    case-insensitively, as on macOS and Windows file systems)."""
    seen: Dict[str, str] = {}  # lower-case result file name -> image path
    for path in image_paths:
        name = result_file_name(path)
        if name.lower() in seen:
            raise ValueError(f'{path} and {seen[name.lower()]} would both write {name}')
        seen[name.lower()] = path


def write_result_file(result_dir: str, image_path: str, boxes: Sequence[Any], scores: Sequence[float],
                      with_score: bool = True) -> str:
    """Write ``<result_dir>/res_<stem of image_path>.txt``; the path written (an empty file when no
    detection, as the submission expects one file per image)."""
    os.makedirs(result_dir, exist_ok=True)
    path = os.path.join(result_dir, result_file_name(image_path))
    lines = result_lines(boxes, scores, with_score)
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(''.join(line + '\n' for line in lines))
    return path


def write_result_files(result_dir: str, outputs: Sequence[Mapping[str, Any]], with_score: bool = True) -> List[str]:
    """One file per ``{'filename', 'boxes', 'scores'}`` entry; refuses (before writing any) two images with the
    same stem."""
    for index, output in enumerate(outputs):
        for key in ('filename', 'boxes', 'scores'):
            if key not in output:
                raise KeyError(f'outputs[{index}]: expected a key {key!r}, got keys {sorted(output)}')
    check_unique_result_names([output['filename'] for output in outputs])
    paths = []
    for output in outputs:
        paths.append(write_result_file(result_dir, output['filename'], output['boxes'], output['scores'],
                                       with_score))
    return paths
