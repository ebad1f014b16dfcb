"""Label Studio's JSON export (a list of tasks): ``data`` names the image (``data.image``, or the first value
that looks like an image path: an upload ``/data/upload/3/1a2b3c4d-photo.jpg``, ``/data/local-files/?d=dir/
photo.jpg``, a URL); ``annotations[].result[]`` holds the regions. The first annotation that is not cancelled is
used (a task with none is not annotated and is left out; one with an empty result is a negative sample).

Regions, grouped by their ``id`` (Label Studio's OCR template gives a region, its labels and its per-region
``textarea`` one id): ``polygonlabels`` / ``polygon`` (``value.points``: ``[[x, y], ...]`` in percent of the
image's width and height) and ``rectanglelabels`` / ``rectangle`` / ``labels`` with ``value.x``, ``y`` (the
top-left corner before rotation), ``width``, ``height`` (percent) and ``rotation`` (degrees, clockwise on
screen, about that corner). Percentages are of ``original_width`` / ``original_height`` (the image's size when
the result does not say), and the rotation is applied in pixels. Other result types are ignored.

Transcription: the region's ``textarea`` text (lines joined by a space), otherwise its first label. Don't care:
a label, a per-region choice or the text is a don't-care name."""
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

from PIL import Image

from ..image_io import IMAGE_EXTENSIONS
from .layout import Sample, find_image, image_size
from .shapes import Point, rotated
from .sources import SourceError, number, read_json
from .words import Word, word_text

UPLOAD_PREFIX = r'^[0-9a-f]{8}-'  # Label Studio prefixes an uploaded file's name with 8 hex digits and '-'
LABEL_KEYS = ('rectanglelabels', 'polygonlabels', 'labels')
GEOMETRY_TYPES = ('rectanglelabels', 'polygonlabels', 'rectangle', 'polygon', 'labels')


def read_label_studio(source: str, images: Optional[str] = None) -> Iterator[Sample]:
    tasks = read_json(source)
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise SourceError(f'{source}: not a Label Studio JSON export (expected a list of tasks)')
    search = [images or os.path.dirname(source)]
    for position, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise SourceError(f'{source}: task {position} is not an object')
        where = f'{source}: task {task.get("id", position)}'
        reference = _image_reference(task.get('data'))
        if reference is None:
            raise SourceError(f'{where}: no image in "data"')
        annotation = next((a for a in task.get('annotations') or [] if isinstance(a, dict)
                           and not a.get('was_cancelled')), None)
        if annotation is None:
            continue  # not annotated (yet): not a negative sample
        image_path = find_image(reference, search, strip_prefix=UPLOAD_PREFIX)
        results = [r for r in annotation.get('result') or [] if isinstance(r, dict)]
        words, ignored = _words(results, where, image_path)
        name = os.path.basename(image_path) if image_path else os.path.basename(reference.split('?d=')[-1])
        yield Sample(name=name, words=words, where=where, image_path=image_path, looked_in=search, ignored=ignored)


def _image_reference(data: Any) -> Optional[str]:
    if not isinstance(data, dict):
        return None
    if isinstance(data.get('image'), str):
        return data['image']
    for value in data.values():
        if isinstance(value, str) and ('?d=' in value or value.lower().split('?')[0].endswith(IMAGE_EXTENSIONS)):
            return value
    return None


def _words(results: List[Dict[str, Any]], where: str, image_path: Optional[str]) -> Tuple[List[Word], List[str]]:
    regions: Dict[str, List[Dict[str, Any]]] = {}
    ignored: List[str] = []
    for index, result in enumerate(results):
        regions.setdefault(str(result.get('id', f'#{index}')), []).append(result)
    words = []
    for index, (region_id, parts) in enumerate(regions.items()):
        region_where = f'{where} region {index} (id {region_id})'
        geometry = next((p for p in parts if p.get('type') in GEOMETRY_TYPES and isinstance(p.get('value'), dict)
                         and ('points' in p['value'] or 'width' in p['value'])), None)
        if geometry is None:
            kinds = sorted({str(p.get('type')) for p in parts})
            if not any(p.get('type') in ('textarea', 'choices') for p in parts):
                ignored.append(f'{region_where}: result type {", ".join(kinds)} is no text region')
            continue
        width, height = _size(geometry, image_path)
        labels: List[str] = []
        choices: List[str] = []
        texts: List[str] = []
        for part in parts:
            value: Dict[str, Any] = part['value'] if isinstance(part.get('value'), dict) else {}
            for key in LABEL_KEYS:
                labels += [str(label) for label in value.get(key) or []]
            choices += [str(choice) for choice in value.get('choices') or []]
            if part.get('type') == 'textarea':
                texts += [str(text) for text in value.get('text') or []]
        text = ' '.join(texts) if texts else (labels[0] if labels else '')
        words.append(Word(points=_points(geometry['value'], width, height), text=word_text(text, labels + choices),
                          where=region_where))
    return words, ignored


def _size(result: Dict[str, Any], image_path: Optional[str]) -> Tuple[float, float]:
    width, height = result.get('original_width'), result.get('original_height')
    if isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0:
        return float(width), float(height)
    if image_path is not None:
        try:
            return tuple(float(v) for v in image_size(image_path))  # type: ignore[return-value]
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            pass  # not an image: write_converted's decoding stops the conversion, naming the file
    return float('nan'), float('nan')


def _points(value: Dict[str, Any], width: float, height: float) -> List[Point]:
    if 'points' in value:
        return [(number(p[0]) * width / 100.0, number(p[1]) * height / 100.0) if isinstance(p, list) and len(p) == 2
                else (float('nan'), float('nan')) for p in value['points'] or []]
    x, y = number(value.get('x')) * width / 100.0, number(value.get('y')) * height / 100.0
    w, h = number(value.get('width')) * width / 100.0, number(value.get('height')) * height / 100.0
    corners = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    degrees = number(value.get('rotation', 0) or 0)
    return rotated(corners, degrees, (x, y)) if degrees else corners
