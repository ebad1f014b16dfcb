"""``python -m data.convert check DIR``: a converted set read as training reads it (``data.ImageDataset`` with
``gt_format: converted``, the readers of training), its statistics, and overlay pictures of some samples.

Statistics: images, words, the don't-care share, the height of the cared-for words (the short side of each
polygon's minimum-area rectangle, px: range and median), polygons by point count, images without words,
degenerate polygons (fewer than 3 distinct points, zero area: file and line), self-crossing polygons (training
repairs or blanks them, docs/data.md), points outside the image, and files that cannot be read (missing image,
malformed ground truth). Overlays: ``N`` samples spread evenly over the list, their polygons drawn on the image
(cared-for words green, don't care red), written as PNG to ``OVERLAY_DIR`` (default ``DIR/check/``, each file by
``concern.files.atomic_write``), never into the data set's folders."""
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
from shapely.geometry import Polygon

from concern.files import atomic_write

from ..image_dataset import ImageDataset
from ..image_io import DataError, read_image
from ..readers import DONT_CARE, decode_text
from .layout import SPLITS, ConvertError, image_size
from .shapes import degenerate_reason

CARED_COLOUR = (0, 200, 0)       # BGR
DONT_CARE_COLOUR = (0, 0, 255)


@dataclass
class CheckResult:
    images: int = 0
    words: int = 0
    dont_care: int = 0
    heights: List[float] = field(default_factory=list)            # cared-for words, px
    point_counts: Counter = field(default_factory=Counter)        # points per polygon -> polygons
    without_words: List[str] = field(default_factory=list)
    degenerate: List[str] = field(default_factory=list)           # 'file:line: why'
    self_crossing: List[str] = field(default_factory=list)        # 'file:line'
    outside_points: int = 0
    errors: List[str] = field(default_factory=list)
    overlays: List[str] = field(default_factory=list)

    @property
    def dont_care_share(self) -> float:
        return self.dont_care / self.words if self.words else 0.0

    def lines(self) -> List[str]:
        heights = 'no cared-for words'
        if self.heights:
            heights = (f'{min(self.heights):.1f} .. {max(self.heights):.1f} px, '
                       f'median {statistics.median(self.heights):.1f}')
        counts = ', '.join(f'{points} points: {number}' for points, number in sorted(self.point_counts.items()))
        report = [f'images: {self.images}', f'words: {self.words}',
                  f'don\'t care: {self.dont_care} ({100.0 * self.dont_care_share:.1f} %)',
                  f'word height (cared-for words, short side of the minimum-area rectangle): {heights}',
                  f'polygons by point count: {counts or "none"}',
                  f'images without words: {len(self.without_words)}'
                  + (f' ({", ".join(self.without_words[:10])}{" ..." if len(self.without_words) > 10 else ""})'
                     if self.without_words else ''),
                  f'degenerate polygons: {len(self.degenerate)}']
        report += [f'  {entry}' for entry in self.degenerate]
        report.append(f'self-crossing polygons (training repairs them or makes them don\'t care): '
                      f'{len(self.self_crossing)}')
        report += [f'  {entry}' for entry in self.self_crossing]
        report.append(f'points outside the image: {self.outside_points}')
        if self.errors:
            report.append(f'unreadable samples: {len(self.errors)}')
            report += [f'  {entry}' for entry in self.errors]
        if self.overlays:
            report.append(f'overlays: {len(self.overlays)} in {os.path.dirname(self.overlays[0])}')
        return report


def _line_numbers(gt_path: str) -> List[int]:
    """The line number of each line the reader returns (it skips blank lines)."""
    with open(gt_path, 'rb') as handle:
        text = decode_text(handle.read(), gt_path)
    return [number for number, row in enumerate(text.splitlines(), 1) if row.strip()]


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def check_converted(directory: str, split: str = 'train', overlays: int = 0,
                    overlay_dir: Optional[str] = None) -> CheckResult:
    """Statistics of ``directory``'s ``split`` and ``overlays`` pictures (module docstring)."""
    if split not in SPLITS:
        raise ConvertError(f'--split: expected one of {SPLITS}, got {split!r}')
    list_path = os.path.join(directory, f'{split}_list.txt')
    if not os.path.isfile(list_path):
        raise ConvertError(f'{list_path}: no list file; is {directory} a converted set?')
    overlay_dir = overlay_dir or os.path.join(directory, 'check')
    for other in SPLITS:
        for kind in ('images', 'gts'):
            if _inside(overlay_dir, os.path.join(directory, f'{other}_{kind}')):
                raise ConvertError(f'--out {overlay_dir}: inside the data set\'s {other}_{kind}/ folder; '
                                   f'choose a folder outside it')
    dataset = ImageDataset(data_dir=[directory], data_list=[list_path], gt_format='converted',
                           is_training=False, on_bad_sample='raise')
    result = CheckResult()
    chosen = set(_spread(len(dataset), overlays))
    for index, (image_path, name, _, gt_path) in enumerate(dataset.entries):
        try:
            lines = dataset.load_lines(index)  # as evaluation reads them; training repairs afterwards
            numbers = _line_numbers(gt_path)
            size = image_size(image_path) if os.path.isfile(image_path) else None
        except (DataError, OSError) as error:
            result.errors.append(str(error))
            continue
        if size is None:
            result.errors.append(f'{image_path}: image not found')
            continue
        result.images += 1
        _count(result, lines, numbers, gt_path, size)
        if not lines:
            result.without_words.append(name)
        if index in chosen:
            result.overlays.append(_overlay(image_path, name, split, lines, overlay_dir))
    return result


def _spread(count: int, wanted: int) -> List[int]:
    if wanted <= 0 or count == 0:
        return []
    if wanted >= count:
        return list(range(count))
    return sorted({round(i * (count - 1) / max(wanted - 1, 1)) for i in range(wanted)})


def _count(result: CheckResult, lines: List[Dict[str, Any]], numbers: List[int], gt_path: str,
           size: Tuple[int, int]) -> None:
    width, height = size
    for line, number in zip(lines, numbers):
        points = [(float(x), float(y)) for x, y in line['poly']]
        result.words += 1
        result.dont_care += line['text'] == DONT_CARE
        result.point_counts[len(points)] += 1
        result.outside_points += sum(not (0 <= x <= width and 0 <= y <= height) for x, y in points)
        reason = degenerate_reason(points)
        if reason is not None:
            result.degenerate.append(f'{gt_path}:{number}: {reason}')
            continue
        if not Polygon(points).is_valid:
            result.self_crossing.append(f'{gt_path}:{number}')
        if line['text'] != DONT_CARE:
            (_, _), (side_a, side_b), _ = cv2.minAreaRect(np.asarray(points, dtype=np.float32))
            result.heights.append(float(min(side_a, side_b)))


def _overlay(image_path: str, name: str, split: str, lines: List[Dict[str, Any]], overlay_dir: str) -> str:
    image = read_image(image_path, orientation='stored').copy()
    thickness = max(1, round(min(image.shape[:2]) / 300))
    for line in lines:
        points = np.round(np.asarray(line['poly'], dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
        colour = DONT_CARE_COLOUR if line['text'] == DONT_CARE else CARED_COLOUR
        cv2.polylines(image, [points], True, colour, thickness, cv2.LINE_8)
    os.makedirs(overlay_dir, exist_ok=True)
    path = os.path.join(overlay_dir, f'{split}_{name}.png')
    encoded, png = cv2.imencode('.png', image)
    if not encoded:
        raise ConvertError(f'{path}: cannot encode the overlay')
    atomic_write(path, png.tobytes())
    return path
