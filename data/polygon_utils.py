"""Making degenerate ground-truth polygons safe for later stages."""
from typing import Dict, List

import numpy as np
from shapely.geometry import MultiPolygon, Polygon
from shapely.validation import make_valid

from .readers import DONT_CARE


def sanitize_line(line: Dict[str, object]) -> Dict[str, object]:
    """Return a line whose polygon later stages can use.

    Fewer than 3 points or zero area -> marked don't care (kept so the mask still blanks it);
    self-intersecting -> replaced by the exterior of the largest part of its valid form.
    """
    points = np.asarray(line['poly'], dtype=np.float64).reshape(-1, 2)
    text = line['text']
    if len(points) < 3 or not np.isfinite(points).all():
        return {'poly': points.tolist(), 'text': DONT_CARE}
    polygon = Polygon(points)
    if polygon.is_valid:
        if polygon.area <= 0:
            return {'poly': points.tolist(), 'text': DONT_CARE}
        return {'poly': points.tolist(), 'text': text}
    repaired = make_valid(polygon)
    parts = [g for g in getattr(repaired, 'geoms', [repaired]) if isinstance(g, (Polygon, MultiPolygon))]
    parts = [p for g in parts for p in getattr(g, 'geoms', [g])]
    if not parts or max(p.area for p in parts) <= 0:
        return {'poly': points.tolist(), 'text': DONT_CARE}
    largest = max(parts, key=lambda p: p.area)
    exterior = np.asarray(largest.exterior.coords)[:-1]
    return {'poly': exterior.tolist(), 'text': text}


def sanitize_lines(lines: List[Dict[str, object]]) -> List[Dict[str, object]]:
    return [sanitize_line(line) for line in lines]
