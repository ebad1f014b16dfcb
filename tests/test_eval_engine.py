"""DetectionEvaluator, the one evaluation engine: bad samples are never replaced by others, box_thresh has one
source (structure.representer.box_thresh), the representer is never changed, and a sweep leaves the main figure.

The data set is three 64x96 test images in the converted layout; a fake "network" draws each image's probability
map from the regions listed for its file, so that every figure below is worked out by hand:

- img_1: ground truth A and B; A is predicted at 0.9, B not at all           -> matched 1, detections 1, gt 2
- img_2: ground truth D predicted at 0.9 (a perfect image), made unusable in the tests
- img_3: ground truth C predicted at 0.8, plus a false alarm at 0.7           -> matched 1, detections 2, gt 1
  (box_thresh 0.75 drops the false alarm: detections 1)

Over img_1 and img_3: P = 2 / 3, R = 2 / 3 (box_thresh 0.5); P = 1, R = 2 / 3, F = 0.8 (box_thresh 0.75).
"""
import os
import pickle
import textwrap
import threading
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import training_helpers as helpers
from concern.config import ConfigError, apply_overrides, load_config
from data import DataError, DataLoader, ImageDataset
from data.processes import ICDARCollectFN, MakeICDARData
from data.processes.collect_fn import split_bad_samples
from experiment import EvaluationSettings, Experiment, ValidationSettings
from structure.measurers import DetectionEvaluator, QuadMeasurer, write_result_files
from structure.representers import SegDetectorRepresenter
from training.trainer import Trainer

HEIGHT, WIDTH = 64, 96
WORD_A, WORD_B = ((8, 20), (8, 40)), ((40, 52), (50, 80))
WORD_C, FALSE_ALARM = ((30, 44), (10, 50)), ((5, 15), (60, 90))
WORD_D = ((20, 34), (20, 70))
GROUND_TRUTH = {'img_1.jpg': [WORD_A, WORD_B], 'img_2.jpg': [WORD_D], 'img_3.jpg': [WORD_C]}
PREDICTED = {'img_1.jpg': [(WORD_A, 0.9)], 'img_2.jpg': [(WORD_D, 0.9)],
             'img_3.jpg': [(WORD_C, 0.8), (FALSE_ALARM, 0.7)]}
THIRD = pytest.approx(2 / 3)
# each image a uniform grey of its own, so that a model given only the image tensor knows which file it sees
GREY = {'img_1.jpg': 40, 'img_2.jpg': 80, 'img_3.jpg': 120}


def grown_rectangle(word, ratio=1.5):
    """The region's rectangle grown by the representer's unclip distance: what its detection covers."""
    (y0, y1), (x0, x1) = word
    width, height = x1 - 1 - x0, y1 - 1 - y0
    distance = width * height * ratio / (2 * (width + height))
    x0, y0, x1, y1 = x0 - distance, y0 - distance, x1 - 1 + distance, y1 - 1 + distance
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def make_dataset(root, bad=None):
    """The three images in ``root`` (converted layout, test split); ``bad``: 'image' makes img_2.jpg a text
    file, 'line' gives its ground truth a malformed second line. Returns (data_dir, all three list, good list)."""
    for folder in ('test_images', 'test_gts'):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    for name, words in GROUND_TRUTH.items():
        cv2.imwrite(os.path.join(root, 'test_images', name), np.full((HEIGHT, WIDTH, 3), GREY[name], np.uint8))
        rows = [','.join(f'{value:.2f}' for point in grown_rectangle(word) for value in point) + ',word'
                for word in words]
        with open(os.path.join(root, 'test_gts', name + '.txt'), 'w') as handle:
            handle.write('\n'.join(rows) + '\n')
    if bad == 'image':
        with open(os.path.join(root, 'test_images', 'img_2.jpg'), 'w') as handle:
            handle.write('not an image\n')
    elif bad == 'line':
        with open(os.path.join(root, 'test_gts', 'img_2.jpg.txt'), 'a') as handle:
            handle.write('10,10,oops\n')
    all_list, good_list = os.path.join(root, 'test_list.txt'), os.path.join(root, 'good_test_list.txt')
    with open(all_list, 'w') as handle:
        handle.write('img_1.jpg\nimg_2.jpg\nimg_3.jpg\n')
    with open(good_list, 'w') as handle:
        handle.write('img_1.jpg\nimg_3.jpg\n')
    return str(root), all_list, good_list


def loader(data_dir, data_list, batch_size=1, **dataset_args):
    dataset = ImageDataset([data_dir], [data_list], [MakeICDARData()], gt_format='converted', **dataset_args)
    return DataLoader(dataset, batch_size=batch_size, num_workers=0, collect_fn=ICDARCollectFN())


def fake_prediction(batch):
    """(B, 1, H, W) probability maps drawn from PREDICTED for each image's file."""
    maps = torch.zeros(len(batch['filename']), 1, HEIGHT, WIDTH)
    for index, filename in enumerate(batch['filename']):
        for ((y0, y1), (x0, x1)), probability in PREDICTED[os.path.basename(filename)]:
            maps[index, 0, y0:y1, x0:x1] = probability
    return maps


class FakeModel(nn.Module):
    """The PREDICTED maps of each image, told apart by its grey level (the evaluation loop gives the model the
    image tensor only)."""

    def forward(self, images, training=None):
        grey = images.reshape(len(images), -1).float().mean(dim=1).tolist()  # loader() does not normalise
        names = [min(GREY, key=lambda name: abs(GREY[name] - level)) for level in grey]
        return fake_prediction({'filename': names})


def feed(evaluator, batches, split=True):
    """The evaluation loop of eval.py: bad samples split off before the forward pass (or left to process())."""
    evaluator.reset()
    for batch in batches:
        if split:
            batch, bad = split_bad_samples(batch)
            evaluator.skip(bad)
            if batch is None:
                continue
        evaluator.process(batch, evaluator.detect(batch, fake_prediction(batch)))


def run(evaluator, batches, split=True):
    feed(evaluator, batches, split)
    return evaluator.evaluate()


def representer(box_thresh=0.5):
    return SegDetectorRepresenter(thresh=0.3, box_thresh=box_thresh)


# ----------------------------------------------------------------------------------------------
# A bad sample: an error by default, left out with 'skip', never replaced by another image


@pytest.mark.parametrize('bad, named', [('image', 'img_2.jpg'), ('line', 'img_2.jpg.txt:2')])
def test_a_bad_evaluation_sample_raises_by_default_naming_the_file(tmp_path, bad, named):
    data_dir, all_list, _ = make_dataset(tmp_path, bad)
    batches = loader(data_dir, all_list)
    assert batches.dataset.on_bad_sample == 'raise'  # a test set (not is_training)
    with pytest.raises(DataError, match=named):
        run(DetectionEvaluator(representer(), QuadMeasurer()), batches)


@pytest.mark.parametrize('bad', ['image', 'line'])
@pytest.mark.parametrize('batch_size, split', [(1, True), (2, True), (3, False)])
def test_skipped_sample_is_left_out_exactly_as_if_it_were_not_listed(tmp_path, bad, batch_size, split):
    data_dir, all_list, good_list = make_dataset(tmp_path, bad)
    evaluator = DetectionEvaluator(representer(), QuadMeasurer(), keep_outputs=True)
    result = run(evaluator, loader(data_dir, all_list, batch_size, on_bad_sample='skip'), split)
    # img_1: 1 of 1 detection right, 1 of 2 words found; img_3: 1 of 2, 1 of 1 -> 2 of 3 and 2 of 3
    assert (result['precision'], result['recall'], result['fmeasure']) == (THIRD, THIRD, THIRD)
    assert result['images'] == 2 and len(result['skipped']) == 1
    assert 'img_2.jpg' in result['skipped'][0]
    assert [os.path.basename(output['filename']) for output in evaluator.outputs] == ['img_1.jpg', 'img_3.jpg']
    write_result_files(str(tmp_path / 'results'), evaluator.outputs)  # no two images write the same file
    assert sorted(os.listdir(tmp_path / 'results')) == ['res_img_1.txt', 'res_img_3.txt']
    unlisted = run(DetectionEvaluator(representer(), QuadMeasurer()), loader(data_dir, good_list, batch_size))
    assert {key: unlisted[key] for key in ('precision', 'recall', 'fmeasure', 'images')} == \
        {key: result[key] for key in ('precision', 'recall', 'fmeasure', 'images')}
    assert unlisted['skipped'] == []


def test_substitution_stays_the_training_default(tmp_path):
    data_dir, all_list, _ = make_dataset(tmp_path, 'image')
    training = ImageDataset([data_dir], [all_list], [], gt_format='converted', is_training=True)
    assert training.on_bad_sample == 'substitute'
    assert training[1]['data_id'] == 'img_3.jpg' and len(training.take_bad_samples()) == 1
    with pytest.raises(ValueError, match="on_bad_sample: expected one of"):
        ImageDataset([data_dir], [all_list], [], gt_format='converted', on_bad_sample='ignore')
    with pytest.raises(TypeError):
        ImageDataset([data_dir], [all_list], [], gt_format='converted', strict=True)  # replaced by on_bad_sample


def test_collate_sets_bad_samples_aside(tmp_path):
    data_dir, all_list, _ = make_dataset(tmp_path, 'image')
    dataset = ImageDataset([data_dir], [all_list], [MakeICDARData()], gt_format='converted', on_bad_sample='skip')
    marker = dataset[1]
    assert set(marker) == {'filename', 'data_id', 'bad_sample'} and marker['data_id'] == 'img_2.jpg'
    collect = ICDARCollectFN()
    assert collect([marker]) == {'bad_samples': [marker['bad_sample']]}
    assert split_bad_samples(collect([marker])) == (None, [marker['bad_sample']])
    batch = collect([dataset[0], marker, dataset[2]])
    assert batch['bad_samples'] == [marker['bad_sample']] and tuple(batch['image'].shape) == (2, HEIGHT, WIDTH, 3)
    rest, messages = split_bad_samples(batch)
    assert 'bad_samples' not in rest and messages == [marker['bad_sample']] and len(rest['filename']) == 2
    assert 'bad_samples' not in collect([dataset[0]])
    assert split_bad_samples(collect([dataset[0]]))[1] == []


def test_nothing_measured_is_an_error_naming_the_skipped(tmp_path):
    data_dir, all_list, _ = make_dataset(tmp_path, 'image')
    only_bad = os.path.join(data_dir, 'bad_test_list.txt')
    with open(only_bad, 'w') as handle:
        handle.write('img_2.jpg\n')
    with pytest.raises(ValueError, match='no images were evaluated.*img_2.jpg'):
        run(DetectionEvaluator(representer(), QuadMeasurer()), loader(data_dir, only_bad, on_bad_sample='skip'))


# ----------------------------------------------------------------------------------------------
# box_thresh: one source, applied in one place


EXPERIMENT = """\
    package: [experiment]
    define:
      - name: test_data
        class: ImageDataset
        data_dir: [{data_dir}]
        data_list: [{data_list}]
        gt_format: converted
        processes:
          - class: MakeICDARData
      - name: Experiment
        class: Experiment
        structure:
          class: Structure
          builder: null
          representer:
            class: SegDetectorRepresenter
            thresh: 0.3
            box_thresh: 0.5
          measurer:
            class: QuadMeasurer
        validation: &validate
          class: {settings}
          data_loaders:
            maps:
              class: DataLoader
              dataset: ^test_data
              batch_size: 1
              num_workers: 0
              collect_fn:
                class: ICDARCollectFN
          sweep: true
          sweep_thresholds: [0.3, 0.6, 0.75, 0.85]
{extra}
        evaluation: *validate
"""


def write_experiment(tmp_path, settings='ValidationSettings', extra=''):
    data_dir, _, good_list = make_dataset(tmp_path / 'data')
    path = tmp_path / 'exp.yaml'
    path.write_text(textwrap.dedent(EXPERIMENT).format(data_dir=data_dir, data_list=good_list, settings=settings,
                                                       extra=extra))
    return str(path)


@pytest.mark.parametrize('settings', ['ValidationSettings', 'EvaluationSettings'])
def test_the_representer_box_thresh_is_the_one_the_evaluator_uses(tmp_path, settings):
    config = load_config(write_experiment(tmp_path, settings))
    apply_overrides(config, ['structure.representer.box_thresh=0.75'])  # what --opt does
    experiment = Experiment.build(config, ('structure', 'evaluation'))
    assert EvaluationSettings is ValidationSettings and isinstance(experiment.evaluation, ValidationSettings)
    evaluator = DetectionEvaluator.from_settings(experiment.structure, experiment.evaluation)
    assert evaluator.box_thresh == 0.75 and evaluator.candidate_floor == 0.3
    assert evaluator.sweep_thresholds == (0.3, 0.6, 0.75, 0.85) and not evaluator.is_output_polygon
    result = run(evaluator, experiment.evaluation.data_loaders['maps'])
    # box_thresh 0.75 drops img_3's false alarm (0.7): 2 of 2 detections right, 2 of 3 words found
    assert (result['precision'], result['recall'], result['fmeasure']) == pytest.approx((1.0, 2 / 3, 0.8))
    assert result['box_thresh'] == 0.75 and result['images'] == 2


def test_box_thresh_in_the_validation_settings_is_a_clear_error(tmp_path):
    path = write_experiment(tmp_path, extra='          box_thresh: 0.4')
    config = load_config(path)
    apply_overrides(config, ['structure.representer.box_thresh=0.75'])
    for part in ('validation', 'evaluation'):  # evaluation: *validate has it too
        with pytest.raises(ConfigError) as error:
            Experiment.build(config, ('structure', part))
        message = str(error.value)
        assert path in message and f"key '{part}.box_thresh'" in message
        assert 'structure.representer.box_thresh' in message
    Experiment.build(config, ('structure',))  # a part that is not built is not looked at
    with pytest.raises(TypeError):
        ValidationSettings(data_loaders={'a': 1}, box_thresh=0.4)


def test_the_measurer_measures_every_detection_given_and_takes_no_threshold_of_its_own():
    box = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.int32)
    batch = {'polygons': [[box.astype(np.float32)]], 'ignore_tags': [[False]]}
    output = ([box[None]], [[0.1]])
    measurer = QuadMeasurer()
    assert measurer.gather_measure(measurer.validate_measure(batch, output))['fmeasure'] == 1.0
    with pytest.raises(TypeError):  # box_thresh has one owner, the representer
        measurer.validate_measure(batch, output, box_thresh=0.6)


# ----------------------------------------------------------------------------------------------
# The representer is never changed; the sweep leaves the main figure


class FrozenRepresenter(SegDetectorRepresenter):
    """Refuses any change of its attributes once built."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._frozen = True

    def __setattr__(self, name, value):
        if getattr(self, '_frozen', False):
            raise AttributeError(f'the representer was changed: {name} = {value!r}')
        super().__setattr__(name, value)


def test_detect_leaves_the_representer_alone_and_the_sweep_the_main_figure(tmp_path):
    data_dir, _, good_list = make_dataset(tmp_path)
    thresholds = (0.3, 0.6, 0.75, 0.85)
    frozen = FrozenRepresenter(thresh=0.3, box_thresh=0.75)
    swept = DetectionEvaluator(frozen, QuadMeasurer(), sweep_thresholds=thresholds)
    batch = next(iter(loader(data_dir, good_list, batch_size=2)))
    boxes, scores = swept.detect(batch, fake_prediction(batch))  # at 0.3: the false alarm too
    assert [len(image) for image in boxes] == [1, 2] and scores[1] == pytest.approx([0.8, 0.7])
    assert frozen.box_thresh == 0.75
    kept_boxes, kept_scores = swept.process(batch, (boxes, scores))
    assert [len(image) for image in kept_boxes] == [1, 1] and kept_scores[1] == pytest.approx([0.8])
    assert swept.outputs[1]['all_scores'] == pytest.approx([0.8, 0.7])

    with_sweep = run(swept, loader(data_dir, good_list))
    without = run(DetectionEvaluator(frozen, QuadMeasurer()), loader(data_dir, good_list))
    assert without['sweep'] is None
    assert {key: with_sweep[key] for key in ('precision', 'recall', 'fmeasure', 'images')} == \
        {key: without[key] for key in ('precision', 'recall', 'fmeasure', 'images')}
    rows = {row['box_thresh']: row for row in with_sweep['sweep']['rows']}
    # 0.3, 0.6: every detection (2 of 3 right, 2 of 3 found); 0.75: the false alarm gone; 0.85: only A (0.9)
    expected = {0.3: (2 / 3, 2 / 3), 0.6: (2 / 3, 2 / 3), 0.75: (1.0, 2 / 3), 0.85: (1.0, 1 / 3)}
    for threshold, (precision, recall) in expected.items():
        assert (rows[threshold]['precision'], rows[threshold]['recall']) == pytest.approx((precision, recall))
    assert with_sweep['sweep']['best']['box_thresh'] == 0.75
    assert (with_sweep['precision'], with_sweep['recall']) == pytest.approx((1.0, 2 / 3))


def test_detect_runs_in_another_thread_without_touching_the_evaluation_state(tmp_path):
    # eval.py's pipelined mode: detect() in a post-processing thread, process() in the main one
    data_dir, _, good_list = make_dataset(tmp_path)
    evaluator = DetectionEvaluator(FrozenRepresenter(thresh=0.3, box_thresh=0.5), QuadMeasurer(),
                                   sweep_thresholds=(0.3, 0.9))
    batches = list(loader(data_dir, good_list))
    detections = [None] * len(batches)

    def post_process():
        for index, batch in enumerate(batches):
            detections[index] = evaluator.detect(batch, fake_prediction(batch))

    thread = threading.Thread(target=post_process)
    thread.start()
    thread.join()
    for batch, detected in zip(batches, detections):
        evaluator.process(batch, detected)
    assert evaluator.evaluate()['fmeasure'] == THIRD


# ----------------------------------------------------------------------------------------------
# Several processes, and the trainer's validation


def test_states_of_two_ranks_merge_to_the_single_process_result(tmp_path):
    data_dir, all_list, _ = make_dataset(tmp_path, 'line')
    batches = list(loader(data_dir, all_list, on_bad_sample='skip'))
    single = run(DetectionEvaluator(representer(), QuadMeasurer(), sweep_thresholds=(0.3, 0.75)), batches)
    ranks = []
    for share in (batches[:2], batches[2:]):
        rank = DetectionEvaluator(representer(), QuadMeasurer(), sweep_thresholds=(0.3, 0.75))
        feed(rank, share)
        ranks.append(pickle.loads(pickle.dumps(rank.state())))
    merged = DetectionEvaluator(representer(), QuadMeasurer(), sweep_thresholds=(0.3, 0.75))
    merged.skip(['stale'])  # merge replaces what was there
    merged.merge(ranks)
    result = merged.evaluate()
    assert {key: result[key] for key in ('precision', 'recall', 'fmeasure', 'images', 'skipped')} == \
        {key: single[key] for key in ('precision', 'recall', 'fmeasure', 'images', 'skipped')}
    assert result['sweep'] == single['sweep'] and result['images'] == 2 and len(result['skipped']) == 1


def _validating_trainer(tmp_path, data_dir, data_list, **dataset_args):
    validation = ValidationSettings(data_loaders={'maps': loader(data_dir, data_list, **dataset_args)})
    experiment = helpers.make_experiment(helpers.TinyTrainSet(4), validation=validation, measurer=QuadMeasurer(),
                                         representer=representer())
    trainer = Trainer(experiment, helpers.options(str(tmp_path), validate=True))
    trainer.logger.open(str(tmp_path))
    return trainer


def test_trainer_validation_fails_on_a_bad_sample_by_default_and_skips_it_when_told(tmp_path):
    data_dir, all_list, _ = make_dataset(tmp_path / 'data', 'image')
    trainer = _validating_trainer(tmp_path / 'raise', data_dir, all_list)
    assert trainer.validate(FakeModel()) == {}  # logged, never raised: training goes on
    trainer.logger.close()
    log = (tmp_path / 'raise' / 'output.log').read_text()
    assert "validation on 'maps' failed" in log and 'img_2.jpg' in log

    trainer = _validating_trainer(tmp_path / 'skip', data_dir, all_list, on_bad_sample='skip')
    results = trainer.validate(FakeModel())
    trainer.logger.close()
    assert results == {'maps': {'precision': THIRD, 'recall': THIRD, 'fmeasure': THIRD}}
    log = (tmp_path / 'skip' / 'output.log').read_text()
    assert '(2 images, 1 skipped)' in log and 'skipped' in log and 'img_2.jpg' in log


def test_evaluator_arguments_are_checked():
    with pytest.raises(ValueError, match='expected one with a numeric box_thresh'):
        DetectionEvaluator(SimpleNamespace(), QuadMeasurer())
    with pytest.raises(ValueError, match='sweep_thresholds: expected a non-empty list of numbers'):
        DetectionEvaluator(representer(), QuadMeasurer(), sweep_thresholds=[])
    with pytest.raises(ValueError, match='the box_thresh sweep needs a measurer with a protocol'):
        DetectionEvaluator(representer(), helpers.BoxMeasurer(), sweep_thresholds=[0.5])
    with pytest.raises(TypeError):  # box_thresh has one owner, the representer
        DetectionEvaluator(representer(), QuadMeasurer(), box_thresh=0.2)
    with pytest.raises(ValueError, match='a representer with candidates and select'):
        DetectionEvaluator(helpers.BoxRepresenter(), QuadMeasurer(), sweep_thresholds=[0.5])
    owner = representer(0.6)
    evaluator = DetectionEvaluator(owner, QuadMeasurer())
    owner.box_thresh = 0.45  # read from its owner at each use, never copied
    assert evaluator.box_thresh == 0.45
    settings = SimpleNamespace(is_output_polygon=True, sweep=True, sweep_thresholds=None)
    evaluator = DetectionEvaluator.from_settings(SimpleNamespace(representer=representer(0.6), measurer=QuadMeasurer()),
                                                 settings)
    assert evaluator.is_output_polygon and evaluator.box_thresh == 0.6 and evaluator.candidate_floor == 0.3
    assert len(evaluator.sweep_thresholds) == 13
    with pytest.raises(ValueError, match='structure.measurer'):
        DetectionEvaluator.from_settings(SimpleNamespace(representer=representer(), measurer=None), settings)


def test_main_demo_evaluates_box_and_polygon_mode_from_one_forward_pass(tmp_path, monkeypatch, capsys):
    import structure.weights
    from inference_helpers import REPO_ROOT, make_synthetic_set
    from tools import main_demo
    data_dir = make_synthetic_set(str(tmp_path / 'synthetic'), test=2, size=96)
    calls = []

    class FakeNet(nn.Module):  # one text-like region per image: a detection in both modes
        def forward(self, image, training=None):
            calls.append(tuple(image.shape))
            maps = torch.zeros(image.shape[0], 1, *image.shape[2:])
            maps[:, :, 40:80, 60:300] = 0.9
            return maps

    fake_model = FakeNet()

    monkeypatch.setattr(structure.weights, 'load_trained_model', lambda builder, checkpoint, device: fake_model)
    monkeypatch.chdir(REPO_ROOT)
    opts = [f'evaluation.data_loaders.synthetic.dataset.data_dir=[{data_dir}]',
            f'evaluation.data_loaders.synthetic.dataset.data_list=[{data_dir}/test_list.txt]']
    results = main_demo.evaluate('unused', opts)
    assert len(calls) == 2  # one forward per batch (batch size 1) for both modes
    assert set(results) == {'box', 'polygon'}
    assert all(set(metrics) == {'precision', 'recall', 'fmeasure', 'box_thresh', 'images'}
               for metrics in results.values())
    assert results['box']['images'] == results['polygon']['images'] == 2
    out = capsys.readouterr().out
    assert 'evaluated 2 held-out test images' in out
    assert 'box     mode: precision' in out and 'polygon mode: precision' in out
    # the demo's file (the plain budget recipe) sets polygon mode's own box_thresh (0.35, as box mode's); each mode
    # reports its own (an override of one leaves the other); the paper's demo file has one for both modes
    assert (results['box']['box_thresh'], results['polygon']['box_thresh']) == (0.35, 0.35)
    assert '(box_thresh 0.35)' in out
    other = main_demo.evaluate('unused', opts + ['structure.representer.polygon_box_thresh=0.45'])
    assert (other['box']['box_thresh'], other['polygon']['box_thresh']) == (0.35, 0.45)
    paper = main_demo.evaluate('unused', opts, experiment_path=main_demo.PAPER_EXPERIMENT)
    assert paper['box']['box_thresh'] == paper['polygon']['box_thresh']


def test_usable_batches_drop_bad_samples_and_record_them_in_every_evaluator():
    from data.processes.collect_fn import BAD_SAMPLES
    from inference.evaluation import usable_batches

    class Recorder:
        def __init__(self):
            self.skipped = []

        def skip(self, messages):
            self.skipped.extend(messages)

    good = {'image': 'tensor-a', 'filename': ['a.jpg']}
    mixed = {'image': 'tensor-b', 'filename': ['b.jpg'], BAD_SAMPLES: ['c.jpg: truncated']}
    all_bad = {BAD_SAMPLES: ['d.jpg: unreadable', 'e.jpg: bad line 3']}
    plain = ('not', 'a', 'mapping')
    first, second = Recorder(), Recorder()
    batches = list(usable_batches([good, mixed, all_bad, plain], [first, second]))
    assert batches == [good, {'image': 'tensor-b', 'filename': ['b.jpg']}, plain]
    assert first.skipped == second.skipped == ['c.jpg: truncated', 'd.jpg: unreadable', 'e.jpg: bad line 3']
    single = Recorder()
    assert list(usable_batches([all_bad, good], single)) == [good] and len(single.skipped) == 2
