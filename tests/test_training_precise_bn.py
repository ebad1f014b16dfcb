"""train.precise_bn (training/precise_bn.py): the BatchNorm statistics of the final weights, averaged over training
batches before the final checkpoint; checked against statistics computed by hand from the same batches."""
import os
import sys

import pytest
import torch
from torch import nn

import training_helpers as helpers
from concern.config import ObjectBuilder, load_config
from training.precise_bn import PreciseBatchNorm, recompute_statistics
from training.trainer import Trainer

BUDGET = 'experiments/seg_detector/synthetic_resnet18_thre_budget.yaml'


def _by_hand(conv, images):
    """Per-channel mean and unbiased variance of conv(images) over (N, H, W), averaged over the batches."""
    means, variances = [], []
    with torch.no_grad():
        for image in images:
            out = conv(image).transpose(0, 1).reshape(conv.out_channels, -1).double()
            means.append(out.mean(dim=1))
            variances.append(out.var(dim=1, unbiased=True))
    return torch.stack(means).mean(0), torch.stack(variances).mean(0)


def test_the_statistics_are_the_average_of_the_batch_statistics_and_the_layer_is_put_back():
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5, momentum=0.3)
    model = nn.Sequential(conv, norm).eval()
    images = [torch.randn(2, 3, 9, 9) * (1 + index) + index for index in range(5)]
    done = recompute_statistics(model, iter(images), model)
    assert done == {'batches': 5, 'layers': 1}
    mean, variance = _by_hand(conv, images)
    assert torch.allclose(norm.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    assert torch.allclose(norm.running_var.double(), variance, rtol=1e-5, atol=1e-6)
    # the exponential moving average (momentum 0.3) of the same batches weighs the last ones most: not this
    assert not torch.allclose(norm.running_mean.double(), _ema(conv, images, 0.3), atol=1e-3)
    assert int(norm.num_batches_tracked) == 5 and norm.momentum == 0.3 and not model.training
    assert all(parameter.grad is None for parameter in model.parameters())


def _ema(conv, images, momentum):
    running = torch.zeros(conv.out_channels, dtype=torch.float64)
    with torch.no_grad():
        for image in images:
            running = (1 - momentum) * running + momentum * conv(image).mean(dim=(0, 2, 3)).double()
    return running


def test_no_input_leaves_the_statistics_and_a_model_without_batchnorm_runs_nothing():
    norm = nn.BatchNorm2d(2)
    norm.running_mean.fill_(3.0)
    norm.num_batches_tracked.fill_(7)
    assert recompute_statistics(norm, iter([]), norm) == {'batches': 0, 'layers': 1}
    assert norm.running_mean.tolist() == [3.0, 3.0] and norm.running_var.tolist() == [1.0, 1.0]
    assert int(norm.num_batches_tracked) == 7
    calls = []
    plain = nn.Conv2d(1, 1, 1)
    assert recompute_statistics(plain, iter([torch.zeros(1, 1, 2, 2)]), calls.append) == {'batches': 0, 'layers': 0}
    assert calls == []


@pytest.mark.parametrize('batches', [0, -3, 2.5, True, '10'])
def test_the_batch_count_must_be_a_whole_number_of_at_least_one(batches):
    with pytest.raises(ValueError, match='train.precise_bn.batches'):
        PreciseBatchNorm(batches)


def test_it_is_an_experiment_component_and_the_budget_recipe_uses_it():
    config = load_config(BUDGET)
    built = ObjectBuilder(config).build({'class': 'PreciseBatchNorm', 'batches': 7}, 'train.precise_bn')
    assert isinstance(built, PreciseBatchNorm) and built.batches == 7
    with pytest.raises(Exception, match='momentum'):
        ObjectBuilder(config).build({'class': 'PreciseBatchNorm', 'momentum': 0.1}, 'train.precise_bn')
    in_file = config.tree['train']['precise_bn']
    assert in_file == {'class': 'PreciseBatchNorm', 'batches': 100}
    from experiment import TrainSettings
    settings = TrainSettings(data_loader=None, precise_bn=ObjectBuilder(config).build(in_file, 'train.precise_bn'))
    assert isinstance(settings.precise_bn, PreciseBatchNorm) and settings.precise_bn.batches == 100


# -- in a training run ---------------------------------------------------------------------------------


def _experiment(batches, train_set=None, resume=None, save_interval=1000):
    experiment = helpers.make_experiment(train_set or helpers.TinyTrainSet(12), epochs=2, batch_norm=True,
                                         save_interval=save_interval, resume=resume)
    experiment.train.precise_bn = PreciseBatchNorm(batches)
    return experiment


def _train(workspace, experiment, **overrides):
    trainer = Trainer(experiment, helpers.options(str(workspace), **overrides))
    return trainer, trainer.train()


def _log(workspace):
    with open(os.path.join(str(workspace), 'output.log'), encoding='utf-8') as stream:
        return stream.read()


def _expected_statistics(state, train_set, count, usable=lambda batch: True):
    """The final conv's output statistics over the first ``count`` usable batches of the loader's epochs 2 and 3,
    the two after a 2-epoch run (a fresh loader with the run's seed: the order and samples do not depend on the
    loader object)."""
    conv = nn.Conv2d(3, 4, 3, padding=1)
    conv.load_state_dict({'weight': state['model.module.backbone.0.weight'],
                          'bias': state['model.module.backbone.0.bias']})
    loader = helpers.make_experiment(train_set, epochs=2).train.data_loader
    loader.bind(0, 1, seed=0)
    images = []
    for epoch in (2, 3):
        loader.start_epoch(epoch)
        images += [batch['image'] for batch in loader if usable(batch)]
    return _by_hand(conv, images[:count])


def _without_precise_bn(workspace):
    """The same run without train.precise_bn: the same weights (the recomputation touches no weight and no random
    stream), with the moving averages training left."""
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12), epochs=2, batch_norm=True)
    _train(workspace, experiment)
    return helpers.model_state(str(workspace))


def test_the_final_checkpoint_holds_the_average_over_the_epochs_after_the_last(tmp_path):
    """12 samples in batches of 4: 3 batches an epoch; 4 batches are the whole of epoch 2 and the first of 3."""
    _train(tmp_path / 'run', _experiment(4, save_interval=6))
    final = helpers.model_state(str(tmp_path / 'run'))
    mean, variance = _expected_statistics(final, helpers.TinyTrainSet(12), 4)
    assert torch.allclose(final['model.module.backbone.1.running_mean'].double(), mean, rtol=1e-5, atol=1e-6)
    assert torch.allclose(final['model.module.backbone.1.running_var'].double(), variance, rtol=1e-5, atol=1e-6)
    assert int(final['model.module.backbone.1.num_batches_tracked']) == 4
    # recomputed after the last step, before its periodic checkpoint: that one holds them too
    last_step = helpers.model_state(str(tmp_path / 'run'), 'model_epoch_1_minibatch_6')
    assert all(torch.equal(last_step[key], final[key]) for key in final)
    plain = _without_precise_bn(tmp_path / 'plain')
    assert torch.equal(plain['model.module.backbone.0.weight'], final['model.module.backbone.0.weight'])
    norm = 'model.module.backbone.1.running_mean'
    assert not torch.allclose(plain[norm], final[norm])
    assert ('train.precise_bn: BatchNorm statistics of 1 layers recomputed over 4 batches (16 samples) of the '
            'training data') in _log(tmp_path / 'run')


@pytest.mark.parametrize('stop_after', [4, 6])
def test_a_resumed_run_and_a_rerun_of_a_finished_one_write_the_same_final_checkpoint(tmp_path, stop_after):
    """4: stopped before the recomputation; 6: stopped at the last step, whose checkpoint holds the recomputed
    statistics (the resumed run has no step left and recomputes them at its end)."""
    straight = tmp_path / 'straight'
    _train(straight, _experiment(3))
    stopped = tmp_path / 'stopped'
    trainer = Trainer(_experiment(3), helpers.options(str(stopped)))
    helpers.record_steps(trainer, stop_after=stop_after)
    assert trainer.train()['interrupted']
    assert not os.path.exists(stopped / 'model' / 'final')
    _train(stopped, _experiment(3, resume=str(stopped / 'model' / 'latest')))
    expected = helpers.model_state(str(straight))
    resumed = helpers.model_state(str(stopped))
    assert all(torch.equal(resumed[key], expected[key]) for key in expected)
    # final is latest: running the finished run again recomputes the same statistics from the same weights
    _train(stopped, _experiment(3, resume=str(stopped / 'model' / 'latest')))
    again = helpers.model_state(str(stopped))
    assert all(torch.equal(again[key], expected[key]) for key in expected)
    assert int(expected['model.module.backbone.1.num_batches_tracked']) == 3


def test_batches_with_a_non_finite_input_are_passed_over(tmp_path):
    """img_0 is NaN: training skips its steps, and the recomputation passes over its batches and takes the next."""
    train_set = helpers.TinyTrainSet(12, nan_files=('img_0.jpg',))
    _train(tmp_path, _experiment(3, train_set=train_set))
    final = helpers.model_state(str(tmp_path))
    assert all(torch.isfinite(value.float()).all() for value in final.values())
    mean, variance = _expected_statistics(final, train_set, 3, lambda batch: 'img_0.jpg' not in batch['filename'])
    assert torch.allclose(final['model.module.backbone.1.running_mean'].double(), mean, rtol=1e-5, atol=1e-6)
    assert torch.allclose(final['model.module.backbone.1.running_var'].double(), variance, rtol=1e-5, atol=1e-6)
    assert 'passed over 1 with a non-finite input (' in _log(tmp_path) and 'img_0.jpg (image)' in _log(tmp_path)


def _poison_statistics(monkeypatch):
    import training.trainer as trainer_module
    real = trainer_module.recompute_statistics

    def poisoned(model, inputs, forward):
        done = real(model, inputs, forward)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_var[0] = float('inf')
        return done

    monkeypatch.setattr(trainer_module, 'recompute_statistics', poisoned)


@pytest.mark.parametrize('failure', ['statistics', 'probability map'])
def test_statistics_that_are_not_finite_or_give_a_non_finite_map_are_not_kept(tmp_path, monkeypatch, failure):
    plain = _without_precise_bn(tmp_path / 'plain')
    if failure == 'statistics':
        _poison_statistics(monkeypatch)
    else:
        calls, real = [], Trainer._prediction_is_finite

        def check(self, batch, training_mode=False):  # fails for the recomputation's check alone
            if sys._getframe(1).f_code.co_name != 'recompute_batchnorm_statistics':
                return real(self, batch, training_mode)
            calls.append(batch['filename'])
            return False

        monkeypatch.setattr(Trainer, '_prediction_is_finite', check)
    _train(tmp_path / 'run', _experiment(2))
    final = helpers.model_state(str(tmp_path / 'run'))
    assert all(torch.equal(final[key], plain[key]) for key in final)  # the moving averages training left
    assert ('train.precise_bn: BatchNorm statistics kept as training left them: the recomputed ones are not finite '
            'or give a non-finite probability map') in _log(tmp_path / 'run')
    if failure == 'probability map':
        assert len(calls) == 1 and len(calls[0]) == 4  # checked once, on the first batch of the recomputation
