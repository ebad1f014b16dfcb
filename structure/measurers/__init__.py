"""Measurers (QuadMeasurer, DetEvalMeasurer), the evaluator (DetectionEvaluator), the box_thresh sweep, the
post-processing grid (thresh x unclip ratio), the result-file writer and the protocols (``protocols``). The loop
that feeds an evaluator is ``inference.evaluation.evaluate_on_dataset``."""
from .evaluator import DetectionEvaluator
from .grid import GridCell, format_grid, grid_cells, grid_results
from .quad_measurer import DetEvalMeasurer, QuadMeasurer
from .result_files import result_lines, write_result_file, write_result_files
from .sweep import DEFAULT_THRESHOLDS, format_sweep, sweep_box_thresh

__all__ = ['QuadMeasurer', 'DetEvalMeasurer', 'DetectionEvaluator', 'sweep_box_thresh', 'format_sweep',
           'DEFAULT_THRESHOLDS', 'GridCell', 'grid_cells', 'grid_results', 'format_grid', 'result_lines',
           'write_result_file', 'write_result_files']
