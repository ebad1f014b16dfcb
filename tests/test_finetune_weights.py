"""Fine-tuning from a checkpoint of a model with another head (issue 23: DBNet to DBNet++): ``--weights FILE``
loads every tensor or refuses naming the misfits; ``--weights_non_strict`` loads the tensors that fit and the run's
log carries the load report."""
import os

import pytest
import torch
from torch import nn

import training_helpers as helpers
from concern.config import ConfigError, get_path
from tools.cli import apply_train_flags, compile_experiment, train_parser
from training.checkpoint import Checkpoint
from training.trainer import Trainer, TrainingStartError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IC15 = os.path.join(REPO_ROOT, 'experiments/seg_detector/ic15_resnet18_deform_thre.yaml')
BACKBONE = ('model.module.backbone.weight', 'model.module.backbone.bias')


class SourceDetector(helpers.TinyDetector):
    """The checkpoint's model: the tiny detector and a module the other one lacks (unexpected keys)."""

    def __init__(self):
        super().__init__()
        self.model.module.extra = nn.Conv2d(2, 2, 1)


class OtherHeadDetector(helpers.TinyDetector):
    """The same backbone, another head: a wider decoder (shape mismatches) and an attention module the checkpoint
    lacks (missing keys), as DBNet++'s head differs from DBNet's."""

    def __init__(self):
        super().__init__()
        self.model.module.decoder = nn.Conv2d(4, 3, 1)
        self.model.module.attention = nn.Conv2d(4, 4, 1)


class Builder:
    def __init__(self, model_class):
        self.model_class = model_class

    def build(self):
        return self.model_class()


def _experiment(model_class, checkpoint):
    experiment = helpers.make_experiment(helpers.TinyTrainSet(4), batch_size=4, epochs=1)
    experiment.structure.builder = Builder(model_class)
    experiment.train.checkpoint = checkpoint
    return experiment


@pytest.fixture
def source(tmp_path):
    """A full checkpoint of the source model after one epoch."""
    workspace = tmp_path / 'source'
    Trainer(_experiment(SourceDetector, Checkpoint()), helpers.options(str(workspace))).train()
    return str(workspace / 'model' / 'final')


def test_non_strict_weights_load_the_tensors_that_fit_and_log_the_report(tmp_path, source):
    saved = helpers.model_state(os.path.dirname(os.path.dirname(source)))
    workspace = tmp_path / 'finetune'
    trainer = Trainer(_experiment(OtherHeadDetector, Checkpoint(weights=source, weights_strict=False)),
                      helpers.options(str(workspace)))
    started = {}  # the weights the first step starts from
    run_step = trainer.run_step

    def first_step(batch):
        if not started:
            started.update({key: value.detach().clone() for key, value in trainer.model.state_dict().items()})
            assert trainer.optimizer.state_dict()['state'] == {}  # a fresh optimizer
        return run_step(batch)

    trainer.run_step = first_step
    summary = trainer.train()
    assert summary['iteration'] == 1 and not summary['resumed']  # a new run from epoch 0
    final = started
    for key in BACKBONE:
        assert torch.equal(final[key], saved[key]), key
    torch.manual_seed(0)  # the trainer seeds 0 before it builds the model: the head's initialisation
    initial = OtherHeadDetector().state_dict()
    for key in ('model.module.decoder.weight', 'model.module.decoder.bias', 'model.module.attention.weight'):
        assert torch.equal(final[key], initial[key]), key
    assert not torch.equal(initial['model.module.backbone.weight'], saved['model.module.backbone.weight'])
    log = (workspace / 'output.log').read_text()
    assert (f'weights: {source} is a full checkpoint (iteration 1, epoch 1) of which only the 2 of the model\'s 6 '
            'tensors that fit by name and shape') in log
    assert f'{source} -> OtherHeadDetector: loaded 2 of 6 tensors' in log
    assert 'missing keys (2):\n    model.module.attention.{weight, bias}' in log
    assert 'unexpected keys (2):\n    model.module.extra.{weight, bias}' in log
    assert 'shape mismatches (2):\n    model.module.decoder.weight: checkpoint (2, 4, 1, 1), model (3, 4, 1, 1)' in log


def test_strict_weights_refuse_naming_the_misfits(tmp_path, source):
    workspace = tmp_path / 'strict'
    with pytest.raises(TrainingStartError) as caught:
        Trainer(_experiment(OtherHeadDetector, Checkpoint(weights=source)), helpers.options(str(workspace))).train()
    message = str(caught.value)
    assert message.startswith(f'{source}: state dict does not fit OtherHeadDetector')
    for part in ('model.module.attention.{weight, bias}', 'model.module.extra.{weight, bias}',
                 'model.module.decoder.bias: checkpoint (2,), model (3,)', '--weights_non_strict'):
        assert part in message
    assert not (workspace / 'config.yaml').exists()


def test_non_strict_weights_that_fit_nowhere_are_an_error(tmp_path):
    path = tmp_path / 'other.pth'
    torch.save({'something.weight': torch.zeros(3)}, path)
    with pytest.raises(TrainingStartError, match='no tensor fits TinyDetector by name and shape'):
        Trainer(_experiment(helpers.TinyDetector, Checkpoint(weights=str(path), weights_strict=False)),
                helpers.options(str(tmp_path / 'run'))).train()


def test_the_command_line_flags(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)

    def compiled(*argv):
        return compile_experiment(train_parser().parse_args([IC15, *argv]), apply_train_flags)

    config = compiled('--weights', 'dbnet.pth', '--weights_non_strict')
    assert get_path(config, 'train.checkpoint.weights') == 'dbnet.pth'
    assert get_path(config, 'train.checkpoint.weights_strict') is False
    assert get_path(compiled('--weights', 'dbnet.pth'), 'train.checkpoint').get('weights_strict') is None  # strict
    # the weights may come from the experiment (here through --opt) rather than the flag; without any, the
    # Checkpoint the trainer builds refuses (below), whichever way the setting came
    config = compiled('--weights_non_strict', '--opt', 'train.checkpoint.weights=dbnet.pth')
    assert get_path(config, 'train.checkpoint.weights_strict') is False
    assert get_path(compiled('--resume', 'latest', '--weights_non_strict'), 'train.checkpoint.weights_strict') is False
    with pytest.raises(ConfigError, match='--resume latest and --weights dbnet.pth: .*give one'):
        compiled('--resume', 'latest', '--weights', 'dbnet.pth')
    config = compiled('--resume', 'latest', '--accept_skipped_samples', '--batch_size', '4')
    assert get_path(config, 'train.checkpoint.accept_skipped_samples') is True
    with pytest.raises(ValueError, match='weights_strict: false .* loads the tensors that fit'):
        Checkpoint(resume='latest', weights_strict=False)
