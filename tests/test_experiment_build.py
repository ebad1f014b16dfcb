"""An original-style experiment chain builds whole and its loaders feed the model and the evaluator."""
import os
import shutil

import pytest
import torch

from concern.config import load_config
from data import synthetic
from experiment import Experiment, Structure, TrainSettings, ValidationSettings

FIXTURE_ROOT = os.path.join(os.path.dirname(__file__), 'fixtures', 'config', 'original')
ORIGINAL_EXPERIMENT = 'experiments/seg_detector/totaltext_resnet18_deform_thre.yaml'


@pytest.fixture(scope='module')
def original_layout(module_tmp):
    """The fixture experiment files plus a tiny synthetic data set where they expect Total-Text."""
    root = module_tmp('original')
    shutil.copytree(os.path.join(FIXTURE_ROOT, 'experiments'), root / 'experiments')
    synthetic.main(['--out', str(root / 'datasets' / 'total_text'), '--train', '2', '--test', '2',
                    '--seed', '3', '--size', '256', '--fonts', 'builtin'])
    return root


def test_original_experiment_builds_every_part_and_runs(original_layout, monkeypatch):
    monkeypatch.chdir(original_layout)
    config = load_config(ORIGINAL_EXPERIMENT)
    config.tree['train']['data_loader']['num_workers'] = 0
    config.tree['train']['data_loader']['batch_size'] = 2
    config.tree['train']['data_loader']['dataset']['processes'][1]['size'] = [128, 128]
    for settings in ('validation', 'evaluation'):
        config.tree[settings]['data_loaders']['icdar2015']['num_workers'] = 0
    experiment = Experiment.build(config)
    assert isinstance(experiment.structure, Structure)
    assert isinstance(experiment.train, TrainSettings) and experiment.train.epochs == 1200
    assert isinstance(experiment.validation, ValidationSettings)
    assert experiment.evaluation is not experiment.validation          # the alias is an independent copy
    assert experiment.train.checkpoint.resume is None
    assert experiment.train.model_saver.save_interval == 18000

    batch = next(iter(experiment.train.data_loader))
    assert batch['image'].shape == (2, 3, 128, 128)
    assert batch['gt'].shape == (2, 1, 128, 128)
    for key in ('mask', 'thresh_map', 'thresh_mask'):
        assert batch[key].shape == (2, 128, 128)
    model = experiment.structure.builder.build()
    model.train()
    loss, pred, metrics = model(batch, training=True)
    assert torch.isfinite(loss) and set(pred) >= {'binary', 'thresh', 'thresh_binary'}

    model.eval()
    loader = experiment.validation.data_loaders['icdar2015']
    validation_batch = next(iter(loader))
    height, width = validation_batch['image'].shape[2:]
    assert height == 800 and width % 32 == 0                  # keep_ratio: height fixed, width a multiple of 32
    with torch.no_grad():
        probability = model(validation_batch['image'], training=False)
    assert probability.shape == (1, 1, height, width)
    boxes, scores = experiment.structure.representer.represent(validation_batch, probability)
    measures = experiment.structure.measurer.validate_measure(validation_batch, (boxes, scores))
    metrics = experiment.structure.measurer.gather_measure(measures)
    assert set(metrics) >= {'precision', 'recall', 'fmeasure'}
    assert all(0.0 <= metrics[key] <= 1.0 for key in ('precision', 'recall', 'fmeasure'))


def test_eval_and_demo_parts_do_not_need_training_data(original_layout, monkeypatch):
    monkeypatch.chdir(original_layout)
    os.rename('datasets/total_text/train_list.txt', 'datasets/total_text/train_list.moved')
    try:
        config = load_config(ORIGINAL_EXPERIMENT)
        experiment = Experiment.build(config, ('structure', 'evaluation'))
        assert experiment.train is None and experiment.evaluation is not None
        with pytest.raises(Exception, match='train_list.txt'):
            Experiment.build(load_config(ORIGINAL_EXPERIMENT), ('structure', 'train'))
    finally:
        os.rename('datasets/total_text/train_list.moved', 'datasets/total_text/train_list.txt')
