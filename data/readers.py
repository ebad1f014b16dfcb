"""Ground-truth readers for the supported benchmark formats.

Every reader returns a list of lines ``{'poly': [[x, y], ...], 'text': str}`` (``'###'`` = don't care)
and raises :class:`DataError` naming the file and line for malformed input.
"""
import json
import math
import os
import re
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .image_io import DataError

DONT_CARE = '###'
Line = Dict[str, object]


def _read_text(path: str) -> str:
    if not os.path.isfile(path):
        raise DataError(f'{path}: ground-truth file not found')
    with open(path, 'rb') as handle:
        raw = handle.read()
    try:
        text = raw.decode('utf-8-sig')
    except UnicodeDecodeError:
        text = raw.decode('latin-1')
    return text.replace('\ufeff', '')


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return math.isfinite(float(token))


def _pairs(values: Sequence[float], where: str) -> List[List[float]]:
    if len(values) < 6 or len(values) % 2:
        raise DataError(f'{where}: expected an even number (>= 6) of coordinates, got {len(values)}')
    return [[float(values[i]), float(values[i + 1])] for i in range(0, len(values), 2)]


def read_icdar2015(path: str) -> List[Line]:
    """``x1,y1,...,x4,y4,transcription`` (transcription may hold commas; ``###`` = don't care)."""
    lines = []
    for number, row in enumerate(_read_text(path).splitlines(), 1):
        if not row.strip():
            continue
        parts = row.strip().split(',')
        where = f'{path}:{number}'
        if len(parts) < 9 or not all(_is_number(p) for p in parts[:8]):
            raise DataError(f'{where}: expected 8 coordinates then a transcription, got {row!r}')
        lines.append({'poly': _pairs([float(p) for p in parts[:8]], where), 'text': ','.join(parts[8:])})
    return lines


def read_converted(path: str, difficult_label: Optional[str] = None) -> List[Line]:
    """The original code base's converted format: an even number of coordinates, then a label.

    ``difficult_label`` (``'1'`` for MSRA-TD500) is a label value meaning don't care.
    """
    lines = []
    for number, row in enumerate(_read_text(path).splitlines(), 1):
        if not row.strip():
            continue
        parts = [p.strip() for p in row.strip().split(',')]
        where = f'{path}:{number}'
        numeric = 0
        while numeric < len(parts) - 1 and _is_number(parts[numeric]):
            numeric += 1
        count = numeric - numeric % 2
        if count < 6:
            raise DataError(f'{where}: expected an even number (>= 6) of coordinates then a label, got {row!r}')
        label = ','.join(parts[count:])
        if difficult_label is not None and label == difficult_label:
            label = DONT_CARE
        lines.append({'poly': _pairs([float(p) for p in parts[:count]], where), 'text': label})
    return lines


_TOTALTEXT_RECORD = re.compile(
    r"x:\s*\[\[(?P<x>[^\]]*)\]\]\s*,\s*y:\s*\[\[(?P<y>[^\]]*)\]\]\s*,\s*ornt:\s*\[u?'(?P<ornt>[^']*)'\]\s*,"
    r"\s*transcriptions:\s*\[u?(?P<q>['\"])(?P<text>.*?)(?P=q)\]", re.S)


def read_totaltext(path: str) -> List[Line]:
    """Total-Text official ``poly_gt_imgN.txt`` records (a record may wrap over several lines)."""
    content = _read_text(path)
    lines = []
    starts = [m.start() for m in re.finditer(r'x:\s*\[\[', content)]
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(content)
        chunk = content[start:end]
        number = content.count('\n', 0, start) + 1
        match = _TOTALTEXT_RECORD.match(chunk)
        try:
            xs = [float(v) for v in match.group('x').split()] if match else None
            ys = [float(v) for v in match.group('y').split()] if match else None
        except ValueError:
            xs = ys = None
        if match is None or xs is None or len(xs) != len(ys) or len(xs) < 3:
            raise DataError(f'{path}:{number}: malformed Total-Text record {chunk.strip()[:80]!r}')
        text = match.group('text')
        if text == '#' or match.group('ornt') == '#':
            text = DONT_CARE
        lines.append({'poly': [[x, y] for x, y in zip(xs, ys)], 'text': text})
    leftover = re.sub(r'\s', '', _TOTALTEXT_RECORD.sub('', content))
    if leftover:
        raise DataError(f'{path}: unparsed Total-Text content {leftover[:80]!r}')
    return lines


def read_td500(path: str) -> List[Line]:
    """MSRA-TD500 / TR400 ``.gt``: ``index difficult x y w h theta`` (rectangle rotated about its centre)."""
    lines = []
    for number, row in enumerate(_read_text(path).splitlines(), 1):
        if not row.strip():
            continue
        parts = row.split()
        where = f'{path}:{number}'
        if len(parts) != 7 or not all(_is_number(p) for p in parts):
            raise DataError(f'{where}: expected "index difficult x y w h theta", got {row!r}')
        _, difficult, x, y, w, h, theta = (float(p) for p in parts)
        cx, cy = x + w / 2.0, y + h / 2.0
        corners = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]]) - (cx, cy)
        cos, sin = math.cos(theta), math.sin(theta)
        rotated = corners @ np.array([[cos, sin], [-sin, cos]]) + (cx, cy)
        lines.append({'poly': rotated.tolist(), 'text': DONT_CARE if difficult == 1 else 'text'})
    return lines


def read_ctw1500(path: str) -> List[Line]:
    """CTW1500 in its released forms.

    * training ``.txt``: 32 numbers, ``xmin, ymin, xmax, ymax`` then 14 points as offsets from (xmin, ymin);
    * test / evaluation ``.txt``: absolute coordinates (28 for 14 points) optionally followed by
      ``####transcription`` (``###`` as transcription = don't care);
    * training ``.xml``: ``<box><label>text</label><segs>x1,y1,...</segs></box>``.
    """
    if path.endswith('.xml'):
        return _read_ctw1500_xml(path)
    lines = []
    for number, row in enumerate(_read_text(path).splitlines(), 1):
        row = row.strip()
        if not row:
            continue
        where = f'{path}:{number}'
        text = 'text'
        if '####' in row:
            row, text = row.split('####', 1)
            text = text or DONT_CARE
        tokens = [t for t in row.replace(',', ' ').split()]
        if not tokens or not all(_is_number(t) for t in tokens):
            raise DataError(f'{where}: expected numeric CTW1500 coordinates, got {row!r}')
        values = [float(t) for t in tokens]
        if len(values) == 32:
            xmin, ymin = values[0], values[1]
            points = [[xmin + values[i], ymin + values[i + 1]] for i in range(4, 32, 2)]
        else:
            points = _pairs(values, where)
        lines.append({'poly': points, 'text': text})
    return lines


def _read_ctw1500_xml(path: str) -> List[Line]:
    import xml.etree.ElementTree as ElementTree
    try:
        root = ElementTree.fromstring(_read_text(path))
    except ElementTree.ParseError as error:
        raise DataError(f'{path}:{error.position[0]}: malformed XML ({error})') from None
    lines = []
    for index, box in enumerate(root.iter('box')):
        segs = box.findtext('segs')
        if segs is None or not all(_is_number(t) for t in segs.split(',')):
            raise DataError(f'{path}: box {index}: expected <segs> with numeric coordinates')
        label = box.findtext('label') or DONT_CARE
        lines.append({'poly': _pairs([float(t) for t in segs.split(',')], f'{path}: box {index}'),
                      'text': label})
    return lines


def parse_paddle_label(row: str, where: str) -> (str, List[Line]):
    """One PaddleOCR detection label line: ``image_path\\t[{"transcription": ..., "points": [[x, y], ...]}]``."""
    if '\t' not in row:
        raise DataError(f'{where}: expected "image_path<TAB>json", got {row[:80]!r}')
    image_path, payload = row.rstrip('\n').split('\t', 1)
    try:
        items = json.loads(payload)
    except json.JSONDecodeError as error:
        raise DataError(f'{where}: invalid JSON ({error.msg} at column {error.colno})') from None
    lines = []
    for item in items:
        points = item.get('points') if isinstance(item, dict) else None
        if not isinstance(points, list) or len(points) < 3 or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 for p in points):
            raise DataError(f'{where}: expected "points" as a list of >= 3 [x, y], got {str(item)[:80]!r}')
        text = str(item.get('transcription', ''))
        if text in ('###', '*') or item.get('difficult', False):
            text = DONT_CARE
        lines.append({'poly': [[float(x), float(y)] for x, y in points], 'text': text})
    return image_path, lines


def synthtext_lines(word_boxes: np.ndarray, texts: Sequence[str], where: str) -> List[Line]:
    """Lines of one SynthText image: ``wordBB`` is 2x4xN (or 2x4 for one word), ``txt`` words split on spaces."""
    boxes = np.asarray(word_boxes, dtype=np.float64)
    if boxes.ndim == 2:
        boxes = boxes[:, :, None]
    if boxes.ndim != 3 or boxes.shape[:2] != (2, 4):
        raise DataError(f'{where}: expected wordBB of shape 2x4xN or 2x4, got {boxes.shape}')
    words = [w for t in np.atleast_1d(texts) for w in str(t).split()]
    if len(words) != boxes.shape[2]:
        raise DataError(f'{where}: {boxes.shape[2]} word boxes but {len(words)} words')
    return [{'poly': boxes[:, :, i].T.tolist(), 'text': words[i]} for i in range(boxes.shape[2])]


LIST_READERS: Dict[str, Callable[[str], List[Line]]] = {
    'icdar2015': read_icdar2015,
    'converted': read_converted,
    'converted_td500': lambda path: read_converted(path, difficult_label='1'),
    'totaltext': read_totaltext,
    'td500': read_td500,
    'ctw1500': read_ctw1500,
}

# Ground-truth file names tried, in order, for an image named ``name`` with stem ``stem``.
GT_NAME_PATTERNS = {
    'icdar2015': ('{name}.txt', 'gt_{stem}.txt'),
    'converted': ('{name}.txt',),
    'converted_td500': ('{name}.txt',),
    'totaltext': ('poly_gt_{stem}.txt', '{name}.txt'),
    'td500': ('{stem}.gt', '{name}.gt'),
    'ctw1500': ('{stem}.txt', '{name}.txt', '{stem}.xml'),
}
GT_FORMATS = tuple(LIST_READERS) + ('synthtext', 'paddle')


def find_gt_file(gt_dir: str, image_name: str, gt_format: str) -> str:
    stem = os.path.splitext(os.path.basename(image_name))[0]
    candidates = [os.path.join(gt_dir, p.format(name=image_name, stem=stem)) for p in GT_NAME_PATTERNS[gt_format]]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    return candidates[0]
