"""Ground-truth sanitizers: degenerate polygons made safe for the training label makers (training only).

Evaluation must not use this: the official ICDAR 2015 script and Total-Text's DetEval score every
ground-truth polygon as annotated, so :class:`data.ImageDataset` sanitizes only when ``is_training``.
"""
from typing import Dict, List

import numpy as np
from shapely.geometry import Polygon
from shapely.validation import make_valid

from .geometry import polygon_parts
from .image_io import DataError
from .readers import DONT_CARE

# The two other cyclic orders of four corners: a self-crossing quadrilateral ABCD becomes simple as
# ACBD (B and C swapped) or ABDC (C and D swapped); the third order, ADCB, is ABCD reversed.
_QUAD_ORDERS = ((0, 2, 1, 3), (0, 1, 3, 2))


def _dont_care(points: np.ndarray) -> Dict[str, object]:
    return {'poly': points.tolist(), 'text': DONT_CARE}


def sanitize_line(line: Dict[str, object], where: str = 'ground truth') -> Dict[str, object]:
    """Return a line (``{'poly': [[x, y], ...], 'text': str}``, px) that the training label makers can use.

    * a non-finite coordinate -> :class:`DataError` naming ``where`` (the readers already reject them);
    * fewer than 3 points, or zero area -> marked don't care (``###``), kept so that the mask blanks it;
    * a simple polygon -> unchanged;
    * a self-crossing quadrilateral (a "bow-tie": almost always two neighbouring corners clicked in the
      wrong order) -> the same four corners in the one order that makes a simple quadrilateral (four
      points with two crossing sides are in convex position, so that order exists and is unique); its
      area is the whole word's, not one triangle's;
    * any other invalid polygon whose valid form (``shapely.make_valid``) is one polygon without holes
      (a spike, a repeated loop) -> that polygon's exterior: no area is lost;
    * otherwise (the valid form has several parts or holes, e.g. a 14-point curve whose sides cross) ->
      don't care with the convex hull of the points as its region: there is no unique repair, keeping
      the parts would train the text around each crossing as background, and the hull blanks every
      region the annotator can have meant (the original, MhLiao/DB, blanked bow-ties with a zero
      shoelace area and trained the others as clipper's offset of the raw points).
    """
    points = np.asarray(line['poly'], dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(points).all():
        raise DataError(f'{where}: non-finite coordinate in polygon {points.tolist()}')
    text = line['text']
    if len(points) < 3:
        return _dont_care(points)
    polygon = Polygon(points)
    if polygon.is_valid:
        return {'poly': points.tolist(), 'text': text} if polygon.area > 0 else _dont_care(points)
    parts = polygon_parts(make_valid(polygon))
    if not parts:
        return _dont_care(points)
    if len(points) == 4 and len(parts) > 1:
        for order in _QUAD_ORDERS:
            reordered = points[list(order)]
            candidate = Polygon(reordered)
            if candidate.is_valid and candidate.area > 0:
                return {'poly': reordered.tolist(), 'text': text}
    if len(parts) == 1 and not parts[0].interiors:
        return {'poly': np.asarray(parts[0].exterior.coords)[:-1].tolist(), 'text': text}
    hull = polygon.convex_hull
    if not isinstance(hull, Polygon) or hull.area <= 0:
        return _dont_care(points)
    return _dont_care(np.asarray(hull.exterior.coords)[:-1])


def sanitize_lines(lines: List[Dict[str, object]], where: str = 'ground truth') -> List[Dict[str, object]]:
    """:func:`sanitize_line` on each line; ``where`` (file, or file:line) names the source in errors."""
    return [sanitize_line(line, where) for line in lines]
