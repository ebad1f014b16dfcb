"""The ICDAR 2015 (Robust Reading, task 4.1) IoU protocol, generalised to polygons.

``DetectionIoUEvaluator(invalid_polygons='official')`` reproduces the official script's arithmetic for every
polygon; ``invalid_polygons='drop'`` the original DBNet evaluator, which leaves out invalid polygons
(``INVALID_POLYGONS`` lists the allowed values).
"""
from .iou import INVALID_POLYGONS, DetectionIoUEvaluator, IoUTables, contour_area, even_odd_region, to_polygon

__all__ = ['DetectionIoUEvaluator', 'IoUTables', 'INVALID_POLYGONS', 'contour_area', 'even_odd_region', 'to_polygon']
