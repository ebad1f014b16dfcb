"""eval.py and demo.py end to end on a tiny synthetic data set with a random-init model."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

import demo
import eval as eval_script
from inference_helpers import REPO_ROOT, make_synthetic_set, save_checkpoint, tiny_model, write_experiment

# thresholds at which the random model's noisy map gives a handful of detections per image
THRESH, BOX_THRESH = 0.5, 0.4


@pytest.fixture(scope='module')
def setup(module_tmp):
    tmp = module_tmp('inference')
    data_dir = make_synthetic_set(str(tmp / 'data'), test=3, size=128)
    experiment = write_experiment(str(tmp), data_dir, 'deformable_resnet18', thresh=THRESH, box_thresh=BOX_THRESH)
    checkpoint = save_checkpoint(tiny_model('deformable_resnet18'), str(tmp / 'model.pth'))
    return {'tmp': tmp, 'data': data_dir, 'exp': experiment, 'ckpt': checkpoint}


@pytest.fixture(autouse=True)
def in_repo_root(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(eval_script, 'run_name', lambda args: str(tmp_path / 'run'))  # workspace under tmp


def direct_detections(setup):
    """Model, representer and measurer called directly over the experiment's loader."""
    from concern.config import load_config
    from experiment import Experiment
    experiment = Experiment.build(load_config(setup['exp']), ('structure', 'evaluation'))
    model = tiny_model('deformable_resnet18')
    model.load_state_dict(torch.load(setup['ckpt'], weights_only=True))
    structure = experiment.structure
    per_image, measures = {}, []
    for batch in experiment.evaluation.data_loaders['synthetic']:
        with torch.no_grad():
            pred = model(batch['image'], training=False)
        output = structure.representer.represent(batch, pred)
        measures += structure.measurer.validate_measure(batch, output)  # at the representer's box_thresh
        per_image[os.path.basename(batch['filename'][0])] = (output[0][0], output[1][0])
    return per_image, structure.measurer.gather_measure(measures)


def write_ground_truth(setup, image, boxes, extra=''):
    """``image``'s ground truth := ``boxes`` as cared words (plus the raw lines ``extra``)."""
    with open(os.path.join(setup['data'], 'test_gts', image + '.txt'), 'w') as handle:
        handle.writelines(','.join(str(int(v)) for v in box.reshape(-1)) + ',word\n' for box in boxes)
        handle.write(extra)


def read_lines(path):
    with open(path) as handle:
        rows = [line.strip().split(',') for line in handle if line.strip()]
    return [np.array([int(v) for v in row[:-1]]).reshape(-1, 2) for row in rows], [float(row[-1]) for row in rows]


def test_eval_metrics_and_result_files_equal_direct_measurer(setup, capsys):
    # Ground truth of img_1 := the model's own detections there, so the metrics are not all zero.
    detections, _ = direct_detections(setup)
    boxes, _ = detections['img_1.jpg']
    assert len(boxes) >= 2
    write_ground_truth(setup, 'img_1.jpg', boxes)
    detections, expected = direct_detections(setup)
    assert expected['recall'] > 0 and expected['precision'] > 0
    result_dir = setup['tmp'] / 'res'
    code = eval_script.main([setup['exp'], '--resume', setup['ckpt'], '--device', 'cpu', '--result_dir',
                             str(result_dir), '--sweep', '--visualize'])
    out = capsys.readouterr().out
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith('synthetic: precision'))
    assert f"precision {expected['precision']:.4f}" in line and f"recall {expected['recall']:.4f}" in line
    assert f"fmeasure {expected['fmeasure']:.4f}" in line
    assert '| 0.40 ' in out  # the sweep row at the representer's box_thresh
    sweep_row = next(row for row in out.splitlines() if row.startswith('| 0.40'))
    assert f"{expected['fmeasure']:.4f}" in sweep_row
    for name, (boxes, scores) in detections.items():
        written_boxes, written_scores = read_lines(result_dir / f'res_{os.path.splitext(name)[0]}.txt')
        assert len(written_boxes) == len(boxes)
        assert all(np.array_equal(a, b.reshape(-1, 2)) for a, b in zip(written_boxes, boxes))
        assert np.allclose(written_scores, scores, atol=1e-6)


def test_eval_counts_invalid_ground_truth_as_the_official_script_and_the_sweep_follows_the_switch(setup, capsys):
    # img_1's ground truth := the model's own detections plus one cared word whose polygon has no area. The official
    # ICDAR 2015 script counts that word (it can never be matched: recall n / (n + 1)); the original DBNet
    # evaluator's 'drop' leaves it out (recall 1). The box_thresh sweep must score as the measurer does.
    detections, _ = direct_detections(setup)
    boxes, _ = detections['img_1.jpg']
    assert len(boxes) >= 2
    write_ground_truth(setup, 'img_1.jpg', boxes, extra='10,10,20,10,30,10,15,10,flat\n')
    for image in ('img_2.jpg', 'img_3.jpg'):  # no ground truth elsewhere: only img_1 counts for recall
        write_ground_truth(setup, image, [])
    figures = {}
    for mode in ('official', 'drop'):
        code = eval_script.main([setup['exp'], '--resume', setup['ckpt'], '--device', 'cpu', '--sweep',
                                 '--box_thresh', '0.4', '--opt', f'structure.measurer.invalid_polygons={mode}'])
        out = capsys.readouterr().out
        assert code == 0
        line = next(line for line in out.splitlines() if line.startswith('synthetic: precision'))
        recall = float(line.split('recall ')[1].split()[0])
        sweep_row = next(row for row in out.splitlines() if row.startswith('| 0.40'))
        assert sweep_row.split('|')[3].strip() == f'{recall:.4f}', (mode, line, sweep_row)
        figures[mode] = recall
    count = len(boxes)
    assert figures['drop'] == pytest.approx(1.0, abs=1e-4)
    assert figures['official'] == pytest.approx(count / (count + 1), abs=1e-4)


def test_eval_speed_reports_every_stage(setup, capsys):
    code = eval_script.main([setup['exp'], '--resume', setup['ckpt'], '--device', 'cpu', '--speed', '--warmup', '1'])
    out = capsys.readouterr().out
    assert code == 0
    for needle in ('data (sequential)', 'forward (sequential)', 'postprocess (sequential)',
                   'end-to-end (sequential)', 'end-to-end (pipelined)', 'device cpu', 'dtype fp32', 'threads',
                   'input size (H x W): 96x128', 'pipelined detections identical to sequential: yes'):
        assert needle in out, needle


def test_demo_on_a_folder_writes_expected_files(setup, tmp_path, capsys):
    images = tmp_path / 'images'
    shutil.copytree(os.path.join(setup['data'], 'test_images'), images)
    (images / 'broken.png').write_bytes(b'\x89PNG not really')
    out_dir = tmp_path / 'out'
    code = demo.main([setup['exp'], '--resume', setup['ckpt'], '--device', 'cpu', '--image_path', str(images),
                      '--image_short_side', '96', '--thresh', str(THRESH), '--box_thresh', str(BOX_THRESH),
                      '--visualize', '--heatmap', '--result_dir', str(out_dir)])
    captured = capsys.readouterr()
    assert code == 0
    assert 'broken.png' in captured.err + captured.out and '1 unreadable image(s) skipped' in captured.out
    expected = {f'img_{i}{suffix}' for i in (1, 2, 3) for suffix in ('.txt', '.jpg', '_heatmap.jpg')}
    assert set(os.listdir(out_dir)) == expected
    # the demo's detections are the representer's on the resized image: one line per detection, in image bounds
    import cv2
    from inference.runners import TorchRunner
    from inference.preprocess import prepare_image
    from data.image_io import read_image
    from data.input_size import InputSize
    from structure.representers import SegDetectorRepresenter
    runner = TorchRunner(tiny_model('deformable_resnet18'))
    representer = SegDetectorRepresenter(thresh=THRESH, box_thresh=BOX_THRESH, max_candidates=1000)
    total = 0
    for index in (1, 2, 3):
        image = read_image(str(images / f'img_{index}.jpg'), orientation='displayed')
        size = InputSize('short_side', 96, 2560)(*image.shape[:2])
        boxes, scores = representer.represent({'shape': [image.shape[:2]]}, runner(prepare_image(image, size)))
        written_boxes, written_scores = read_lines(out_dir / f'img_{index}.txt')
        assert len(written_boxes) == len(boxes[0])
        assert all(np.array_equal(a, b) for a, b in zip(written_boxes, boxes[0]))
        assert np.allclose(written_scores, scores[0], atol=1e-6)
        assert cv2.imread(str(out_dir / f'img_{index}.jpg')).shape == image.shape
        total += len(boxes[0])
    assert total > 0


def test_demo_single_image_and_glob(setup, tmp_path):
    out_dir = tmp_path / 'out'
    pattern = os.path.join(setup['data'], 'test_images', 'img_[12].jpg')
    assert demo.main([setup['exp'], '--resume', setup['ckpt'], '--device', 'cpu', '--image_path', pattern,
                      '--image_short_side', '64', '--result_dir', str(out_dir)]) == 0
    assert sorted(os.listdir(out_dir)) == ['img_1.txt', 'img_2.txt']


def test_bad_checkpoints_are_errors(setup, tmp_path, capsys):
    image = os.path.join(setup['data'], 'test_images', 'img_1.jpg')
    base = [setup['exp'], '--device', 'cpu', '--image_path', image, '--result_dir', str(tmp_path / 'out')]
    assert demo.main(base + ['--resume', str(tmp_path / 'missing.pth')]) == 2
    assert 'checkpoint not found' in capsys.readouterr().err
    wrong = save_checkpoint(tiny_model('resnet18'), str(tmp_path / 'resnet18.pth'))  # no DCN offsets
    assert demo.main(base + ['--resume', wrong]) == 2
    err = capsys.readouterr().err
    assert 'does not fit' in err and 'conv2_offset' in err
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint')
    assert demo.main(base + ['--resume', str(garbage)]) == 2
    assert 'garbage.pth' in capsys.readouterr().err
    assert eval_script.main([setup['exp'], '--device', 'cpu', '--resume', wrong]) == 2
    assert 'does not fit' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'out' / 'img_1.txt')  # nothing ran with random weights
    assert demo.main(base) == 2  # neither --resume nor --onnx
