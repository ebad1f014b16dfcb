"""COCO-Text v2 (``cocotext.v2.json``): ``imgs`` (``id``, ``set``, ``width``, ``height``, ``file_name``),
``anns`` (``mask``: the polygon as flat ``[x1, y1, x2, y2, ...]``, ``bbox`` ``[x, y, w, h]``, ``utf8_string``,
``legibility``, ``language``, ``class``) and ``imgToAnns`` (image id -> annotation ids).

The polygon is ``mask``; an annotation without one takes its ``bbox``. Don't care: ``legibility`` other than
``legible`` (the rule of mmocr's COCO-Text parser), or a don't-care name as the text; with ``english_only``
(``--english_only``) also ``language`` other than ``english`` (``not english``; ``na`` comes with illegible text),
for a set that is to score English text only. Legible text of every language is text by default: a detector
finds text, whatever its language. Every listed image is
a sample (``--subset train`` or ``val`` keeps those of one ``set``): COCO-Text images without text become
negative samples. The images are looked for by ``file_name`` in ``--images`` (COCO's ``train2014/``; default: the JSON
file's folder), never outside it (:mod:`.layout`)."""
import os
from typing import Any, Dict, Iterator, List, Optional

from .layout import Sample, find_image
from .shapes import rectangle
from .sources import SourceError, number, read_json
from .words import Word, word_text

CARED_LEGIBILITY = 'legible'
CARED_LANGUAGE = 'english'


def read_coco_text(source: str, images: Optional[str] = None, subset: Optional[str] = None,
                   english_only: bool = False) -> Iterator[Sample]:
    content = read_json(source)
    if not isinstance(content, dict) or not all(isinstance(content.get(key), dict) for key in ('imgs', 'anns')):
        raise SourceError(f'{source}: not a COCO-Text v2 file (expected the objects "imgs" and "anns")')
    annotations: Dict[str, Any] = content['anns']
    by_image: Dict[str, List[str]] = {str(key): [str(a) for a in value]
                                      for key, value in (content.get('imgToAnns') or {}).items()}
    if not by_image:  # some copies leave imgToAnns out: rebuild it
        for key, annotation in annotations.items():
            by_image.setdefault(str(annotation.get('image_id')), []).append(str(key))
    search = [images or os.path.dirname(source)]
    for key, image in sorted(content['imgs'].items(), key=lambda item: str(item[0])):
        if subset is not None and image.get('set') != subset:
            continue
        file_name = str(image.get('file_name', ''))
        where = f'{source}: image {key}'
        words = [_word(annotations.get(ann_id), f'{where} annotation {ann_id}', english_only)
                 for ann_id in by_image.get(str(key), [])]
        width, height = image.get('width'), image.get('height')
        size = (int(width), int(height)) if isinstance(width, int) and isinstance(height, int) else None
        yield Sample(name=os.path.basename(file_name), words=words, where=where,
                     image_path=find_image(file_name, search), size=size, looked_in=search)


def _word(annotation: Any, where: str, english_only: bool = False) -> Word:
    if not isinstance(annotation, dict):
        return Word(points=[], text='', where=f'{where} (missing from "anns")')
    mask = annotation.get('mask')
    if isinstance(mask, list) and len(mask) >= 2:
        points = [(number(mask[i]), number(mask[i + 1])) for i in range(0, len(mask) - 1, 2)]
    else:
        bbox = annotation.get('bbox')
        x, y, w, h = ([number(v) for v in bbox] if isinstance(bbox, list) and len(bbox) == 4
                      else [float('nan')] * 4)
        points = rectangle(x, y, x + w, y + h)
    marks = []
    if annotation.get('legibility', CARED_LEGIBILITY) != CARED_LEGIBILITY:
        marks.append('illegible')
    if english_only and annotation.get('language', CARED_LANGUAGE) != CARED_LANGUAGE:
        marks.append('ignore')
    text = annotation.get('utf8_string')
    return Word(points=points, text=word_text(text if isinstance(text, str) else '', marks), where=where)
