"""Ground-truth readers for the supported benchmark formats.

Every reader returns a list of lines ``{'poly': [[x, y], ...], 'text': str}`` (px, ``'###'`` = don't care)
and raises :class:`DataError` naming the file and line for malformed input, a non-finite coordinate
(``nan``, ``inf``, ``1e999``: any spelling ``float()`` accepts) included. Polygons are returned as
annotated; repairing degenerate ones is a training step (:mod:`data.ground_truth`). Files are decoded by
:func:`decode_text` (UTF-8; UTF-16 / UTF-32 with a byte-order mark; NUL bytes without one refused).
"""
import codecs
import contextlib
import contextvars
import json
import math
import os
import re
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypedDict, Union

import numpy as np

from .image_io import DataError

DONT_CARE = '###'


class Line(TypedDict):
    """One ground-truth line: the polygon's points (px) and its transcription (``'###'`` = don't care)."""
    poly: List[List[float]]
    text: str


# Byte-order marks and the codec that reads (and drops) them; UTF-32 LE's mark starts with UTF-16 LE's, so first.
_BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, 'UTF-32', 'utf-32'), (codecs.BOM_UTF32_BE, 'UTF-32', 'utf-32'),
                     (codecs.BOM_UTF8, 'UTF-8', 'utf-8-sig'), (codecs.BOM_UTF16_LE, 'UTF-16', 'utf-16'),
                     (codecs.BOM_UTF16_BE, 'UTF-16', 'utf-16'))


def decode_text(raw: bytes, where: str) -> str:
    """The text of a ground-truth (or result) file's bytes; ``where`` names the file in errors.

    * a byte-order mark names the encoding, and the file is read in it: UTF-8, UTF-16 (what Windows Notepad
      calls "Unicode") or UTF-32, little- or big-endian; bytes not valid in it, or a NUL character, are a
      DataError;
    * without one, the file is UTF-8; one that is not valid UTF-8 is read as Latin-1 (legacy 8-bit files:
      every byte is a character, so coordinates and ``###`` read the same whatever the 8-bit code page was);
    * a NUL byte without a byte-order mark is a DataError naming its line: that is UTF-16 or UTF-32 text
      without its mark (or no text at all), which read as UTF-8 or Latin-1 would turn every line into a
      malformed one. Nothing guesses the byte order.
    A ``U+FEFF`` anywhere is dropped (a mark left at the start of a line by concatenated files)."""
    for mark, name, codec in _BYTE_ORDER_MARKS:
        if not raw.startswith(mark):
            continue
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError as error:
            raise DataError(f'{where}: starts with a {name} byte-order mark but is not valid {name} '
                            f'(byte offset {error.start}); save the file as UTF-8') from None
        if '\x00' in text:
            line = text.count('\n', 0, text.index('\x00')) + 1
            raise DataError(f'{where}:{line}: NUL character in {name} text; save the file as UTF-8 text without it')
        return text.replace('\ufeff', '')
    nul = raw.find(b'\x00')
    if nul >= 0:
        line = raw.count(b'\n', 0, nul) + 1
        raise DataError(f'{where}:{line}: not UTF-8 text: NUL byte at byte offset {nul}, as in UTF-16 (or UTF-32) '
                        f'without a byte-order mark; save the file as UTF-8')
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError:
        text = raw.decode('latin-1')
    return text.replace('\ufeff', '')


# (max lines, the option that raises it) while a caller bounds what the readers read (tools.score on untrusted input)
_LINE_LIMIT: contextvars.ContextVar[Optional[Tuple[int, str]]] = contextvars.ContextVar('line_limit', default=None)


@contextlib.contextmanager
def line_limit(max_lines: int, option: str) -> Iterator[None]:
    """Within it, a ground-truth file of more than ``max_lines`` line boundaries (every one ``str.splitlines``
    splits at: ``\n``, ``\r``, ``\r\n``, ...) is a DataError naming the file, the limit and ``option``, counted on
    the file's decoded text before any line is split (tools.score: the file's size is checked from the file system
    before, so the reader reads each file once)."""
    token = _LINE_LIMIT.set((max_lines, option))
    try:
        yield
    finally:
        _LINE_LIMIT.reset(token)


def _read_text(path: str) -> str:
    if not os.path.isfile(path):
        raise DataError(f'{path}: ground-truth file not found')
    with open(path, 'rb') as handle:
        raw = handle.read()
    text = decode_text(raw, path)
    limit = _LINE_LIMIT.get()
    if limit is not None and _line_boundaries(text) > limit[0]:
        raise DataError(f'{path}: more than the limit of {limit[0]} lines per file ({limit[1]})')
    return text


# what str.splitlines splits at, besides \n and \r (counted apart: \r\n is one boundary)
_OTHER_LINE_BOUNDARIES = '\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029'


def _line_boundaries(text: str) -> int:
    """How many line boundaries ``text.splitlines()`` splits at, counted without splitting it."""
    count = text.count('\n') + text.count('\r') - text.count('\r\n')
    return count + sum(text.count(character) for character in _OTHER_LINE_BOUNDARIES)


def _is_number(token: Any) -> bool:
    """Whether ``float()`` reads the token, non-finite spellings ('nan', 'inf', '1e999') included, so that
    a non-finite coordinate is reported as one rather than read as the start of a label."""
    try:
        float(token)
    except (TypeError, ValueError):
        return False
    return True


def _finite(values: Sequence[Union[str, float]], where: str) -> List[float]:
    """``values`` as floats; :class:`DataError` naming ``where`` and the value if one is not finite."""
    numbers = [float(v) for v in values]
    for position, number in enumerate(numbers):
        if not math.isfinite(number):
            raise DataError(f'{where}: non-finite coordinate {str(values[position]).strip()!r} '
                            f'(value {position + 1})')
    return numbers


def _pairs(values: Sequence[Union[str, float]], where: str) -> List[List[float]]:
    if len(values) < 6 or len(values) % 2:
        raise DataError(f'{where}: expected an even number (>= 6) of coordinates, got {len(values)}')
    numbers = _finite(values, where)
    return [[numbers[i], numbers[i + 1]] for i in range(0, len(numbers), 2)]


_QUOTED = re.compile(r'^\s*"(.*)"\s*$', re.S)


def unquote_transcription(text: str) -> str:
    """A transcription as the official Robust Reading scripts read it (rrc_evaluation_funcs.py): one written in
    double quotes loses them, ``\\\\`` becomes ``\\`` and ``\\"`` becomes ``"``; anything else is kept as is.
    So ``"###"`` is don't care, as in the official evaluation."""
    match = _QUOTED.match(text)
    if match is None:
        return text
    return match.group(1).replace('\\\\', '\\').replace('\\"', '"')


def _coordinate_count(parts: Sequence[str]) -> int:
    """How many leading values of a comma-split ground-truth line are coordinates, the one rule of the line
    forms that put a polygon of any size before a transcription or label (:func:`read_icdar2015`,
    :func:`read_converted`): the longest even run of leading numbers (``float()`` reads them, ``nan`` and
    ``inf`` included, so that a non-finite coordinate is reported and not read as text) that leaves at least
    the last value for the transcription. The callers check the count and the ambiguous cases."""
    numeric = 0
    while numeric < len(parts) - 1 and _is_number(parts[numeric]):
        numeric += 1
    return numeric - numeric % 2


OFFICIAL_COORDINATES = 8  # the official ICDAR 2015 script (rrc_evaluation_funcs.py) reads exactly 8 per line


def read_icdar2015(path: str) -> List[Line]:
    """The ICDAR 2015 line form ``x1,y1,...,xn,yn,transcription`` with n >= 4 points (the official script
    reads exactly 4: ``x1,y1,...,x4,y4,transcription``; MLT, ArT, ReCTS and annotation tools write more).

    The coordinates are :func:`_coordinate_count`'s: the longest even run of leading numbers that leaves
    a transcription, so a 14-point curve then ``word`` is 28 coordinates, ``###`` included. Exactly 8
    coordinates is the official reading, whatever follows: ``...,y4,2015``, ``...,y4,1,000`` and
    ``...,y4,1,000m`` have the transcriptions ``2015``, ``1,000`` and ``1,000m``. Beyond 8, a transcription
    that would begin with a number makes the line ambiguous (``...,y7,5,###``: 7 points and ``5,###``, or 8
    with a coordinate missing? ``...,y14,2015``: 14 points and ``2015``, or 15 with a coordinate missing?)
    and it is a DataError naming the file and line: write such a transcription in double quotes
    (``"5,###"``, ``"2015"``). docs/data.md, "Ground-truth line rule", gives the rule. The transcription may
    hold commas; a quoted one is unquoted as the official script does (:func:`unquote_transcription`);
    ``###`` = don't care. Fewer than 8 coordinates, or no transcription, is a DataError."""
    lines: List[Line] = []
    for number, row in enumerate(_read_text(path).splitlines(), 1):
        if not row.strip():
            continue
        parts = row.strip().split(',')
        where = f'{path}:{number}'
        count = _coordinate_count(parts)
        if count < OFFICIAL_COORDINATES:
            raise DataError(f'{where}: expected at least {OFFICIAL_COORDINATES} coordinates then a transcription, '
                            f'got {row!r}')
        if count > OFFICIAL_COORDINATES and _is_number(parts[count]):
            leading = count
            while leading < len(parts) and _is_number(parts[leading]):
                leading += 1
            described = (f'all {leading} values are numbers' if leading == len(parts)
                         else f'{leading} numbers, then {",".join(parts[leading:])!r}')
            raise DataError(f'{where}: cannot tell where the coordinates end and the transcription begins '
                            f'({described}): a coordinate may be missing, or the transcription may begin with '
                            f'a number; after more than {OFFICIAL_COORDINATES} coordinates write such a '
                            f'transcription in double quotes ("{",".join(parts[count:]).strip()}")')
        lines.append({'poly': _pairs(parts[:count], where), 'text': unquote_transcription(','.join(parts[count:]))})
    return lines


def read_converted(path: str, difficult_label: Optional[str] = None) -> List[Line]:
    """The original code base's converted format: an even number of coordinates, then a label.

    The coordinates are the longest even run of leading numeric tokens that leaves the last token as the
    label (:func:`_coordinate_count`, the rule of :func:`read_icdar2015` too; labels may hold commas, and may
    start with a number: ``...,8,1,000`` has the label ``1,000``), at least 6. Unlike the ICDAR 2015 form, a
    numeric label after more than 8 coordinates is read, not refused: numeric labels (MSRA-TD500's ``1``)
    are this format's own. ``nan`` / ``inf`` count as numeric, so a non-finite coordinate is an error and not
    a label start. ``difficult_label`` (``'1'`` for MSRA-TD500) is a label value meaning don't care.
    """
    lines: List[Line] = []
    for number, row in enumerate(_read_text(path).splitlines(), 1):
        if not row.strip():
            continue
        parts = [p.strip() for p in row.strip().split(',')]
        where = f'{path}:{number}'
        count = _coordinate_count(parts)
        if count < 6:
            raise DataError(f'{where}: expected an even number (>= 6) of coordinates then a label, got {row!r}')
        label = ','.join(parts[count:])
        if difficult_label is not None and label == difficult_label:
            label = DONT_CARE
        lines.append({'poly': _pairs(parts[:count], where), 'text': label})
    return lines


_TOTALTEXT_RECORD = re.compile(
    r"x:\s*\[\[(?P<x>[^\]]*)\]\]\s*,\s*y:\s*\[\[(?P<y>[^\]]*)\]\]\s*,\s*ornt:\s*\[u?'(?P<ornt>[^']*)'\]\s*,"
    r"\s*transcriptions:\s*\[u?(?P<q>['\"])(?P<text>.*?)(?P=q)\]", re.S)


def read_totaltext(path: str) -> List[Line]:
    """Total-Text official ``poly_gt_imgN.txt`` records (a record may wrap over several lines)."""
    content = _read_text(path)
    lines: List[Line] = []
    starts = [m.start() for m in re.finditer(r'x:\s*\[\[', content)]
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(content)
        chunk = content[start:end]
        number = content.count('\n', 0, start) + 1
        match = _TOTALTEXT_RECORD.match(chunk)
        tokens = {axis: list(re.finditer(r'\S+', match.group(axis))) if match else [] for axis in 'xy'}
        if (match is None or len(tokens['x']) != len(tokens['y']) or len(tokens['x']) < 3
                or not all(_is_number(t.group()) for axis in 'xy' for t in tokens[axis])):
            raise DataError(f'{path}:{number}: malformed Total-Text record {chunk.strip()[:80]!r}')
        for axis in 'xy':
            for token in tokens[axis]:
                if not math.isfinite(float(token.group())):
                    line = content.count('\n', 0, start + match.start(axis) + token.start()) + 1
                    raise DataError(f'{path}:{line}: non-finite {axis} coordinate {token.group()!r}')
        xs = [float(t.group()) for t in tokens['x']]
        ys = [float(t.group()) for t in tokens['y']]
        text = match.group('text')
        if text == '#' or match.group('ornt') == '#':
            text = DONT_CARE
        lines.append({'poly': [[x, y] for x, y in zip(xs, ys)], 'text': text})
    stray = re.search(r'\S', _TOTALTEXT_RECORD.sub(lambda match: re.sub(r'\S', ' ', match.group()), content))
    if stray is not None:  # records blanked out (same length, newlines kept), so the offset gives the line
        number = content.count('\n', 0, stray.start()) + 1
        leftover = re.sub(r'\s', '', content[stray.start():])
        raise DataError(f'{path}:{number}: unparsed Total-Text content {leftover[:80]!r}')
    return lines


def read_td500(path: str) -> List[Line]:
    """MSRA-TD500 / TR400 ``.gt``: ``index difficult x y w h theta`` (rectangle rotated about its centre)."""
    lines: List[Line] = []
    for number, row in enumerate(_read_text(path).splitlines(), 1):
        if not row.strip():
            continue
        parts = row.split()
        where = f'{path}:{number}'
        if len(parts) != 7 or not all(_is_number(p) for p in parts):
            raise DataError(f'{where}: expected "index difficult x y w h theta", got {row!r}')
        _, difficult, x, y, w, h, theta = _finite(parts, where)
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
    lines: List[Line] = []
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
        values = _finite(tokens, where)
        if len(values) == 32:
            xmin, ymin = values[0], values[1]
            points = [[xmin + values[i], ymin + values[i + 1]] for i in range(4, 32, 2)]
        else:
            points = _pairs(tokens, where)
        lines.append({'poly': points, 'text': text})
    return lines


def _read_ctw1500_xml(path: str) -> List[Line]:
    """``<box>`` elements (in document order) with ``<label>`` and ``<segs>`` children; errors name the
    line of the ``<segs>`` (or of the ``<box>`` when it has none). Parsed with expat for line numbers."""
    from xml.parsers import expat
    parser = expat.ParserCreate()
    # A box: 'line' and 'depth' (int), 'label' and 'segs' (their text chunks, None until read), 'reading'.
    boxes: List[Dict[str, Any]] = []   # every box, in document order
    open_boxes: List[Dict[str, Any]] = []
    elements: List[str] = []
    field: List[Optional[Dict[str, Any]]] = [None]  # the box whose <label>/<segs> text is being read

    def start(name: str, _attributes: Dict[str, str]) -> None:
        parent = elements[-1] if elements else None
        elements.append(name)
        field[0] = None
        if name == 'box':
            box: Dict[str, Any] = {'line': parser.CurrentLineNumber, 'depth': len(elements),
                                   'label': None, 'segs': None}
            boxes.append(box)
            open_boxes.append(box)
        elif parent == 'box' and name in ('label', 'segs') and open_boxes[-1][name] is None:
            box = open_boxes[-1]
            box[name], box['reading'] = [], name
            if name == 'segs':
                box['line'] = parser.CurrentLineNumber
            field[0] = box

    def text(data: str) -> None:
        if field[0] is not None:
            field[0][field[0]['reading']].append(data)

    def end(name: str) -> None:
        elements.pop()
        field[0] = None
        if name == 'box' and open_boxes and open_boxes[-1]['depth'] == len(elements) + 1:
            open_boxes.pop()

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, text
    try:
        parser.Parse(_read_text(path), True)
    except expat.ExpatError as error:
        raise DataError(f'{path}:{error.lineno}: malformed XML ({expat.ErrorString(error.code)})') from None
    lines: List[Line] = []
    for index, box in enumerate(boxes):
        where = f'{path}:{box["line"]} (box {index})'
        segs = None if box['segs'] is None else ''.join(box['segs'])
        if segs is None or not all(_is_number(t) for t in segs.split(',')):
            raise DataError(f'{where}: expected <segs> with numeric coordinates')
        label = ''.join(box['label'] or []) or DONT_CARE
        lines.append({'poly': _pairs(segs.split(','), where), 'text': label})
    return lines


def parse_paddle_label(row: str, where: str) -> Tuple[str, List[Line]]:
    """One PaddleOCR detection label line: ``image_path\\t[{"transcription": ..., "points": [[x, y], ...]}]``."""
    if '\t' not in row:
        raise DataError(f'{where}: expected "image_path<TAB>json", got {row[:80]!r}')
    image_path, payload = row.rstrip('\n').split('\t', 1)
    try:
        items = json.loads(payload)
    except json.JSONDecodeError as error:
        raise DataError(f'{where}: invalid JSON ({error.msg} at column {error.colno})') from None
    lines: List[Line] = []
    for item in items:
        points = item.get('points') if isinstance(item, dict) else None
        if not isinstance(points, list) or len(points) < 3 or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 for p in points):
            raise DataError(f'{where}: expected "points" as a list of >= 3 [x, y], got {str(item)[:80]!r}')
        if not all(_is_number(v) and not isinstance(v, bool) for point in points for v in point):
            raise DataError(f'{where}: expected numeric "points", got {str(points)[:80]!r}')
        text = str(item.get('transcription', ''))
        if text in ('###', '*') or item.get('difficult', False):
            text = DONT_CARE
        flat = _finite([v for point in points for v in point], where)
        lines.append({'poly': [[flat[i], flat[i + 1]] for i in range(0, len(flat), 2)], 'text': text})
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
    for word in range(boxes.shape[2]):
        _finite(boxes[:, :, word].T.ravel().tolist(), f'{where}: word {word}')
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
