"""Learning-rate schedules (values worked out by hand) and the optimizer scheduler."""
import os
import warnings

import pytest
import torch

import training_helpers as helpers
from concern.config import ObjectBuilder, get_path, load_config
from training.learning_rate import (ConstantLearningRate, DecayLearningRate, MultiStepLR,
                                    PiecewiseConstantLearningRate, PolyIterationLearningRate, WarmupLR,
                                    bind_run_length)
from training.optimizer_scheduler import OptimizerScheduler
from training.trainer import Trainer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('lr, epoch, epochs, expected', [
    (0.007, 0, 1200, 0.007),
    (0.007, 1, 1200, 0.00699475415290462),  # 0.007 * (1200/1201) ** 0.9
    (0.007, 600, 1200, 0.00375401806466948),  # 0.007 * (601/1201) ** 0.9
    (0.007, 1200, 1200, 0.0000118442982111111),  # 0.007 * (1/1201) ** 0.9
    (0.01, 3, 10, 0.00750805718312113),  # 0.01 * (8/11) ** 0.9
])
def test_decay_learning_rate_values(lr, epoch, epochs, expected):
    schedule = DecayLearningRate(lr=lr, epochs=epochs)
    for step in (0, 12345):  # epoch-based: the step does not matter
        assert schedule.get_learning_rate(epoch, step) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize('step, expected', [
    (0, 0.002),
    (45, 0.00154377901345),  # 0.002 * (135/180) ** 0.9
    (90, 0.00107177346254),  # 0.002 * (1/2) ** 0.9
    (179, 0.0000186760376627),  # 0.002 * (1/180) ** 0.9
    (180, 0.0),
    (10_000, 0.0),  # past the run's length the rate stays 0
])
def test_poly_iteration_learning_rate_values(step, expected):
    schedule = PolyIterationLearningRate(lr=0.002, iterations=180)
    for epoch in (0, 2, 99):  # iteration-based: the epoch does not matter
        assert schedule.get_learning_rate(epoch, step) == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert schedule.base_lr == 0.002


def test_poly_iteration_ends_where_the_per_epoch_form_does_not():
    # a 3-epoch run of 60 iterations per epoch: the per-epoch form spends its last epoch at (2/4) ** 0.9 of the
    # starting rate, the per-iteration form decays to 0 over the same 180 iterations
    per_epoch, per_iteration = DecayLearningRate(lr=1.0, epochs=3), PolyIterationLearningRate(lr=1.0, iterations=180)
    assert per_epoch.get_learning_rate(2, 179) == pytest.approx(0.5 ** 0.9)
    assert per_iteration.get_learning_rate(2, 179) < 0.01
    rates = [per_iteration.get_learning_rate(s // 60, s) for s in range(181)]
    assert all(a > b for a, b in zip(rates, rates[1:]))  # strictly decreasing, every iteration
    with pytest.raises(ValueError, match='iterations must be a whole number >= 1'):
        PolyIterationLearningRate(lr=0.1, iterations=0)
    with pytest.raises(ValueError, match='factor must be > 0'):
        PolyIterationLearningRate(lr=0.1, iterations=10, factor=0)


def test_poly_iteration_without_a_length_takes_the_run_length_through_a_warm_up():
    schedule = PolyIterationLearningRate(lr=1.0)
    with pytest.raises(RuntimeError, match='run length is not known'):
        schedule.get_learning_rate(0, 0)
    warmup = WarmupLR(steps=2, warmup_lr=0.0, origin_lr=schedule)
    bind_run_length(warmup, 40)
    assert schedule.get_learning_rate(0, 20) == pytest.approx(0.5 ** 0.9)
    fixed = PolyIterationLearningRate(lr=1.0, iterations=10)
    bind_run_length(fixed, 40)  # a length given in the file wins
    assert fixed.get_learning_rate(0, 5) == pytest.approx(0.5 ** 0.9)
    bind_run_length(ConstantLearningRate(0.1), 40)  # schedules without a length are left alone
    bind_run_length(None, 40)


def _poly_run(workspace, epochs=3, resume=None, stop_after=None):
    """The tiny trainer (8 samples in batches of 2) under WarmupLR(2 steps) around PolyIterationLearningRate(
    iterations=None); the rate of each step it takes."""
    experiment = helpers.make_experiment(helpers.TinyTrainSet(8), batch_size=2, epochs=epochs, lr=0.05, resume=resume)
    experiment.train.scheduler = OptimizerScheduler(
        'SGD', {'lr': 0.05, 'momentum': 0.9},
        WarmupLR(steps=2, warmup_lr=0.01, origin_lr=PolyIterationLearningRate(lr=0.05)))
    trainer = Trainer(experiment, helpers.options(str(workspace)))
    rates = []
    run_step = trainer.run_step

    def recorded(batch):
        rates.append(trainer.optimizer.param_groups[0]['lr'])
        result = run_step(batch)
        if stop_after is not None and len(rates) >= stop_after:
            trainer.stop_reason = 'stopped by the test'
        return result

    trainer.run_step = recorded
    trainer.train()
    return rates


# 3 epochs of 4 steps: 12 steps, whatever the file says about iterations; worked out by hand from the formulas
TWELVE_STEPS = [0.01, 0.01 + (0.05 * (11 / 12) ** 0.9 - 0.01) / 2] + [0.05 * (1 - s / 12) ** 0.9 for s in range(2, 12)]


def test_the_trainer_decays_over_the_runs_own_length(tmp_path):
    rates = _poly_run(tmp_path)
    assert rates == pytest.approx(TWELVE_STEPS, rel=1e-9)
    assert rates[-1] == pytest.approx(0.05 * (1 / 12) ** 0.9)  # the last step runs near 0, not at 0


def test_a_resumed_run_continues_on_the_same_curve(tmp_path):
    before = _poly_run(tmp_path, stop_after=6)
    after = _poly_run(tmp_path, resume=str(tmp_path / 'model' / 'latest'))
    assert len(before) == 6 and before + after == pytest.approx(TWELVE_STEPS, rel=1e-9)


def test_a_length_in_the_file_that_differs_from_the_run_is_reported():
    schedule = PolyIterationLearningRate(lr=1.0, iterations=10)
    (line,) = bind_run_length(WarmupLR(steps=1, warmup_lr=0.0, origin_lr=schedule), 12)
    assert 'iterations=10 from the file' in line and '12 iterations' in line
    assert bind_run_length(schedule, 10) == []
    assert 'the run\'s 12 iterations' in bind_run_length(PolyIterationLearningRate(lr=1.0), 12)[0]
    with pytest.raises(ValueError, match='whole number'):
        PolyIterationLearningRate(lr=1.0, iterations=600.7)


def test_multistep_piecewise_constant_values():
    multistep = MultiStepLR(lr=0.1, milestones=[2, 5], gamma=0.1)
    assert [multistep.get_learning_rate(e, 0) for e in range(7)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001])
    piecewise = PiecewiseConstantLearningRate(boundaries=[10, 20], values=[1.0, 0.5, 0.1])
    assert [piecewise.get_learning_rate(0, s) for s in (0, 9, 10, 19, 20, 1000)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    assert ConstantLearningRate(0.3).get_learning_rate(99, 99) == 0.3


def test_warmup_is_linear_then_follows_the_wrapped_schedule():
    warmup = WarmupLR(steps=10, warmup_lr=0.1, origin_lr=ConstantLearningRate(1.0))
    assert [warmup.get_learning_rate(0, s) for s in (0, 5, 9, 10, 500)] == pytest.approx([0.1, 0.55, 0.91, 1.0, 1.0])
    wrapped = WarmupLR(steps=4, warmup_lr=0.0, origin_lr=MultiStepLR(lr=0.2, milestones=[1], gamma=0.5))
    assert wrapped.get_learning_rate(0, 2) == pytest.approx(0.1)  # half way to 0.2
    assert wrapped.get_learning_rate(3, 40) == pytest.approx(0.1)  # the wrapped schedule after milestone 1
    assert wrapped.base_lr == 0.2


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match='one more entry'):
        PiecewiseConstantLearningRate(boundaries=[1, 2], values=[1.0, 2.0])
    with pytest.raises(ValueError, match='sorted'):
        MultiStepLR(lr=0.1, milestones=[5, 2])
    with pytest.raises(ValueError, match='origin_lr'):
        WarmupLR(steps=3, warmup_lr=0.1, origin_lr=0.5)


def test_optimizer_scheduler_builds_any_torch_optimizer_and_sets_the_rate():
    parameters = [torch.nn.Parameter(torch.ones(3))]
    scheduler = OptimizerScheduler('AdamW', {'lr': 0.01, 'weight_decay': 0.0}, DecayLearningRate(lr=0.01, epochs=10))
    optimizer = scheduler.create_optimizer(parameters)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert scheduler.apply(optimizer, 3, 0) == pytest.approx(0.00750805718312113)
    assert optimizer.param_groups[0]['lr'] == pytest.approx(0.00750805718312113)
    plain = OptimizerScheduler('SGD', {'lr': 0.2})
    sgd = plain.create_optimizer(parameters)
    assert plain.apply(sgd, 5, 5) == 0.2  # no schedule: the optimizer keeps its rate


def test_optimizer_scheduler_errors_and_lr_mismatch_warning():
    with pytest.raises(ValueError, match="unknown torch.optim optimizer 'Sgd'.*SGD"):
        OptimizerScheduler('Sgd')
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['betas'\] for torch.optim.SGD"):
        OptimizerScheduler('SGD', {'lr': 0.1, 'betas': (0.9, 0.99)})
    with pytest.warns(UserWarning, match='optimizer_args.lr = 0.01 differs .* 0.007 is used'):
        OptimizerScheduler('SGD', {'lr': 0.01}, DecayLearningRate())
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        OptimizerScheduler('SGD', {'lr': 0.007, 'momentum': 0.9}, DecayLearningRate())


def test_the_budget_experiment_decays_over_its_own_length(monkeypatch):
    """experiments/seg_detector/synthetic_resnet18_deform_thre_budget.yaml: what docs/training.md measured (batch 4,
    192x192 crops of images scaled by 0.3-0.6, evaluation at 288, the poly decay per iteration over the run)."""
    monkeypatch.chdir(REPO_ROOT)  # the experiment files import others relative to the working directory
    config = load_config('experiments/seg_detector/synthetic_resnet18_deform_thre_budget.yaml')
    assert get_path(config, 'train.data_loader.batch_size') == 4 and get_path(config, 'train.epochs') == 4
    assert get_path(config, 'train.scheduler.learning_rate.origin_lr.iterations') is None  # the run's length
    train_processes = get_path(config, 'train.data_loader.dataset.processes')
    assert train_processes[0]['augmenter_args'][1] == ['Resize', [0.3, 0.6]]
    assert train_processes[1]['size'] == [192, 192]
    evaluation = get_path(config, 'evaluation.data_loaders.synthetic.dataset.processes')
    assert evaluation[0]['augmenter_args'] == [['Resize', {'width': 288, 'height': 288}]]
    scheduler = ObjectBuilder(config).build(get_path(config, 'train.scheduler'), 'train.scheduler')
    bind_run_length(scheduler.learning_rate, 600)  # 4 epochs of the demo's 600 images in batches of 4
    assert scheduler.learning_rate_at(2, 300) == pytest.approx(0.001 * 0.5 ** 0.9)
    assert scheduler.learning_rate_at(3, 599) == pytest.approx(0.001 * (1 / 600) ** 0.9)
