"""Measurers (QuadMeasurer, DetEvalMeasurer), the evaluation engine (DetectionEvaluator), the box_thresh sweep and
the result-file writer."""
from .evaluator import DetectionEvaluator, usable_batches
from .quad_measurer import DetEvalMeasurer, QuadMeasurer
from .result_files import result_lines, write_result_file, write_result_files
from .sweep import DEFAULT_THRESHOLDS, filter_by_score, format_sweep, sweep_box_thresh

__all__ = ['QuadMeasurer', 'DetEvalMeasurer', 'DetectionEvaluator', 'usable_batches', 'sweep_box_thresh', 'format_sweep',
           'filter_by_score', 'DEFAULT_THRESHOLDS', 'result_lines', 'write_result_file', 'write_result_files']
