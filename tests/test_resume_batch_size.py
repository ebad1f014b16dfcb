"""Resume with another batch size or world size (issue 23): the run continues at the sample after those its epoch
already trained, or refuses naming what it would skip; never skips in silence."""
import random

import pytest
import torch

import training_helpers as helpers
from data.sampler import EpochBatchSampler, epoch_span
from training.checkpoint import Checkpoint, ResumeWouldSkipError, StartState, plan_resume, read_checkpoint_file
from training.trainer import Trainer, TrainingStartError

SEED = 0  # helpers.options' seed: the data order's seed of a fresh run


def _order(length, epoch, seed=SEED):
    return EpochBatchSampler(length, 1, shuffle=True, seed=seed).epoch_order(epoch)


def _run(workspace, experiment, stop_after=None):
    trainer = Trainer(experiment, helpers.options(str(workspace)))
    steps = helpers.record_steps(trainer, stop_after)
    return trainer, trainer.train(), steps


def _trained(steps, epoch):
    return [index for number, indices in steps if number == epoch for index in indices]


def _interrupted(workspace, length=8, batch_size=2, stop_after=2, config=None):
    """A run of ``length`` samples in batches of ``batch_size``, stopped after ``stop_after`` steps of epoch 0."""
    _, summary, steps = _run(workspace, helpers.make_experiment(helpers.TinyTrainSet(length), batch_size=batch_size,
                                                                epochs=2, config=config), stop_after)
    assert summary['interrupted'] and (summary['epoch'], summary['epoch_iteration']) == (0, stop_after)
    return steps


# ---------------------------------------------------------------------------------------------- the trainer


def test_resume_with_a_larger_batch_trains_the_rest_of_the_epoch_each_sample_once(tmp_path):
    """The issue's case: 2 of 4 batches of 2, resumed with batch 4; before, samples 4..7 of the order were lost."""
    before = _interrupted(tmp_path)
    saved = read_checkpoint_file(str(tmp_path / 'model' / 'latest'))
    assert saved['data_position'] == {'epoch_samples': 4, 'epoch_end': 8, 'global_batch': 2, 'world_size': 1,
                                      'dataset_length': 8}
    experiment = helpers.make_experiment(helpers.TinyTrainSet(8), batch_size=4, epochs=2,
                                         resume=str(tmp_path / 'model' / 'latest'))
    trainer, summary, after = _run(tmp_path, experiment)
    steps = before + after
    # epoch 0: every sample exactly once, in the epoch's order (which depends on neither batch nor world size)
    assert _trained(steps, 0) == _order(8, 0)
    assert sorted(_trained(steps, 0)) == list(range(8))
    assert [len(indices) for number, indices in steps if number == 0] == [2, 2, 4]
    assert _trained(steps, 1) == _order(8, 1)  # the next epoch whole, in batches of 4
    # iteration counts steps of whichever size; the epoch's steps too
    assert summary['iteration'] == 2 + 1 + 2 and not summary['interrupted']
    log = (tmp_path / 'output.log').read_text()
    assert ('resume: epoch 0 continues at sample 4 of 8 of its order (4 trained) with global batch 4, world size 1 '
            '(saved with global batch 2, world size 1): 1 step(s) left in the epoch') in log


def test_resume_with_a_smaller_batch_continues_at_the_same_sample(tmp_path):
    before = _interrupted(tmp_path, length=12, batch_size=4, stop_after=1)
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12), batch_size=2, epochs=2,
                                         resume=str(tmp_path / 'model' / 'latest'))
    _, summary, after = _run(tmp_path, experiment, stop_after=2)  # interrupted again, now with batch 2
    assert (summary['epoch'], summary['epoch_iteration'], summary['epoch_samples']) == (0, 3, 8)
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12), batch_size=4, epochs=1,
                                         resume=str(tmp_path / 'model' / 'latest'))
    _, summary, last = _run(tmp_path, experiment)
    assert _trained(before + after + last, 0) == _order(12, 0)
    assert summary['iteration'] == 1 + 2 + 1


def test_a_resume_that_would_skip_samples_is_refused_naming_them_unless_accepted(tmp_path):
    before = _interrupted(tmp_path, stop_after=1)  # 2 of 8 trained; batch 4 makes 1 full step of the 6 left
    config_before = (tmp_path / 'config.yaml').read_text()
    order = _order(8, 0)
    latest = str(tmp_path / 'model' / 'latest')
    refused = helpers.make_experiment(helpers.TinyTrainSet(8), batch_size=4, epochs=2, resume=latest,
                                      config={'Experiment': {'other': True}})
    with pytest.raises(TrainingStartError) as caught:
        _run(tmp_path, refused)
    message = str(caught.value)
    assert (f'epoch 0: 2 of the 6 samples not yet trained would be skipped (sample(s) {order[6]}, {order[7]} at '
            'positions 6..7 of its order)') in message
    assert '--batch_size 2 or 3 or 6 or 1' in message and '--accept_skipped_samples' in message
    assert (tmp_path / 'config.yaml').read_text() == config_before  # nothing written by the refused start

    accepted = helpers.make_experiment(helpers.TinyTrainSet(8), batch_size=4, epochs=1)
    accepted.train.checkpoint = Checkpoint(resume=latest, accept_skipped_samples=True)
    _, summary, after = _run(tmp_path, accepted)
    assert _trained(before + after, 0) == order[:6]  # what the refusal named is what was skipped
    assert '2 of the 6 samples not yet trained skipped (drop_last), as accepted' in \
        (tmp_path / 'output.log').read_text()


def _without_data_position(path, target, config):
    content = read_checkpoint_file(path)
    del content['data_position']  # as written before the sample count was recorded
    content['config'] = config
    torch.save(content, target)
    return str(target)


def test_a_checkpoint_without_the_sample_count_continues_from_its_configs_batch_or_is_refused(tmp_path):
    config = {'Experiment': {'train': {'data_loader': {'batch_size': 2}}}}
    before = _interrupted(tmp_path / 'run', config=config)
    latest = str(tmp_path / 'run' / 'model' / 'latest')
    # its config names the global batch: 2 steps of 2 samples, exactly
    old = _without_data_position(latest, tmp_path / 'old.pth', config)
    _, _, after = _run(tmp_path / 'a', helpers.make_experiment(helpers.TinyTrainSet(8), batch_size=4, epochs=1,
                                                               resume=old, config=config))
    assert _trained(before + after, 0) == _order(8, 0)
    # no batch anywhere: which samples were trained cannot be told
    unknown = _without_data_position(latest, tmp_path / 'unknown.pth', None)
    with pytest.raises(TrainingStartError, match=r'epoch 0: 2 step\(s\) done, of a global batch the checkpoint does '
                                                 r'not record .*which of the 8 samples .*not yet trained cannot be '
                                                 r'told.*--accept_skipped_samples'):
        _run(tmp_path / 'b', helpers.make_experiment(helpers.TinyTrainSet(8), batch_size=4, epochs=1, resume=unknown))


def test_a_changed_training_set_in_the_middle_of_an_epoch_is_refused(tmp_path):
    _interrupted(tmp_path, stop_after=1)
    with pytest.raises(TrainingStartError, match='the training set had 8 samples when the checkpoint was written '
                                                 'and has 10 now'):
        _run(tmp_path, helpers.make_experiment(helpers.TinyTrainSet(10), batch_size=2, epochs=1,
                                               resume=str(tmp_path / 'model' / 'latest')))


# ---------------------------------------------------------------------------------------------- the plan


def _start(epoch_samples, epoch_end, global_batch, world_size, length, epoch=0, done=1):
    position = {'epoch_samples': epoch_samples, 'epoch_end': epoch_end, 'global_batch': global_batch,
                'world_size': world_size, 'dataset_length': length}
    return StartState(epoch=epoch, epoch_iteration=done, iteration=done, full=True, data_position=position)


def test_the_plan_across_world_sizes():
    # written by 2 ranks with global batch 4 after one step; resumed by 3 ranks with global batch 3
    plan = plan_resume(_start(4, 8, 4, 2, 10), 10, 3, 3)
    assert (plan.epoch, plan.epoch_samples) == (0, 4)
    assert 'world size 3 (saved with global batch 4, world size 2): 2 step(s) left' in plan.line
    # the same batch and world size: the exact resume as before
    plan = plan_resume(_start(4, 8, 4, 2, 10), 10, 4, 2)
    assert plan.epoch_samples == 4 and 'saved with' not in plan.line
    # an epoch read to its planned end moves on to the next one, whatever the new batch
    assert plan_resume(_start(8, 8, 4, 2, 10, done=2), 10, 2, 1).epoch == 1
    # 2 of 8 read; 2 ranks with global batch 4 make one full step of the 6 left, short of the planned end
    with pytest.raises(ResumeWouldSkipError, match=r'2 of the 6 samples not yet trained would be skipped \(positions '
                                                   r'6..7 of its order\)'):
        plan_resume(_start(2, 8, 2, 1, 8), 8, 4, 2)
    accepted = plan_resume(_start(2, 8, 2, 1, 8), 8, 7, 1, accept=True)  # no full step of 7 left: the next epoch
    assert (accepted.epoch, accepted.epoch_samples) == (1, 0) and 'as accepted' in accepted.line


# ---------------------------------------------------------------------------------------------- the sampler


def _read(length, epoch, segments, drop_last):
    """Switch (batch per rank, world size) after the given number of steps; the last segment runs to the end of
    the epoch. Returns the keys all ranks read, step by step, and checks each segment's reading is contiguous."""
    read, position = [], 0
    for number, (batch, world, steps) in enumerate(segments):
        samplers = [EpochBatchSampler(length, batch, shuffle=True, drop_last=drop_last, seed=7, rank=rank,
                                      world_size=world) for rank in range(world)]
        for sampler in samplers:
            sampler.set_epoch(epoch, skip_samples=position)
        per_rank = [list(sampler) for sampler in samplers]
        assert len({len(batches) for batches in per_rank}) == 1  # as many steps on every rank
        span = epoch_span(length, position, batch, world, drop_last)
        assert len(per_rank[0]) == span.steps
        last = number == len(segments) - 1
        taken = [key for k in range(span.steps if last else min(steps, span.steps))
                 for batches in per_rank for key in batches[k]]
        assert sorted(key.position for key in taken) == list(range(position, position + len(taken)))
        position += len(taken)
        if last:
            assert position == span.end
        read += taken
    return read


@pytest.mark.parametrize('seed', range(40))
@pytest.mark.parametrize('drop_last', (False, True))
def test_switching_batch_and_world_size_at_step_boundaries_reads_the_permutation_once(seed, drop_last):
    draw = random.Random(seed)
    length, epoch = draw.randint(1, 40), draw.randint(0, 3)
    segments = [(draw.randint(1, 5), draw.randint(1, 4), draw.randint(0, 4)) for _ in range(draw.randint(1, 5))]
    read = _read(length, epoch, segments, drop_last)
    order = EpochBatchSampler(length, 1, shuffle=True, seed=7).epoch_order(epoch)
    positions = [key.position for key in read]
    assert len(positions) == len(set(positions))  # no position read twice, over all ranks and switches
    by_position = {key.position: key.sample_index for key in read}
    unique = [by_position[p] for p in sorted(by_position) if p < length]
    assert unique == order[:len(unique)]  # a prefix of the epoch's permutation, each sample once
    if not drop_last:
        assert unique == order  # the whole permutation: padding only past its end
    assert all(by_position[p] == order[p % length] for p in by_position if p >= length)
    assert all(key.epoch == epoch and key.seed == 7 for key in read)


def test_the_issue_example_at_the_sampler():
    """8 samples: 2 steps of batch 2, then batch 4 from sample 4; then 2 ranks of 2 from sample 4."""
    order = _order(8, 0, seed=7)
    read = _read(8, 0, [(2, 1, 2), (4, 1, 1)], drop_last=True)
    assert [key.sample_index for key in read] == order
    read = _read(8, 0, [(2, 1, 2), (1, 2, 2)], drop_last=True)
    assert sorted(key.sample_index for key in read) == list(range(8))
