"""QuadMeasurer / DetEvalMeasurer on batches, the box_thresh sweep and the result files."""
import numpy as np
import pytest
import torch

from structure.measurers import (DetEvalMeasurer, QuadMeasurer, format_sweep, sweep_box_thresh,
                                 write_result_files)
from structure.representers import SegDetectorRepresenter


def box(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def test_the_representers_selection_at_box_thresh_is_what_gets_measured():
    batch = {'polygons': [[box(0, 0, 10, 10), box(20, 0, 30, 10)]], 'ignore_tags': [np.array([False, False])]}
    boxes, scores = np.stack([box(0, 0, 10, 10), box(20, 0, 30, 10)]).astype(np.int32), [0.9, 0.5]
    measurer = QuadMeasurer()
    kept = SegDetectorRepresenter(box_thresh=0.6).select(boxes, scores)
    results = measurer.validate_measure(batch, ([kept[0]], [kept[1]]))
    assert (results[0]['matched'], results[0]['det_care']) == (1, 1)
    output = ([boxes], [scores])
    assert measurer.gather_measure(results) == {'precision': 1.0, 'recall': 0.5, 'fmeasure': pytest.approx(2 / 3)}
    results = measurer.validate_measure(batch, output, is_output_polygon=True)
    assert measurer.gather_measure(results) == {'precision': 1.0, 'recall': 1.0, 'fmeasure': 1.0}
    # per-batch lists of results are accepted too
    assert measurer.gather_measure([results, results])['fmeasure'] == 1.0


def test_representer_to_measurer_end_to_end():
    prob = np.zeros((100, 200), dtype=np.float32)
    prob[20:30, 10:50] = 0.9
    prob[60:80, 100:180] = 0.9
    batch = {'shape': [(200, 400)], 'ignore_tags': [[False, False, True]],
             # ground truth in original (2x) coordinates: the shrunk text plus its border, and one don't care
             'polygons': [[box(10, 30, 108, 68), box(176, 96, 382, 182), box(0, 150, 40, 190)]]}
    output = SegDetectorRepresenter().represent(batch, torch.from_numpy(prob)[None, None])
    for measurer in (QuadMeasurer(), DetEvalMeasurer()):
        metrics = measurer.gather_measure(measurer.validate_measure(batch, output))
        assert metrics == {'precision': 1.0, 'recall': 1.0, 'fmeasure': 1.0}


def test_measurer_errors_name_the_problem():
    measurer = QuadMeasurer()
    with pytest.raises(KeyError, match='ignore_tags'):
        measurer.validate_measure({'polygons': [[]]}, ([[]], [[]]))
    with pytest.raises(ValueError, match='one ignore tag per polygon'):
        measurer.validate_measure({'polygons': [[box(0, 0, 1, 1)]], 'ignore_tags': [[]]}, ([[]], [[]]))
    with pytest.raises(ValueError, match='boxes_batch, scores_batch'):
        measurer.validate_measure({'polygons': [[]], 'ignore_tags': [[]]}, [[]])
    with pytest.raises(ValueError, match='protocol'):
        QuadMeasurer(protocol='voc')


def sweep_outputs():
    return [{'polygons': [box(0, 0, 10, 10), box(20, 0, 30, 10)], 'ignore_tags': [False, False],
             'boxes': [box(0, 0, 10, 10), box(20, 0, 30, 10), box(50, 50, 60, 60)], 'scores': [0.9, 0.5, 0.4]},
            {'polygons': [], 'ignore_tags': [], 'boxes': [], 'scores': []}]


def test_sweep_numbers_by_hand():
    sweep = sweep_box_thresh(sweep_outputs())
    rows = {row['box_thresh']: row for row in sweep['rows']}
    assert list(rows) == [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9]
    assert rows[0.4]['precision'] == pytest.approx(2 / 3) and rows[0.4]['recall'] == 1.0  # all three kept
    assert rows[0.45]['fmeasure'] == 1.0 and rows[0.5]['fmeasure'] == 1.0  # the false positive is gone
    assert (rows[0.55]['precision'], rows[0.55]['recall']) == (1.0, 0.5)  # only the 0.9 detection
    assert rows[0.9]['recall'] == 0.5  # score >= threshold is kept
    assert sweep['best']['box_thresh'] == 0.45
    table = format_sweep(sweep)
    assert '| 0.45 **best** |' in table and table.count('\n') == 14


@pytest.mark.parametrize('protocol', ['iou', 'deteval'])
def test_sweep_equals_measuring_each_threshold_from_scratch(protocol):
    rng = np.random.default_rng(0)
    outputs = []
    for _ in range(4):
        gts = [box(x, y, x + rng.integers(20, 60), y + rng.integers(8, 20)) for x, y in rng.integers(0, 300, (6, 2))]
        dets = [polygon + rng.normal(0, 4, polygon.shape).astype(np.float32) for polygon in gts[:5]]
        dets += [box(x, y, x + 30, y + 10) for x, y in rng.integers(0, 300, (2, 2))]
        outputs.append({'polygons': gts, 'ignore_tags': rng.uniform(size=6) < 0.2,
                        'boxes': dets, 'scores': rng.uniform(0.3, 1.0, len(dets)).tolist()})
    sweep = sweep_box_thresh(outputs, protocol=protocol)
    measurer = QuadMeasurer(protocol=protocol)
    for row in sweep['rows']:
        results = []
        for output in outputs:
            kept = [index for index, score in enumerate(output['scores']) if score >= row['box_thresh']]
            detections = ([[output['boxes'][index] for index in kept]], [[output['scores'][index] for index in kept]])
            results += measurer.validate_measure({'polygons': [output['polygons']],
                                                  'ignore_tags': [output['ignore_tags']]}, detections)
        direct = measurer.gather_measure(results)
        assert (row['precision'], row['recall'], row['fmeasure']) == (
            direct['precision'], direct['recall'], direct['fmeasure'])
    assert len({row['fmeasure'] for row in sweep['rows']}) > 1


def test_result_files(tmp_path):
    outputs = [{'filename': '/data/test_images/img_7.jpg', 'boxes': np.array([[[1, 2], [3, 2], [3, 4], [1, 4]]]),
                'scores': [0.87654321]},
               {'filename': 'img_8.png', 'boxes': [np.array([[0, 0], [5, 0], [6, 3], [2, 5], [0, 4]])],
                'scores': [0.5]},
               {'filename': 'img_9.jpg', 'boxes': [], 'scores': []}]
    paths = write_result_files(str(tmp_path / 'res'), outputs)
    assert [p.split('/')[-1] for p in paths] == ['res_img_7.txt', 'res_img_8.txt', 'res_img_9.txt']
    assert open(paths[0]).read() == '1,2,3,2,3,4,1,4,0.876543\n'
    assert open(paths[1]).read() == '0,0,5,0,6,3,2,5,0,4,0.500000\n'
    assert open(paths[2]).read() == ''
    write_result_files(str(tmp_path / 'plain'), outputs[:1], with_score=False)
    assert open(tmp_path / 'plain' / 'res_img_7.txt').read() == '1,2,3,2,3,4,1,4\n'
    with pytest.raises(ValueError, match='res_img_7.txt'):
        write_result_files(str(tmp_path / 'dup'), [outputs[0], dict(outputs[0], filename='other/img_7.png')])
