"""The one evaluation loop (``inference.evaluation.evaluate_on_dataset``) and the one owner of box_thresh.

The data set and the fake network are those of tests/test_eval_engine.py (three 64x96 images, maps drawn per file,
every figure worked out by hand there): over img_1 and img_3, P = R = 2 / 3 at box_thresh 0.5 and P = 1,
R = 2 / 3 at 0.75; img_2 is unreadable in the 'image' variant.
"""
import ast
import os

import numpy as np
import pytest
import torch

from inference.evaluation import evaluate_on_dataset
from structure.measurers import DetectionEvaluator, QuadMeasurer
from structure.representers import SegDetectorRepresenter
from test_eval_engine import THIRD, FakeModel, loader, make_dataset

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CountingRunner:
    """The fake network as a runner (images -> maps), counting its calls."""

    def __init__(self):
        self.model = FakeModel()
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        return self.model(images).numpy()


def representer(box_thresh=0.5):
    return SegDetectorRepresenter(thresh=0.3, box_thresh=box_thresh)


def test_every_evaluator_is_fed_from_one_forward_pass_per_batch(tmp_path):
    data_dir, _, good_list = make_dataset(tmp_path)
    runner = CountingRunner()
    evaluators = [DetectionEvaluator(representer(), QuadMeasurer(), is_output_polygon=polygon)
                  for polygon in (False, True)]
    seen = []
    summary = evaluate_on_dataset(runner, loader(data_dir, good_list), evaluators,
                                  on_result=lambda result, measured: seen.append([len(m[0][0]) for m in measured]))
    assert runner.calls == 2 and summary.images == 2  # two batches of one image, one forward pass each
    assert seen == [[1, 1], [2, 2]]  # img_1: A; img_3: C and the false alarm, in both modes
    for evaluator in evaluators:
        assert evaluator.evaluate()['fmeasure'] == THIRD


def test_pipelined_and_sequential_passes_measure_the_same(tmp_path):
    data_dir, _, good_list = make_dataset(tmp_path)
    results = []
    for pipelined in (False, True):
        evaluator = DetectionEvaluator(representer(0.75), QuadMeasurer(), sweep_thresholds=(0.3, 0.75, 0.85))
        evaluate_on_dataset(CountingRunner(), loader(data_dir, good_list), [evaluator], pipelined=pipelined)
        results.append(evaluator.evaluate())
    assert results[0] == results[1]
    assert (results[0]['precision'], results[0]['recall']) == pytest.approx((1.0, 2 / 3))


def test_bad_samples_are_recorded_in_every_evaluator_and_never_measured(tmp_path):
    data_dir, all_list, _ = make_dataset(tmp_path, 'image')
    evaluators = [DetectionEvaluator(representer(), QuadMeasurer()) for _ in range(2)]
    evaluators[0].skip(['stale'])  # reset first: a new pass forgets the last one
    summary = evaluate_on_dataset(CountingRunner(), loader(data_dir, all_list, on_bad_sample='skip'), evaluators)
    assert summary.images == 2
    for evaluator in evaluators:
        result = evaluator.evaluate()
        assert result['images'] == 2 and len(result['skipped']) == 1 and 'img_2.jpg' in result['skipped'][0]
        assert result['fmeasure'] == THIRD


def test_an_empty_evaluator_list_is_refused():
    with pytest.raises(ValueError, match='at least one evaluator'):
        evaluate_on_dataset(CountingRunner(), [], [])


def _calls(path, name):
    tree = ast.parse(open(os.path.join(REPO_ROOT, path), encoding='utf-8').read())
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, 'id', getattr(node.func, 'attr', None)) == name]


@pytest.mark.parametrize('path', ['eval.py', 'training/validation.py', 'tools/main_demo.py', 'convert_to_onnx.py'])
def test_the_four_evaluations_go_through_the_one_loop(path):
    assert _calls(path, 'evaluate_on_dataset')
    # no loop of their own: nobody else feeds an evaluator batch by batch
    assert not _calls(path, 'usable_batches') or path == 'eval.py'  # eval.py: only the --speed warm-up batch
    assert not _calls(path, 'process')


# ----------------------------------------------------------------------------------------------
# box_thresh: one owner


def random_maps(seed, count=3, size=(96, 128)):
    rng = np.random.default_rng(seed)
    maps = np.zeros((count, 1) + size, np.float32)
    for index in range(count):
        for _ in range(12):
            y, x = rng.integers(0, size[0] - 12), rng.integers(0, size[1] - 30)
            maps[index, 0, y:y + rng.integers(6, 12), x:x + rng.integers(10, 30)] = rng.uniform(0.31, 1.0)
    return torch.from_numpy(maps)


@pytest.mark.parametrize('polygon', [False, True])
def test_represent_is_the_candidates_selected_at_box_thresh(polygon):
    # a second method: every candidate, then the owner's selection, equals represent() box for box
    owner = representer(0.62)
    maps = random_maps(1)
    batch = {'shape': [(192, 256)] * len(maps)}
    boxes, scores = owner.represent(batch, maps, polygon)
    all_boxes, all_scores = owner.candidates(batch, maps, polygon, min_score=0.0)
    assert sum(map(len, all_scores)) > sum(map(len, scores)) > 0  # the threshold mattered
    for image in range(len(maps)):
        kept_boxes, kept_scores = owner.select(all_boxes[image], all_scores[image])
        assert kept_scores == scores[image] and min(scores[image], default=1.0) >= 0.62
        assert len(kept_boxes) == len(boxes[image])
        assert all(np.array_equal(a, b) for a, b in zip(kept_boxes, boxes[image]))


def test_nothing_but_the_representer_filters_by_box_thresh():
    # the evaluator and the measurer take no threshold; TextDetector and the flags set the representer's
    with pytest.raises(TypeError):
        representer().represent({'shape': [(8, 8)]}, torch.zeros(1, 1, 8, 8), False, 0.3)
    with pytest.raises(TypeError):
        DetectionEvaluator(representer(), QuadMeasurer(), box_thresh=0.3)
    with pytest.raises(TypeError):
        QuadMeasurer().validate_measure({'polygons': [[]], 'ignore_tags': [[]]}, ([[]], [[]]), box_thresh=0.3)


def test_the_api_and_the_flags_set_box_thresh_with_one_precedence(tmp_path):
    from concern.config import apply_overrides, load_config, set_representer_thresholds
    from experiment import Experiment
    path = os.path.join(REPO_ROOT, 'experiments', 'seg_detector', 'ic15_resnet18_deform_thre.yaml')
    config = load_config(path)
    apply_overrides(config, ['structure.representer.box_thresh=0.55'])  # --opt over the file
    set_representer_thresholds(config, box_thresh=0.65)  # a flag over --opt
    set_representer_thresholds(config, thresh=None, box_thresh=None)  # None leaves both as they are
    built = Experiment.build(config, ('structure',)).structure.representer
    as_filed = Experiment.build(load_config(path), ('structure',)).structure.representer
    assert built.box_thresh == 0.65 and as_filed.box_thresh not in (0.55, 0.65) and built.thresh == as_filed.thresh


def test_a_box_thresh_flag_replaces_the_files_polygon_threshold_too():
    from concern.config import apply_overrides, load_config, set_representer_thresholds
    from experiment import Experiment
    path = os.path.join(REPO_ROOT, 'experiments', 'seg_detector', 'synthetic_resnet18_thre_budget.yaml')
    config = load_config(path)
    apply_overrides(config, ['structure.representer.polygon_box_thresh=0.55'])
    as_opted = Experiment.build(config, ('structure',)).structure.representer
    assert (as_opted.box_thresh_for(False), as_opted.box_thresh_for(True)) == (0.35, 0.55)  # the file's 0.35
    apply_overrides(config, ['structure.representer.box_thresh=0.6'])  # --opt box_thresh: box mode only
    opted_both = Experiment.build(config, ('structure',)).structure.representer
    assert (opted_both.box_thresh_for(False), opted_both.box_thresh_for(True)) == (0.6, 0.55)
    set_representer_thresholds(config, box_thresh=0.65)  # --box_thresh 0.65: the minimum in both modes
    flagged = Experiment.build(config, ('structure',)).structure.representer
    assert (flagged.box_thresh_for(False), flagged.box_thresh_for(True)) == (0.65, 0.65)
