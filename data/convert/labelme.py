"""labelme JSON (one file per image): ``shapes`` of ``shape_type`` ``polygon`` (or none, older files) and
``rectangle`` (two opposite corners) become words; ``rotation`` (a four-point shape of labelme forks) is a polygon;
other shape types (``circle``, ``line``, ``linestrip``, ``point``, ``points``, ``mask``) are no text region and are
ignored (reported).

Transcription: the shape's ``description`` when it has one (labelme 5.2 and later), otherwise its ``label``.
Don't care: the label or description is a don't-care name, or a shape flag named so is true
(``"flags": {"illegible": true}``). The image: ``imagePath`` (Windows ``\\`` read as ``/``) relative
to ``--images`` (default: the JSON file's folder), or its base name there, never a file outside that folder
(``../images/a.jpg`` from ``labels/`` needs ``--images images``; :mod:`.layout`); when no file is found, the
``imageData`` the file embeds."""
import base64
import binascii
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .layout import Sample, find_image
from .shapes import rectangle
from .sources import SourceError, files_with_suffix, number, read_json
from .words import TRUE_VALUES, Word, word_text

POLYGON_TYPES = (None, 'polygon', 'rotation')


def read_labelme(source: str, images: Optional[str] = None) -> Iterator[Sample]:
    """One sample per labelme JSON file: ``source`` is a file or a folder searched recursively."""
    for path in files_with_suffix(source, ('.json',)):
        content = read_json(path)
        if not isinstance(content, dict) or not isinstance(content.get('shapes'), list):
            if os.path.isfile(source):
                raise SourceError(f'{path}: not a labelme file (no "shapes" list)')
            continue  # another JSON file in the folder
        yield _sample(path, content, images)


def _sample(path: str, content: dict, images: Optional[str]) -> Sample:
    reference = str(content.get('imagePath') or '')
    search = [images] if images else [os.path.dirname(path)]
    image_path = find_image(reference, search) if reference else None
    image_bytes = None
    if image_path is None and content.get('imageData'):
        try:
            image_bytes = base64.b64decode(content['imageData'], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise SourceError(f'{path}: "imageData" is not base64') from None
    name = os.path.basename(reference.replace('\\', '/')) or os.path.splitext(os.path.basename(path))[0] + '.png'
    words, ignored = _words(path, content['shapes'])
    size = _size(content)
    return Sample(name=name, words=words, where=path, image_path=image_path, image_bytes=image_bytes,
                  size=size, looked_in=search, ignored=ignored)


def _size(content: dict) -> Optional[Tuple[int, int]]:
    width, height = content.get('imageWidth'), content.get('imageHeight')
    return (int(width), int(height)) if isinstance(width, int) and isinstance(height, int) else None


def _words(path: str, shapes: List[Any]) -> Tuple[List[Word], List[str]]:
    words: List[Word] = []
    ignored: List[str] = []
    for index, shape in enumerate(shapes):
        where = f'{path}: shape {index}'
        if not isinstance(shape, dict):
            ignored.append(f'{where}: not a shape object')
            continue
        kind = shape.get('shape_type')
        raw: List[Any] = shape['points'] if isinstance(shape.get('points'), list) else []
        points = [(number(p[0]), number(p[1])) if isinstance(p, (list, tuple)) and len(p) == 2
                  else (float('nan'), float('nan')) for p in raw]
        if kind == 'rectangle':
            if len(points) != 2:
                points = points[:1]  # reported as degenerate: a rectangle is two corners
            else:
                points = rectangle(points[0][0], points[0][1], points[1][0], points[1][1])
        elif kind not in POLYGON_TYPES:
            ignored.append(f'{where}: shape_type {kind!r} is no text region')
            continue
        flags: Dict[str, Any] = shape['flags'] if isinstance(shape.get('flags'), dict) else {}
        marks = [name for name, value in flags.items() if value is True or str(value).lower() in TRUE_VALUES]
        label = str(shape['label']) if isinstance(shape.get('label'), str) else ''
        description = str(shape['description']) if isinstance(shape.get('description'), str) else ''
        text = description if description.strip() else label
        words.append(Word(points=points, text=word_text(text, marks + [label, description]), where=where))
    return words, ignored
