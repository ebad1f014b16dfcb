"""No checkpoint that cannot predict (issue 25): a step is kept only if the model it leaves gives a finite
forward, a save never writes a state whose probability map is non-finite, and a run with a huge learning rate ends
with one clear error, leaving only usable checkpoints."""
import os

import pytest
import torch
import torch.nn.functional as F

import training_helpers as helpers
from concern.checkpoint_io import read_weights_file
from training.hooks import NonFiniteStop
from training.trainer import Trainer


def probe_batch():
    return torch.utils.data.default_collate([helpers.TinyTrainSet(4)[i] for i in range(4)])


def every_checkpoint_predicts(workspace, builder):
    """Each checkpoint file of the run, loaded through the project's reader into a fresh model: its probability
    map on a few training images is finite. Returns the names checked."""
    folder = os.path.join(str(workspace), 'model')
    names = sorted(name for name in os.listdir(folder) if name.startswith('model_epoch_')
                   or name in ('latest', 'final', 'best'))
    for name in names:
        model = builder.build()
        model.load_state_dict(read_weights_file(os.path.join(folder, name))['model'])
        with torch.no_grad():
            assert torch.isfinite(model.eval()(probe_batch(), training=False)).all(), name
    return names


class BCEDetector(helpers.TinyDetector):
    """The real loss's habit: ``F.binary_cross_entropy`` on the probability map raises on NaN instead of giving
    a NaN loss (issue 25: training died there with a raw traceback)."""

    def forward(self, batch, training=None):
        result = super().forward(batch, training)
        if not (self.training if training is None else training):
            return result
        loss, pred, metrics = result
        return loss + F.binary_cross_entropy(pred['binary'][:, 0], batch['gt'][:, 0]), pred, metrics


class BCEBuilder(helpers.TinyBuilder):
    def build(self):
        return BCEDetector()


@pytest.mark.parametrize('lr, batch_norm, bce', [(1e30, False, False), (1e30, True, False), (1e6, False, False),
                                                 (1e6, True, False), (1e30, False, True), (1e6, False, True)])
def test_a_huge_learning_rate_ends_clearly_and_leaves_only_usable_checkpoints(tmp_path, lr, batch_norm, bce):
    experiment = helpers.make_experiment(helpers.TinyTrainSet(16), epochs=4, lr=lr, batch_norm=batch_norm,
                                         save_interval=1, momentum=0.0)
    if bce:
        experiment.structure.builder = BCEBuilder()
    with pytest.raises(NonFiniteStop) as raised:  # FloatingPointError, never the loss's RuntimeError
        Trainer(experiment, helpers.options(str(tmp_path))).train()
    message = str(raised.value)
    assert message.startswith('training stopped: ') and 'consecutive steps skipped or rolled back' in message
    assert f'resume from {tmp_path / "model" / "latest"}' in message and 'lower --lr' in message
    names = every_checkpoint_predicts(tmp_path, experiment.structure.builder)
    assert any(name.startswith('model_epoch_') for name in names)
    # every step is saved (save_interval 1), and a saved step is final: the failures after it are skipped steps
    log = (tmp_path / 'output.log').read_text()
    assert 'step skipped at iteration' in log and 'is rolled back: its weights' not in log


def test_the_previous_step_is_rolled_back_when_its_weights_fail_the_next_forward(tmp_path):
    # one step of a huge learning rate among normal ones: its weights are undone, training goes on and finishes
    experiment = helpers.make_experiment(helpers.TinyTrainSet(16), epochs=2, lr=0.05, batch_norm=True,
                                         save_interval=1000, momentum=0.0)
    trainer = Trainer(experiment, helpers.options(str(tmp_path)))
    run_step = trainer.run_step

    def spiking(batch):
        base = trainer.lr
        if trainer.iteration == 2:
            for group in trainer.optimizer.param_groups:
                group['lr'] = 1e30
        result = run_step(batch)
        for group in trainer.optimizer.param_groups:
            group['lr'] = base
        return result
    trainer.run_step = spiking
    summary = trainer.train()
    assert summary['iteration'] == 8 and not summary['interrupted']
    log = (tmp_path / 'output.log').read_text()
    rolled = [line for line in log.splitlines() if 'rolled back' in line]
    assert len(rolled) == 1 and 'step skipped at iteration 3' in rolled[0]
    assert '(iteration 2) is rolled back' in rolled[0]
    every_checkpoint_predicts(tmp_path, experiment.structure.builder)
    with torch.no_grad():
        assert torch.isfinite(trainer.model.eval()(probe_batch(), training=False)).all()


def poison_the_step_at(trainer, iteration, poisoned):
    """At step ``iteration`` the optimizer leaves finite weights whose probability map is NaN (inf - inf in the
    decoder); ``poisoned`` gets whether the map really was NaN."""
    run_step = trainer.run_step

    def poisoning(batch):
        if trainer.iteration == iteration:
            step = trainer.optimizer.step

            def poisoned_step(*args, **kwargs):
                result = step(*args, **kwargs)
                with torch.no_grad():
                    trainer.model.model.module.backbone.weight.fill_(3e38)
                    decoder = trainer.model.model.module.decoder.weight
                    decoder.copy_(torch.where(torch.arange(decoder.numel()).reshape(decoder.shape) % 2 == 0, 1.0, -1.0))
                    trainer.model.eval()
                    poisoned.append(bool(torch.isfinite(trainer.model(batch, training=False)).all()))
                    trainer.model.train()
                return result
            trainer.optimizer.step = poisoned_step
            try:
                return run_step(batch)
            finally:
                trainer.optimizer.step = step
        return run_step(batch)
    trainer.run_step = poisoning


def test_weights_whose_probability_map_is_not_finite_are_rolled_back_before_their_checkpoint(tmp_path):
    experiment = helpers.make_experiment(helpers.TinyTrainSet(8), epochs=2, save_interval=1)
    trainer = Trainer(experiment, helpers.options(str(tmp_path)))
    poisoned = []
    poison_the_step_at(trainer, 2, poisoned)
    summary = trainer.train()
    assert poisoned == [False] and summary['iteration'] == 4  # the weights really gave a NaN map
    log = (tmp_path / 'output.log').read_text()
    assert 'step skipped at iteration 2 (epoch 1): the weights of this step give a non-finite probability map ' \
           '(checked before its checkpoint): the step is rolled back' in log
    names = every_checkpoint_predicts(tmp_path, experiment.structure.builder)
    assert 'model_epoch_1_minibatch_3' in names


def test_a_save_on_request_never_writes_weights_whose_probability_map_is_not_finite(tmp_path):
    def touch():
        (tmp_path / 'save').write_text('')
    experiment = helpers.make_experiment(helpers.TinyTrainSet(8, hooks={9: touch}), epochs=2, signal_path='save',
                                         shuffle=False)
    trainer = Trainer(experiment, helpers.options(str(tmp_path)))
    poisoned = []
    poison_the_step_at(trainer, 2, poisoned)  # the step whose batch loads sample 9, which asks for a checkpoint
    trainer.train()
    assert poisoned == [False]
    log = (tmp_path / 'output.log').read_text()
    assert 'step of iteration 2 rolled back before the checkpoint: its weights give a non-finite probability map' \
        in log
    assert 'checkpoint saved at iteration 3 on request' in log
    names = every_checkpoint_predicts(tmp_path, experiment.structure.builder)
    assert 'model_epoch_1_minibatch_3' in names


def fail_the_forward_at(trainer, iteration):
    """The step forward at ``iteration`` (0-based) reports a non-finite loss, as weights that are huge but finite
    would; the check of the same batch with other weights (``_loss_is_finite``) runs as usual."""
    forward = trainer._training_forward

    def failing(model, batch):
        if trainer.iteration == iteration:
            trainer.guard.restore_buffers()
            return None, None, None, 'non-finite loss (injected by the test)'
        return forward(model, batch)
    trainer._training_forward = failing


def test_a_step_written_to_a_checkpoint_is_never_rolled_back_so_a_resume_is_bit_exact(tmp_path):
    # review item 1: the step of iteration 2 is saved (save_interval 2); the next forward fails. Were that step
    # rolled back, the run would go on from weights its checkpoint does not hold, and a resume from it would differ.
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    experiment = helpers.make_experiment(helpers.TinyTrainSet(16), epochs=2, save_interval=2)
    experiment.train.model_saver.keep_last = 0
    trainer = Trainer(experiment, helpers.options(str(whole)))
    fail_the_forward_at(trainer, 2)
    trainer.train()
    log = (whole / 'output.log').read_text()
    assert 'step skipped at iteration 2' in log and 'rolled back' not in log
    checkpoint = str(whole / 'model' / 'model_epoch_0_minibatch_2')
    experiment = helpers.make_experiment(helpers.TinyTrainSet(16), epochs=2, save_interval=2, resume=checkpoint)
    trainer = Trainer(experiment, helpers.options(str(resumed)))
    fail_the_forward_at(trainer, 2)
    trainer.train()
    first, second = helpers.model_state(str(whole)), helpers.model_state(str(resumed))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


class MonsterImage(helpers.TinyTrainSet):
    """Finite images of 1e25 (``monsters``), on which the models below give a NaN probability map with any
    weights: the batch is to blame, never a step."""

    def __init__(self, length, monsters):
        super().__init__(length, hooks={})
        self.monsters = set(monsters)

    def __getitem__(self, index):
        sample = super().__getitem__(index)
        if index in self.monsters:
            sample['image'] = torch.full_like(sample['image'], 1e25)
        return sample


def nan_on_monsters(batch):
    image = batch['image']
    monster = image.abs().flatten(1).amax(dim=1) > 1e20
    return dict(batch, image=torch.where(monster[:, None, None, None], float('nan'), image))


class MonsterDetector(helpers.TinyDetector):
    def forward(self, batch, training=None):
        return super().forward(nan_on_monsters(batch), training)


class MonsterBCEDetector(BCEDetector):
    def forward(self, batch, training=None):
        return super().forward(nan_on_monsters(batch), training)


class MonsterBuilder(helpers.TinyBuilder):
    def __init__(self, bce=False):
        super().__init__()
        self.bce = bce

    def build(self):
        return MonsterBCEDetector() if self.bce else MonsterDetector()


def test_a_save_after_a_blamed_batch_verifies_on_a_batch_the_weights_stepped_on(tmp_path):
    # review item 5: the step of iteration 1 (samples 4-7) is skipped, its batch blamed; the checkpoint asked for
    # after it is verified on the batch of the last committed step, not on the blamed one (which gives NaN with any
    # weights: the save used to fail with NonFiniteCheckpointError)
    data = MonsterImage(8, monsters=(5,))
    data.hooks = {5: lambda: (tmp_path / 'save').write_text('')}
    experiment = helpers.make_experiment(data, epochs=2, signal_path='save', shuffle=False)
    experiment.structure.builder = MonsterBuilder()
    trainer = Trainer(experiment, helpers.options(str(tmp_path)))
    summary = trainer.train()
    assert summary['iteration'] == 4 and not summary['interrupted']
    log = (tmp_path / 'output.log').read_text()
    assert 'step skipped at iteration 1' in log and 'checkpoint saved at iteration 2 on request' in log
    every_checkpoint_predicts(tmp_path, experiment.structure.builder)


def test_a_loss_that_raises_on_a_nan_map_is_a_failed_forward_without_a_second_forward(tmp_path):
    # review item 3: under DDP with --sync_bn a second forward in training mode on the one rank whose loss raised
    # would run SyncBatchNorm collectives the other ranks never join (a hang): the error is a failed forward, and
    # the check over every rank decides
    experiment = helpers.make_experiment(MonsterImage(12, monsters=(5,)), epochs=2, shuffle=False)
    experiment.structure.builder = MonsterBuilder(bce=True)
    trainer = Trainer(experiment, helpers.options(str(tmp_path)))
    modes = []
    check = trainer._prediction_is_finite

    def spying(batch, training_mode=False):
        modes.append(training_mode)
        return check(batch, training_mode)
    trainer._prediction_is_finite = spying
    summary = trainer.train()
    assert summary['iteration'] == 6 and True not in modes
    log = (tmp_path / 'output.log').read_text()
    assert 'step skipped at iteration 1' in log and 'the loss failed on a non-finite probability map' in log
