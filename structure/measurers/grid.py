"""P/R/F over a grid of post-processing settings from one network pass (``eval.py --sweep_thresh / --sweep_unclip``).

The binarisation threshold (``thresh``) and the unclip ratio of the mode (``unclip_ratio`` in box mode,
``polygon_unclip_ratio`` in polygon mode) change the candidates themselves, not only which of them are kept, so
each cell of the grid has its own representer (``SegDetectorRepresenter.replaced``) and its own evaluator, and
all of them are fed the same probability maps (``inference.evaluation.evaluate_on_dataset`` takes a list). Each
cell also sweeps box_thresh (``sweep_box_thresh``): a cell's row is its best box_thresh.

Why a grid and not one setting at a time: the two move together. A region binarised at a lower threshold is wider
than the shrunk kernel the network was trained to draw, so it needs less growing back; lowered alone, ``thresh``
loses (docs/training.md, "Post-processing for a short training").
"""
from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from .evaluator import DetectionEvaluator
from .sweep import DEFAULT_THRESHOLDS


class GridCell(NamedTuple):
    """One setting of the grid: its binarisation threshold, its unclip ratio (of the evaluator's mode) and the
    evaluator (with its own representer) that measures it."""
    thresh: float
    unclip_ratio: float
    evaluator: DetectionEvaluator


def unclip_setting(is_output_polygon: bool) -> str:
    """The representer's argument that grows a mode's detections back: ``polygon_unclip_ratio`` in polygon mode,
    ``unclip_ratio`` in box mode."""
    return 'polygon_unclip_ratio' if is_output_polygon else 'unclip_ratio'


def grid_cells(representer: Any, measurer: Any, is_output_polygon: bool = False,
               thresholds: Optional[Sequence[float]] = None, unclip_ratios: Optional[Sequence[float]] = None,
               sweep_thresholds: Optional[Sequence[float]] = None) -> List[GridCell]:
    """One cell per (thresh, unclip ratio) pair, thresholds outer: ``thresholds`` (None: the representer's
    ``thresh`` alone) x ``unclip_ratios`` (None: the representer's ratio of the mode alone), each an evaluator of
    a copy of ``representer`` with those two settings, sweeping ``sweep_thresholds`` (default
    ``DEFAULT_THRESHOLDS``). ValueError for an empty list, for a value the representer refuses (naming it), or for
    a representer that cannot be copied with other settings (it needs ``replaced``)."""
    if not callable(getattr(representer, 'replaced', None)):
        raise ValueError('the post-processing grid needs a representer with replaced(...) (such as '
                         f'SegDetectorRepresenter), got {type(representer).__name__}')
    setting = unclip_setting(is_output_polygon)
    thresholds = [float(getattr(representer, 'thresh'))] if thresholds is None else [float(v) for v in thresholds]
    ratios = [float(getattr(representer, setting))] if unclip_ratios is None else [float(v) for v in unclip_ratios]
    if not thresholds or not ratios:
        raise ValueError('the post-processing grid needs at least one thresh and one unclip ratio, got '
                         f'thresh {thresholds} and {setting} {ratios}')
    sweep = tuple(DEFAULT_THRESHOLDS if sweep_thresholds is None else sweep_thresholds)
    cells = []
    for thresh in thresholds:
        for ratio in ratios:
            try:
                variant = representer.replaced(thresh=thresh, **{setting: ratio})
            except ValueError as error:
                raise ValueError(f'post-processing grid: thresh {thresh}, {setting} {ratio}: {error}') from None
            cells.append(GridCell(thresh, ratio, DetectionEvaluator(variant, measurer, is_output_polygon,
                                                                    sweep_thresholds=sweep)))
    return cells


def grid_results(cells: Sequence[GridCell]) -> Dict[str, Any]:
    """After the evaluators have been fed: ``{'rows': [{'thresh', 'unclip_ratio', 'box_thresh', 'precision',
    'recall', 'fmeasure'}, ...], 'best': the row of highest fmeasure}``, one row per cell in cell order, each at
    its best box_thresh (the lowest on ties, as ``sweep_box_thresh``); the best row is the first on ties.
    ValueError when there are no cells, or (``DetectionEvaluator.evaluate``) when a cell measured no image."""
    rows = []
    for cell in cells:
        best = cell.evaluator.evaluate()['sweep']['best']
        rows.append({'thresh': cell.thresh, 'unclip_ratio': cell.unclip_ratio, **best})
    if not rows:
        raise ValueError('grid_results: expected at least one cell')
    top = max(row['fmeasure'] for row in rows)
    return {'rows': rows, 'best': next(row for row in rows if row['fmeasure'] == top)}


def format_grid(grid: Dict[str, Any], is_output_polygon: bool = False) -> str:
    """``grid_results``' dict (``rows``, ``best``) as a Markdown table, the best row marked; the unclip column is
    named after the mode's setting (``is_output_polygon``: ``polygon_unclip_ratio``, else ``unclip_ratio``)."""
    setting = unclip_setting(is_output_polygon)
    lines = [f'| thresh | {setting} | best box_thresh | precision | recall | fmeasure |', '|---|---|---|---|---|---|']
    for row in grid['rows']:
        mark = ' **best**' if row is grid['best'] else ''
        lines.append(f"| {row['thresh']:g} | {row['unclip_ratio']:g} | {row['box_thresh']:.2f}{mark} | "
                     f"{row['precision']:.4f} | {row['recall']:.4f} | {row['fmeasure']:.4f} |")
    return '\n'.join(lines)
