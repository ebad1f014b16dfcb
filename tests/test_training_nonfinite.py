"""No checkpoint ever holds a non-finite number (issue: NaN / inf reach the weights).

(a) a NaN image: caught before the forward, its file named, the step skipped;
(b) a huge learning rate: steps whose weights or statistics overflow are rolled back, checkpoints stay finite;
(c) a forward that overflows BatchNorm's running variance: the step is skipped AND the statistics restored.
After each run every tensor of every checkpoint is finite and the trained model's output is finite.
"""
import os

import pytest
import torch

import training_helpers as helpers
from training.nonfinite import NonFiniteGuard, all_finite, non_finite_inputs
from training.trainer import Trainer


def _train(workspace, experiment, **overrides):
    trainer = Trainer(experiment, helpers.options(str(workspace), **overrides))
    return trainer, trainer.train()


def _every_checkpoint_finite(workspace):
    folder = os.path.join(str(workspace), 'model')
    names = [name for name in os.listdir(folder) if not name.startswith('.') and name != 'last_checkpoint']
    assert names
    for name in names:
        content = torch.load(os.path.join(folder, name), map_location='cpu', weights_only=True)
        tensors = list(content['model'].values())
        for state in content['optimizer']['state'].values():
            tensors += [value for value in state.values() if isinstance(value, torch.Tensor)]
        assert all_finite(tensors), name
    return names


def _output_finite(trainer):
    batch = torch.utils.data.default_collate([helpers.TinyTrainSet(4)[i] for i in range(4)])
    model = trainer.model.eval()
    with torch.no_grad():
        return bool(torch.isfinite(model(batch, training=False)).all())


def test_a_nan_image_is_caught_before_the_forward_and_named(tmp_path):
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12, nan_files=('img_3.jpg',)), epochs=2,
                                         batch_norm=True, save_interval=1)
    trainer, summary = _train(tmp_path, experiment)
    assert summary['iteration'] == 6 and not summary['interrupted']
    _every_checkpoint_finite(tmp_path)
    assert _output_finite(trainer)
    log = (tmp_path / 'output.log').read_text()
    skipped = [line for line in log.splitlines() if 'non-finite input' in line]
    assert len(skipped) == 2 and all('img_3.jpg (image)' in line for line in skipped)  # once per epoch


def test_overflowing_batchnorm_statistics_are_restored(tmp_path):
    # img_5's activations square to inf in the running variance: without the restore every later checkpoint
    # held inf BatchNorm buffers and the model's output was NaN
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12, huge_files=('img_5.jpg',)), epochs=2,
                                         batch_norm=True, save_interval=1)
    trainer, summary = _train(tmp_path, experiment)
    assert summary['iteration'] == 6
    _every_checkpoint_finite(tmp_path)
    assert _output_finite(trainer)
    bn = trainer.model.model.module.backbone[1]
    assert torch.isfinite(bn.running_var).all() and bn.running_var.max() < 1e3
    log = (tmp_path / 'output.log').read_text()
    assert sum('non-finite loss' in line and 'img_5.jpg' in line for line in log.splitlines()) == 2


def test_a_huge_learning_rate_never_reaches_a_checkpoint(tmp_path):
    experiment = helpers.make_experiment(helpers.TinyTrainSet(16), epochs=4, lr=1e30, batch_norm=True,
                                         save_interval=1, momentum=0.0)
    trainer = Trainer(experiment, helpers.options(str(tmp_path), max_nan_steps=3))
    try:
        trainer.train()
    except FloatingPointError as error:  # a run of rolled-back steps stops training, clearly
        assert 'consecutive steps skipped' in str(error)
    names = _every_checkpoint_finite(tmp_path)
    assert any(name.startswith('model_epoch') for name in names)
    assert all_finite(list(trainer.model.parameters()) + list(trainer.model.buffers()))


@pytest.mark.parametrize('fused', [False, True])  # True: the `make demo` recipe's fused Adam
def test_guard_rolls_back_parameters_buffers_and_optimizer_state_exactly(fused):
    model = helpers.TinyBNDetector()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, fused=fused)
    batch = torch.utils.data.default_collate([helpers.TinyTrainSet(4)[i] for i in range(4)])
    for _ in range(2):  # give Adam a state
        optimizer.zero_grad()
        model(batch, training=True)[0].backward()
        optimizer.step()
    guard = NonFiniteGuard(model, optimizer)
    guard.snapshot()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    state_before = {id(p): {k: v.clone() for k, v in s.items()} for p, s in optimizer.state.items()}
    model(batch, training=True)  # updates the running statistics
    with torch.no_grad():
        next(model.parameters()).fill_(float('inf'))
        for state in optimizer.state.values():
            state['exp_avg'].fill_(float('nan'))
            state['step'] += 5  # the step count (a tensor) is state too
    assert not guard.state_ok()
    guard.restore_all()
    assert guard.state_ok()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    for parameter, state in optimizer.state.items():
        for key, value in state.items():
            assert torch.equal(value, state_before[id(parameter)][key]), key


def test_non_finite_inputs_names_files_and_keys():
    batch = {'image': torch.zeros(3, 2), 'gt': torch.zeros(3, 2), 'filename': ['a.jpg', 'b.jpg', 'c.jpg']}
    batch['image'][1, 0] = float('nan')
    batch['gt'][1, 1] = float('inf')
    batch['gt'][2, 0] = float('-inf')
    assert non_finite_inputs(batch) == ['b.jpg (image, gt)', 'c.jpg (gt)']
    assert non_finite_inputs({'image': torch.zeros(2, 2)}) == []


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_all_finite_sees_one_bad_element(value):
    tensors = [torch.zeros(1000), torch.ones(3, 3)]
    assert all_finite(tensors)
    tensors[1][2, 2] = value
    assert not all_finite(tensors)


def test_restoring_a_snapshot_restores_the_grad_scaler_too():
    # review item 7: fp16 AMP's GradScaler (scale, growth tracker) is part of the state a rollback restores; left
    # as it was after the rejected step, the run would differ from one resumed from the checkpoint before it
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler('cpu', init_scale=1024.0, growth_interval=1)
    guard = NonFiniteGuard(model, optimizer, scaler=scaler)

    def step():
        optimizer.zero_grad()
        scaler.scale(model(torch.ones(2, 3)).sum()).backward()
        scaler.step(optimizer)
        scaler.update()
    step()
    guard.snapshot()
    before = scaler.state_dict()
    step()
    assert scaler.state_dict() != before  # the scale grew
    guard.restore_all()
    assert scaler.state_dict() == before
    guard.commit()
    step()
    guard.snapshot()
    guard.undo_previous_step()
    assert scaler.state_dict() == before
    guard.redo_previous_step()
    assert scaler.get_scale() == 2 * before['scale']
