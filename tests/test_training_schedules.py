"""Learning-rate schedules (values worked out by hand) and the optimizer scheduler."""
import warnings

import pytest
import torch

from training.learning_rate import (ConstantLearningRate, DecayLearningRate, MultiStepLR,
                                    PiecewiseConstantLearningRate, WarmupLR)
from training.optimizer_scheduler import OptimizerScheduler


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
