"""The post-processing grid (thresh x unclip ratio, eval.py --sweep_thresh / --sweep_unclip): hand-worked cells,
each cell against a plain run of its settings, the representer copy it is built on, and the command line."""
import json

import numpy as np
import pytest
import torch

import training_helpers as helpers
from structure.measurers import QuadMeasurer, format_grid, grid_cells, grid_results
from structure.representers import SegDetectorRepresenter

HEIGHT, WIDTH = 80, 96
HALO = 6  # px of the fainter band around each word's kernel


def _grown_rectangle(rows, cols, ratio):
    """The pixel region's rectangle (pixel centres) grown by the representer's unclip distance
    D = area * ratio / perimeter: what a box-mode detection of the region covers."""
    (y0, y1), (x0, x1) = rows, cols
    width, height = x1 - 1 - x0, y1 - 1 - y0
    distance = width * height * ratio / (2 * (width + height))
    x0, y0, x1, y1 = x0 - distance, y0 - distance, x1 - 1 + distance, y1 - 1 + distance
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


# Two words of the same shape, each a kernel of 8 x 50 px inside a band of HALO px: the map of a network trained
# briefly, whose words are wider and fainter than the kernels it was trained on. Word A is clear (kernel 0.5,
# band 0.25), word B faint (kernel 0.28, band 0.22: nothing of it reaches the paper's thresh 0.3). The ground
# truth is each kernel grown back at the paper's unclip ratio 1.5.
KERNELS = {'A': ((28, 36), (20, 70), 0.5, 0.25), 'B': ((58, 66), (20, 70), 0.28, 0.22)}


def _map_and_batch():
    prob = torch.zeros(1, 1, HEIGHT, WIDTH)
    polygons = []
    for (y0, y1), (x0, x1), kernel, band in KERNELS.values():
        prob[0, 0, y0 - HALO:y1 + HALO, x0 - HALO:x1 + HALO] = band
        prob[0, 0, y0:y1, x0:x1] = kernel
        polygons.append(_grown_rectangle((y0, y1), (x0, x1), 1.5))
    batch = helpers.collect([{'image': torch.zeros(3, HEIGHT, WIDTH), 'polygons': polygons,
                              'ignore_tags': np.array([False, False]), 'shape': (HEIGHT, WIDTH),
                              'filename': 'faint.png'}])
    return batch, prob


def test_grid_cells_worked_out_by_hand_thresh_and_unclip_move_together():
    # Ground truth: a kernel (w 49, h 7 between pixel centres) grown by D = 49 * 7 * 1.5 / 112 = 4.59: 58.2 x 16.2.
    # thresh 0.3 finds word A's kernel alone; grown at 1.5 it is A's ground truth (IoU 1), grown at 0.1 (D 0.31,
    # 49.6 x 7.6) it covers 0.40 of it: no match. thresh 0.2 finds both words with their bands (w 61, h 19):
    # grown at 1.5 (D 10.9, 82.7 x 40.7) the ground truth is 0.28 of the box: no match; grown at 0.1 (D 0.72,
    # 62.4 x 20.4) it holds the ground truth at IoU 0.74: both match. (The representer grows by whole pixels and
    # rounds corners to pixels: its boxes give IoU 0.94, 0.36, 0.28-0.30 and 0.72, each on the same side of 0.5.)
    batch, prob = _map_and_batch()
    representer = SegDetectorRepresenter(thresh=0.3, box_thresh=0.2, unclip_ratio=1.5)
    cells = grid_cells(representer, QuadMeasurer(), thresholds=[0.2, 0.3], unclip_ratios=[0.1, 1.5],
                       sweep_thresholds=[0.2])
    for cell in cells:
        cell.evaluator.process(batch, cell.evaluator.detect(batch, prob))
    grid = grid_results(cells)
    expected = {(0.2, 0.1): (1.0, 1.0, 1.0), (0.2, 1.5): (0.0, 0.0, 0.0), (0.3, 0.1): (0.0, 0.0, 0.0),
                (0.3, 1.5): (1.0, 0.5, 2 / 3)}
    for row in grid['rows']:
        assert (row['precision'], row['recall'], row['fmeasure']) == pytest.approx(
            expected[row['thresh'], row['unclip_ratio']]), row
    assert (grid['best']['thresh'], grid['best']['unclip_ratio']) == (0.2, 0.1)
    assert [(row['thresh'], row['unclip_ratio']) for row in grid['rows']] == [(0.2, 0.1), (0.2, 1.5), (0.3, 0.1),
                                                                              (0.3, 1.5)]
    assert (representer.thresh, representer.unclip_ratio) == (0.3, 1.5)  # the experiment's object is not changed
    table = format_grid(grid)
    assert table.splitlines()[0] == '| thresh | unclip_ratio | best box_thresh | precision | recall | fmeasure |'
    assert '| 0.2 | 0.1 | 0.20 **best** | 1.0000 | 1.0000 | 1.0000 |' in table


def test_each_cell_equals_a_plain_run_of_its_settings_in_both_modes():
    batch, prob = _map_and_batch()
    measurer = QuadMeasurer()
    base = SegDetectorRepresenter(thresh=0.3, box_thresh=0.5, unclip_ratio=1.5, polygon_unclip_ratio=2.0,
                                  max_candidates=50)
    sweep = [0.2, 0.25, 0.3, 0.4]
    for polygon in (False, True):
        cells = grid_cells(base, measurer, polygon, [0.15, 0.2, 0.3], [0.3, 0.8, 1.5, 2.0], sweep)
        assert len(cells) == 12
        for cell in cells:
            cell.evaluator.process(batch, cell.evaluator.detect(batch, prob))
            kept = cell.evaluator.representer
            # the mode's ratio varies, the other mode's and every other setting stay the experiment's
            assert (kept.unclip_ratio, kept.polygon_unclip_ratio) == (
                (1.5, cell.unclip_ratio) if polygon else (cell.unclip_ratio, 2.0))
            assert (kept.thresh, kept.box_thresh, kept.max_candidates) == (cell.thresh, 0.5, 50)
        for row in grid_results(cells)['rows']:
            ratio = {'polygon_unclip_ratio' if polygon else 'unclip_ratio': row['unclip_ratio']}
            plain = SegDetectorRepresenter(thresh=row['thresh'], box_thresh=row['box_thresh'], max_candidates=50,
                                           **{'unclip_ratio': 1.5, 'polygon_unclip_ratio': 2.0, **ratio})
            direct = measurer.gather_measure(measurer.validate_measure(
                batch, plain.represent(batch, prob, is_output_polygon=polygon), is_output_polygon=polygon))
            assert (row['precision'], row['recall'], row['fmeasure']) == pytest.approx(
                (direct['precision'], direct['recall'], direct['fmeasure'])), (polygon, row)


def test_replaced_copies_every_other_setting_and_checks_the_new_ones():
    from inference.detector import representer_settings
    original = SegDetectorRepresenter(thresh=0.25, box_thresh=0.6, max_candidates=7, unclip_ratio=1.7,
                                      polygon_unclip_ratio=2.2, min_size=4, score_mode='slow',
                                      cap_before_filtering=True, polygon_box_thresh=0.45)
    copy = original.replaced(thresh=0.15, unclip_ratio=0.8)
    assert representer_settings(copy) == {**representer_settings(original), 'thresh': 0.15, 'unclip_ratio': 0.8}
    assert (original.thresh, original.unclip_ratio) == (0.25, 1.7)
    with pytest.raises(ValueError, match='thresh'):
        original.replaced(thresh=1.5)
    with pytest.raises(TypeError, match="'unclip'"):
        original.replaced(unclip=0.8)
    with pytest.raises(ValueError, match=r'thresh 0\.3, unclip_ratio -1\.0: unclip_ratio'):
        grid_cells(original, QuadMeasurer(), thresholds=[0.3], unclip_ratios=[-1.0])
    with pytest.raises(ValueError, match='replaced'):
        grid_cells(object(), QuadMeasurer(), thresholds=[0.3])


def test_eval_grid_on_the_command_line(tmp_path, monkeypatch, capsys):
    import eval as eval_script
    from inference_helpers import REPO_ROOT, small_evaluation
    experiment, checkpoint, _ = small_evaluation(str(tmp_path))
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(eval_script, 'run_name', lambda args: str(tmp_path / 'run'))
    metrics = tmp_path / 'metrics.jsonl'
    assert eval_script.main([experiment, '--resume', checkpoint, '--sweep', '--metrics', str(metrics),
                             '--sweep_thresh', '0.3', '0.5', '--sweep_unclip', '1.5', '2.5']) == 0
    out = capsys.readouterr().out
    assert 'post-processing grid (each setting at its best box_thresh)' in out
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    grid = [record for record in records if record['type'] == 'grid']
    assert [(record['thresh'], record['unclip_ratio']) for record in grid] == [(0.3, 1.5), (0.3, 2.5), (0.5, 1.5),
                                                                               (0.5, 2.5)]
    assert sum(record['best'] for record in grid) == 1
    # the cell of the experiment's own settings (thresh 0.5, unclip 1.5) is the plain --sweep's best row
    best = next(record for record in records if record['type'] == 'sweep' and record['best'])
    own = grid[2]
    assert (own['box_thresh'], own['fmeasure'], own['precision']) == (best['box_thresh'], best['fmeasure'],
                                                                     best['precision'])
    # polygon mode, set by the experiment rather than --polygon: the grid varies polygon_unclip_ratio and says so
    polygon_metrics = tmp_path / 'polygon.jsonl'
    assert eval_script.main([experiment, '--resume', checkpoint, '--metrics', str(polygon_metrics),
                             '--sweep_unclip', '2.0', '3.0', '--opt', 'evaluation.is_output_polygon=true']) == 0
    assert '| thresh | polygon_unclip_ratio | best box_thresh |' in capsys.readouterr().out
    lines = [json.loads(line) for line in polygon_metrics.read_text().splitlines()]
    assert all(line['polygon'] for line in lines)
    assert [(line['thresh'], line['polygon_unclip_ratio']) for line in lines if line['type'] == 'grid'] == [
        (0.5, 2.0), (0.5, 3.0)]
    assert eval_script.main([experiment, '--resume', checkpoint, '--speed', '--sweep_thresh', '0.3']) == 2
    assert '--speed' in capsys.readouterr().err
