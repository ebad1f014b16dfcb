"""CVAT's "CVAT for images 1.1" XML export: ``<image name= width= height=>`` elements holding ``<polygon
points="x1,y1;x2,y2;...">`` and ``<box xtl= ytl= xbr= ybr= rotation=>`` (``rotation``: degrees, clockwise on
screen, about the box's centre), each with a ``label`` and ``<attribute name="...">value</attribute>`` children.
Other shapes (``polyline``, ``points``, ``ellipse``, ``mask``, ``cuboid``, ``skeleton``, ``tag``) are no text
region and are ignored (reported). A "CVAT for video" export (``<track>``) is refused: export for images.

Transcription: the attribute ``transcription`` or ``text``, otherwise the label name. Don't care: the label name
is a don't-care name, an attribute's value is one (``legibility = illegible``, ``transcription = ###``), or an
attribute named so is true (``illegible = true``). Images: ``name`` relative to ``--images`` (default: the XML's
folder), or its base name there; never a file outside that folder (:mod:`.layout`)."""
import os
import xml.etree.ElementTree as ElementTree
from typing import Iterator, List, Optional

from .layout import Sample, find_image
from .shapes import Point, rectangle, rotated
from .sources import SourceError, number
from .words import TRUE_VALUES, Word, is_dont_care_name, word_text

REGIONS = ('polygon', 'box')
TEXT_ATTRIBUTES = ('transcription', 'text')


def read_cvat(source: str, images: Optional[str] = None) -> Iterator[Sample]:
    try:
        root = ElementTree.parse(source).getroot()
    except (ElementTree.ParseError, OSError) as error:
        raise SourceError(f'{source}: not a readable XML file ({error})') from None
    if root.tag != 'annotations':
        raise SourceError(f'{source}: not a CVAT export (root element <{root.tag}>, expected <annotations>)')
    if root.find('track') is not None:
        raise SourceError(f'{source}: a "CVAT for video" export (<track> elements); export the task as '
                          f'"CVAT for images 1.1"')
    search = [images or os.path.dirname(source)]
    for position, image in enumerate(root.iter('image')):
        reference = image.get('name', '')
        where = f'{source}: image {reference or position!r}'
        words: List[Word] = []
        ignored: List[str] = []
        for index, shape in enumerate(image):
            shape_where = f'{where} shape {index} ({shape.tag})'
            if shape.tag not in REGIONS:
                ignored.append(f'{shape_where}: no text region')
                continue
            words.append(Word(points=_points(shape), text=_text(shape), where=shape_where))
        width, height = image.get('width'), image.get('height')
        size = (int(width), int(height)) if width and height and width.isdigit() and height.isdigit() else None
        yield Sample(name=os.path.basename(reference.replace('\\', '/')), words=words, where=where,
                     image_path=find_image(reference, search) if reference else None, size=size,
                     looked_in=search, ignored=ignored)


def _points(shape: ElementTree.Element) -> List[Point]:
    if shape.tag == 'box':
        x0, y0, x1, y1 = (number(shape.get(key)) for key in ('xtl', 'ytl', 'xbr', 'ybr'))
        corners = rectangle(x0, y0, x1, y1)
        degrees = number(shape.get('rotation', '0'))
        return rotated(corners, degrees, ((x0 + x1) / 2, (y0 + y1) / 2)) if degrees else corners
    points = []
    for pair in (shape.get('points') or '').split(';'):
        values = pair.split(',')
        points.append((number(values[0]), number(values[1])) if len(values) == 2 else (float('nan'),) * 2)
    return points


def _text(shape: ElementTree.Element) -> str:
    label = shape.get('label', '')
    attributes = {element.get('name', ''): (element.text or '').strip() for element in shape.iter('attribute')}
    text = next((attributes[name] for name in TEXT_ATTRIBUTES if attributes.get(name)), label)
    marks: List[str] = [label] + list(attributes.values())
    marks += [name for name, value in attributes.items() if is_dont_care_name(name) and value.lower() in TRUE_VALUES]
    return word_text(text, marks)
