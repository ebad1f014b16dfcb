"""The ICDAR 2015 (Robust Reading, task 4.1) IoU protocol, generalised to polygons."""
from .iou import DetectionIoUEvaluator, to_polygon

__all__ = ['DetectionIoUEvaluator', 'to_polygon']
