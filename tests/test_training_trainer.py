"""The training loop on a tiny stand-in model: learning, exact resume, signals, NaN losses, validation, logs."""
import os
import signal

import pytest
import torch
import yaml

import training_helpers as helpers
from training.checkpoint import read_checkpoint_file
from training.learning_rate import DecayLearningRate
from training.optimizer_scheduler import OptimizerScheduler
from training.trainer import Trainer


def _train(workspace, experiment, **overrides):
    trainer = Trainer(experiment, helpers.options(str(workspace), **overrides))
    return trainer, trainer.train()


def _mean_loss(model, dataset):
    batch = torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        return float(model(batch, training=True)[0])


def test_a_few_iterations_lower_the_loss(tmp_path):
    dataset = helpers.TinyTrainSet(12)
    torch.manual_seed(0)  # the trainer seeds with 0 before building: the same initial weights
    initial = helpers.TinyDetector()
    trainer, summary = _train(tmp_path, helpers.make_experiment(dataset, epochs=4, lr=0.1))
    assert summary['iteration'] == 12 and not summary['interrupted']
    trained = helpers.TinyDetector()
    trained.load_state_dict(helpers.model_state(str(tmp_path)))
    before, after = _mean_loss(initial, dataset), _mean_loss(trained, dataset)
    assert after < before - 0.05, (before, after)


def _adam(fused: bool, lr: float = 0.01) -> OptimizerScheduler:
    """Adam at ``lr`` under the paper's decay over 3 epochs, its fused or its single-tensor implementation."""
    return OptimizerScheduler('Adam', {'lr': lr, 'weight_decay': 1e-4, 'fused': fused},
                              DecayLearningRate(lr=lr, epochs=3))


@pytest.mark.parametrize('optimizer', ['SGD', 'fused Adam'])
def test_kill_and_resume_gives_the_same_weights_as_a_straight_run(tmp_path, optimizer):
    """Noise from NumPy's RNG and dropout from torch's: equal weights need the RNG states restored too. With the
    fused Adam of the `make demo` recipe as well: its state (moments and a step count) goes through the checkpoint
    like the single-tensor one's, and the resumed optimizer is still fused."""
    scheduler = (lambda: _adam(True)) if optimizer == 'fused Adam' else (lambda: None)
    straight = tmp_path / 'straight'
    _train(straight, helpers.make_experiment(helpers.TinyTrainSet(12, noise=0.05), epochs=3, dropout=0.2,
                                             scheduler=scheduler()))
    expected = helpers.model_state(str(straight))

    killed = tmp_path / 'killed'
    kill = {18: lambda: os.kill(os.getpid(), signal.SIGTERM)}  # while loading the 2nd batch of epoch 1
    _, summary = _train(killed, helpers.make_experiment(helpers.TinyTrainSet(12, noise=0.05, hooks=kill),
                                                        epochs=3, dropout=0.2, scheduler=scheduler()))
    assert summary['interrupted'] and summary['iteration'] == 5 and summary['epoch_iteration'] == 2
    saved = read_checkpoint_file(str(killed / 'model' / 'latest'))
    assert (saved['epoch'], saved['epoch_iteration'], saved['iteration']) == (1, 2, 5)
    assert not (killed / 'model' / 'final').exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored

    resumed_experiment = helpers.make_experiment(helpers.TinyTrainSet(12, noise=0.05), epochs=3, dropout=0.2,
                                                 resume=str(killed / 'model' / 'latest'), scheduler=scheduler())
    trainer, summary = _train(killed, resumed_experiment, seed=123)  # the checkpoint's states win over the seed
    assert summary['iteration'] == 9 and not summary['interrupted']
    resumed = helpers.model_state(str(killed))
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    rate = 0.01 if optimizer == 'fused Adam' else 0.05
    assert trainer.optimizer.param_groups[0]['lr'] == pytest.approx(rate * (1 - 2 / 4) ** 0.9)
    # what the step runs is the group's flag (load_state_dict replaces the groups; the defaults never change)
    assert trainer.optimizer.param_groups[0].get('fused') is (True if optimizer == 'fused Adam' else None)


def test_fused_adam_trains_as_the_single_tensor_one_does_to_rounding(tmp_path):
    """The `make demo` recipe's fused Adam against torch's default single-tensor loop, 9 steps of the same run:
    the same weights within 1e-5 (float rounding), where a rate 1 % higher, a barely different update, moves them
    by more than that."""
    states = {}
    for name, scheduler in (('single-tensor', _adam(False)), ('fused', _adam(True)),
                            ('rate 1 % higher', _adam(False, lr=0.0101))):
        trainer, _ = _train(tmp_path / name, helpers.make_experiment(
            helpers.TinyTrainSet(12, noise=0.05), epochs=3, scheduler=scheduler))
        assert trainer.optimizer.param_groups[0]['fused'] is (name == 'fused')
        states[name] = helpers.model_state(str(tmp_path / name))

    def largest(a: str, b: str) -> float:
        return max(float((states[a][key] - states[b][key]).abs().max()) for key in states[a])
    assert largest('fused', 'single-tensor') < 1e-5 < largest('rate 1 % higher', 'single-tensor'), (
        largest('fused', 'single-tensor'), largest('rate 1 % higher', 'single-tensor'))


def test_signal_file_saves_without_stopping(tmp_path):
    def touch():
        (tmp_path / 'save').write_text('')
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12, hooks={6: touch}), epochs=2, signal_path='save')
    _, summary = _train(tmp_path, experiment)
    assert summary['iteration'] == 6 and not summary['interrupted']
    # loaded during iteration 1 (samples 5..8): the checkpoint is written after that step
    assert sorted(os.listdir(tmp_path / 'model')) == ['.saver_manifest', 'final', 'last_checkpoint', 'latest',
                                                      'model_epoch_0_minibatch_2']
    assert not (tmp_path / 'save').exists()
    assert read_checkpoint_file(str(tmp_path / 'model' / 'model_epoch_0_minibatch_2'))['iteration'] == 2


def test_save_interval_checkpoints_are_full_and_latest_follows(tmp_path):
    _, summary = _train(tmp_path, helpers.make_experiment(helpers.TinyTrainSet(12), epochs=2, save_interval=4))
    names = sorted(os.listdir(tmp_path / 'model'))
    assert names == ['.saver_manifest', 'final', 'last_checkpoint', 'latest', 'model_epoch_1_minibatch_4']
    content = read_checkpoint_file(str(tmp_path / 'model' / 'model_epoch_1_minibatch_4'))
    assert (content['epoch'], content['epoch_iteration'], content['iteration']) == (1, 1, 4)
    assert set(content['optimizer']['state'])  # momentum buffers are kept
    assert content['config'] == {'Experiment': {'tiny': True, 'lr': 0.05}}
    assert os.path.samefile(tmp_path / 'model' / 'latest', tmp_path / 'model' / 'final')


def test_non_finite_losses_are_skipped_with_the_files_named(tmp_path):
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12, nan_files=('img_3.jpg',)), epochs=2)
    _, summary = _train(tmp_path, experiment)
    assert summary['iteration'] == 6
    state = helpers.model_state(str(tmp_path))
    assert all(torch.isfinite(value).all() for value in state.values())
    log = (tmp_path / 'output.log').read_text()
    skipped = [line for line in log.splitlines() if 'non-finite input' in line]
    assert len(skipped) == 2 and all('img_3.jpg' in line for line in skipped)  # once per epoch


def test_too_many_non_finite_losses_in_a_row_stop_training(tmp_path):
    nan_everywhere = tuple(f'img_{i}.jpg' for i in range(12))
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12, nan_files=nan_everywhere), epochs=2)
    with pytest.raises(FloatingPointError, match='3 consecutive steps skipped'):
        _train(tmp_path, experiment, max_nan_steps=3)
    assert not (tmp_path / 'model' / 'final').exists()


class ScriptedMeasurer(helpers.BoxMeasurer):
    """Reports the F-measures of a script, one per validation, to check best-model selection."""

    def __init__(self, scores):
        self.scores = list(scores)

    def gather_measure(self, results):
        if not self.scores:
            raise RuntimeError('measurer broke (simulated)')
        value = self.scores.pop(0)
        return {'precision': value, 'recall': value, 'fmeasure': value}


def test_validation_keeps_the_best_checkpoint_and_survives_a_failure(tmp_path):
    # validations at iterations 2, 4 and 6 of 6 (the end: already validated); the third one fails
    measurer = ScriptedMeasurer([0.2, 0.5])
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12), epochs=2, measurer=measurer,
                                         validation=helpers.make_validation(interval=2, exempt=1))
    trainer, summary = _train(tmp_path, experiment, validate=True)
    assert summary['best_fmeasure'] == 0.5 and summary['iteration'] == 6 and measurer.scores == []
    best = read_checkpoint_file(str(tmp_path / 'model' / 'best'))
    assert best['iteration'] == 4 and best['best_fmeasure'] == 0.5
    assert read_checkpoint_file(str(tmp_path / 'model' / 'final'))['best_fmeasure'] == 0.5
    log = (tmp_path / 'output.log').read_text()
    assert 'measurer broke (simulated)' in log and 'training done at iteration 6' in log
    assert trainer.validate() == {}  # a failure is logged, never raised


def test_validation_exempt_skips_the_first_ones(tmp_path):
    measurer = ScriptedMeasurer([0.1, 0.2])
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12), epochs=2, measurer=measurer,
                                         validation=helpers.make_validation(interval=2, exempt=2))
    _train(tmp_path, experiment, validate=True)
    log = (tmp_path / 'output.log').read_text()
    assert 'validation tiny iteration 2' not in log
    assert 'validation tiny iteration 4' in log and 'validation tiny iteration 6' in log


def test_validation_metrics_equal_a_direct_measurement(tmp_path):
    validation = helpers.make_validation(length=6)
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12), epochs=3, lr=0.2, validation=validation)
    trainer, _ = _train(tmp_path, experiment)  # --validate off: no validation while training
    assert trainer.last_validation == {} and 'validation tiny' not in (tmp_path / 'output.log').read_text()
    results = trainer.validate()
    model = trainer.model.eval()
    representer, measurer = helpers.BoxRepresenter(), helpers.BoxMeasurer()
    per_image = []
    with torch.no_grad():
        for index in range(6):
            batch = helpers.collect([validation.data_loaders['tiny'].dataset[index]])
            per_image += measurer.validate_measure(batch, representer.represent(batch, model(batch, training=False)))
    assert len(per_image) == 6
    assert results == {'tiny': pytest.approx(measurer.gather_measure(per_image))}
    assert set(results['tiny']) == {'precision', 'recall', 'fmeasure'}


def test_log_file_config_and_tensorboard_are_written(tmp_path):
    config = {'Experiment': {'train': {'epochs': 2, 'lr': 0.05}, 'note': 'tiny'}}
    experiment = helpers.make_experiment(helpers.TinyTrainSet(8), epochs=2, config=config, log_interval=2)
    _train(tmp_path, experiment, amp=True)  # bf16 autocast on CPU
    assert yaml.safe_load((tmp_path / 'config.yaml').read_text()) == config
    log = (tmp_path / 'output.log').read_text()
    assert 'epoch 0 iteration 2 lr=0.05' in log and 'loss=' in log and 'training done at iteration 4' in log
    events = os.listdir(tmp_path / 'tensorboard')
    assert any(name.startswith('events.out.tfevents') for name in events)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(tmp_path / 'tensorboard'), size_guidance={'images': 0})
    accumulator.Reload()
    assert {'train/loss', 'train/lr', 'train/bce'} <= set(accumulator.Tags()['scalars'])
    assert [event.step for event in accumulator.Scalars('train/lr')] == [2, 4]
    assert {'train/input_gt', 'train/probability', 'train/threshold', 'train/binary'} <= set(
        accumulator.Tags()['images'])


def test_a_non_plain_config_is_refused_with_its_key(tmp_path):
    experiment = helpers.make_experiment(helpers.TinyTrainSet(8), config={'Experiment': {'train': {'x': object()}}})
    with pytest.raises(TypeError, match=r'non-plain value at Experiment.train.x \(a object\)'):
        _train(tmp_path, experiment)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_mixed_precision_on_cuda_trains_and_resumes(tmp_path):
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12), epochs=2, save_interval=3)
    trainer, summary = _train(tmp_path, experiment, device='cuda', amp=True)
    expected_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert trainer.autocast_dtype == expected_dtype and summary['iteration'] == 6
    assert trainer.scaler.is_enabled() == (expected_dtype == torch.float16)
    resumed = helpers.make_experiment(helpers.TinyTrainSet(12), epochs=2,
                                      resume=str(tmp_path / 'model' / 'model_epoch_0_minibatch_3'))
    _, summary = _train(tmp_path / 'resumed', resumed, device='cuda', amp=True)
    assert summary['iteration'] == 6
    assert all(torch.isfinite(v).all() for v in helpers.model_state(str(tmp_path / 'resumed')).values())


def test_amp_on_a_cpu_without_native_bf16_is_warned_in_the_run_log(tmp_path, monkeypatch):
    # bf16 autocast is emulated there (measured 9x slower than fp32 on an AVX2 CPU): the log says so.
    import training.trainer
    for native, expected in ((False, True), (True, False)):
        monkeypatch.setattr(training.trainer, 'cpu_bf16_is_native', lambda: native)
        workspace = tmp_path / f'native_{native}'
        _train(workspace, helpers.make_experiment(helpers.TinyTrainSet(4), epochs=1), amp=True)
        log = open(os.path.join(str(workspace), 'output.log')).read()
        assert ('no native bf16' in log) == expected


def test_bad_samples_reach_the_run_log_and_the_epoch_summary_counts_distinct_files(tmp_path):
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12, bad_files=('img_2.jpg', 'img_7.jpg')), epochs=2)
    _train(tmp_path, experiment)
    log = (tmp_path / 'output.log').read_text().splitlines()
    assert sum('bad sample skipped: img_2.jpg: cannot decode image' in line for line in log) == 2  # once per epoch
    summaries = [line for line in log if 'distinct bad file(s)' in line]
    assert len(summaries) == 2 and all('2 distinct bad file(s)' in line and 'img_2.jpg' in line and 'img_7.jpg'
                                       in line for line in summaries)


def test_resume_says_which_path_it_took_and_a_failed_start_writes_nothing(tmp_path, capsys):
    first = tmp_path / 'run'
    _train(first, helpers.make_experiment(helpers.TinyTrainSet(12), epochs=2, save_interval=2))
    config_before = (first / 'config.yaml').read_text()
    log = (first / 'output.log').read_text()
    assert 'start: no checkpoint' in log
    # a full checkpoint: the resume path, and no warning about a config that did not change
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12), epochs=3, save_interval=2,
                                         resume=str(first / 'model' / 'latest'))
    experiment.config = {'Experiment': {'tiny': True, 'lr': 0.05}}
    _train(first, experiment)
    log = (first / 'output.log').read_text()
    assert 'is a full checkpoint (iteration 6' in log and 'saved with another config' not in log
    # plain weights: the weights path, said so
    plain = tmp_path / 'plain.pth'
    torch.save(helpers.model_state(str(first)), plain)
    second = tmp_path / 'finetune'
    _train(second, helpers.make_experiment(helpers.TinyTrainSet(12), epochs=1, resume=str(plain)))
    assert 'is a plain state dict' in (second / 'output.log').read_text()
    # not a checkpoint: a clear error, nothing of the earlier run overwritten
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint at all')
    from training.trainer import TrainingStartError
    with pytest.raises(TrainingStartError) as caught:
        _train(first, helpers.make_experiment(helpers.TinyTrainSet(12), epochs=2, resume=str(garbage),
                                              config={'Experiment': {'other': True}}))
    assert 'garbage.pth' in str(caught.value) and 'weights_only=False' not in str(caught.value)
    assert (first / 'config.yaml').read_text() == config_before
