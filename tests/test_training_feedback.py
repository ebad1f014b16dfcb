"""Training feedback (issue 27): metrics.jsonl and its rule of resume, tools.plot, --resume auto, early stopping,
the parameter and FLOP count."""
import json
import os
import shutil

import pytest
import torch
from torch import nn

import training_helpers as helpers
from concern.config import ObjectBuilder, load_config
from training.checkpoint import read_checkpoint_file
from training.early_stopping import EarlyStopping
from training.metrics_file import MetricsWriter, append_metrics, read_metrics
from training.trainer import Trainer, TrainingStartError

IC15 = 'experiments/seg_detector/ic15_resnet18_deform_thre.yaml'
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _train(workspace, experiment, **overrides):
    trainer = Trainer(experiment, helpers.options(str(workspace), **overrides))
    return trainer, trainer.train()


def _lines(workspace, kind=None):
    records = read_metrics(os.path.join(str(workspace), 'metrics.jsonl'))
    return [record for record in records if kind is None or record['type'] == kind]


def _log(workspace):
    with open(os.path.join(str(workspace), 'output.log'), encoding='utf-8') as stream:
        return stream.read()


def _same_weights(left, right):
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


# -- metrics.jsonl ---------------------------------------------------------------------------------


def test_a_short_run_writes_train_and_validation_lines(tmp_path):
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12), epochs=2, log_interval=2,
                                         validation=helpers.make_validation(interval=3))
    _train(tmp_path, experiment, validate=True)
    records = _lines(tmp_path)
    assert records[0]['type'] == 'start' and records[0]['iteration'] == 0 and records[0]['resumed_from'] is None
    train = [record for record in records if record['type'] == 'train']
    assert [record['iteration'] for record in train] == [2, 4, 6]
    assert [record['epoch'] for record in train] == [0, 1, 1]
    for record in train:
        assert {'lr', 'loss', 'bce', 'l1', 'samples_per_second', 'time'} <= set(record)
        assert record['loss'] == pytest.approx(record['bce'] + record['l1'], rel=1e-5)
        assert record['samples_per_second'] > 0 and record['time'] > 1.7e9
    validation = [record for record in records if record['type'] == 'validation']
    assert [(record['iteration'], record['loader']) for record in validation] == [(3, 'tiny'), (6, 'tiny')]
    assert {'precision', 'recall', 'fmeasure', 'epoch', 'time'} <= set(validation[0])
    with open(tmp_path / 'metrics.jsonl', encoding='utf-8') as stream:
        text = stream.read()
    assert text.endswith('\n') and all(json.loads(line) for line in text.splitlines())


def test_a_crash_and_resume_write_every_iteration_once_with_the_straight_runs_figures(tmp_path):
    """A crash (kill -9 alike: no checkpoint at the crash) after the iterations past the last checkpoint were
    logged, and a line torn mid-write: the resumed run's file has each iteration once, with the figures of a
    straight run (bit-exact resume)."""
    straight = tmp_path / 'straight'
    _train(straight, helpers.make_experiment(helpers.TinyTrainSet(12), epochs=2, log_interval=1, save_interval=2,
                                             validation=helpers.make_validation(interval=1)), validate=True)

    def crash():
        raise KeyboardInterrupt('simulated kill while loading the batch of iteration 4')

    crashed = tmp_path / 'crashed'
    with pytest.raises(KeyboardInterrupt):
        _train(crashed, helpers.make_experiment(helpers.TinyTrainSet(12, hooks={13: crash}), epochs=2,
                                                log_interval=1, save_interval=2,
                                                validation=helpers.make_validation(interval=1)), validate=True)
    assert [record['iteration'] for record in _lines(crashed, 'train')] == [1, 2, 3]
    assert read_checkpoint_file(str(crashed / 'model' / 'latest'))['iteration'] == 2
    with open(crashed / 'metrics.jsonl', 'a', encoding='utf-8') as stream:
        stream.write('{"type": "train", "epoch": 1, "itera')  # torn by the crash

    _train(crashed, helpers.make_experiment(helpers.TinyTrainSet(12), epochs=2, log_interval=1, save_interval=2,
                                            validation=helpers.make_validation(interval=1),
                                            resume=str(crashed / 'model' / 'latest')), validate=True)
    starts = _lines(crashed, 'start')
    assert [(record['iteration'], record['dropped']) for record in starts] == [(0, 0), (2, 3)]  # 3 train+val, 1 torn
    assert starts[1]['resumed_from'] == str(crashed / 'model' / 'latest')
    for kind in ('train', 'validation'):
        resumed, expected = _lines(crashed, kind), _lines(straight, kind)
        assert [record['iteration'] for record in resumed] == list(range(1, 7))
        for mine, theirs in zip(resumed, expected):
            for key in ('epoch', 'lr', 'loss', 'bce', 'l1', 'precision', 'recall', 'fmeasure'):
                assert mine.get(key) == theirs.get(key), (kind, mine['iteration'], key)
    assert 'dropped: this run writes them again' in _log(crashed)


def test_the_writer_never_writes_an_iteration_twice_and_appending_ends_a_torn_line(tmp_path):
    path = str(tmp_path / 'metrics.jsonl')
    writer = MetricsWriter(path)
    writer.start(0, 0, None)
    assert writer.write({'type': 'validation', 'iteration': 5, 'loader': 'a', 'fmeasure': 0.5})
    assert not writer.write({'type': 'validation', 'iteration': 5, 'loader': 'a', 'fmeasure': 0.5})
    assert writer.write({'type': 'validation', 'iteration': 5, 'loader': 'b', 'fmeasure': float('nan')})
    writer.close()
    with open(path, 'a', encoding='utf-8') as stream:
        stream.write('{"type": "swe')
    append_metrics(path, [{'type': 'sweep', 'box_thresh': 0.5, 'precision': 1.0, 'recall': 0.5, 'fmeasure': 0.6}])
    records = read_metrics(path)
    assert [record['type'] for record in records] == ['start', 'validation', 'validation', 'sweep']
    assert records[2]['fmeasure'] is None  # non-finite: null, the file stays plain JSON


def test_the_rule_of_resume_keeps_lines_byte_for_byte_and_counts_integral_float_iterations(tmp_path):
    """A rewrite keeps the bytes of every kept line (not UTF-8 ones included: no U+FFFD in their place); an
    iteration written as 4.0 is iteration 4, so it is dropped past the start and never drawn twice."""
    path = tmp_path / 'metrics.jsonl'
    kept = [b'{"type": "start", "iteration": 0, "note": "caf\xe9"}\n',
            b'{"type": "train", "iteration": 2, "loss": 1.0, "tag": "caf\xe9"}\n',
            b'{"type": "train", "iteration": 4.0, "loss": 0.9}\n',
            b'{"type": "sweep", "box_thresh": 0.5,  "spacing": "kept as written"}\n']
    path.write_bytes(b''.join(kept) + b'{"type": "train", "iteration": 6.0, "loss": 0.8}\n'
                     + b'{"type": "validation", "iteration": 8, "loader": "a", "fmeasure": 0.5}\n')
    writer = MetricsWriter(str(path))
    assert writer.start(4, 1, 'model/latest') == 2  # the lines of 6.0 and 8
    assert not writer.write({'type': 'train', 'iteration': 4, 'loss': 0.9})  # 4.0 is already there
    assert writer.write({'type': 'train', 'iteration': 6, 'loss': 0.7})
    writer.close()
    data = path.read_bytes()
    assert data.startswith(b''.join(kept)) and b'\xef\xbf\xbd' not in data
    assert [record.get('iteration') for record in read_metrics(str(path))] == [0, 2, 4.0, None, 4, 6]
    assert sorted(os.listdir(tmp_path)) == ['metrics.jsonl']  # no temporary file left


def test_a_failed_rewrite_leaves_the_metrics_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / 'metrics.jsonl'
    original = b'{"type": "train", "iteration": 2}\n{"type": "train", "iteration": 9}\n'
    path.write_bytes(original)

    def fail(*args, **kwargs):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr('concern.files.os.replace', fail)
    with pytest.raises(OSError, match='No space'):
        MetricsWriter(str(path)).start(4, 1, None)
    assert path.read_bytes() == original and os.listdir(tmp_path) == ['metrics.jsonl']


# -- tools.plot --------------------------------------------------------------------------------------


def test_plot_writes_the_pngs_and_only_into_its_folder(tmp_path):
    run = tmp_path / 'run'
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12), epochs=2, log_interval=1,
                                         validation=helpers.make_validation(interval=2))
    _train(run, experiment, validate=True)
    rows = [{'box_thresh': round(0.3 + 0.1 * i, 2), 'precision': 0.6 + 0.05 * i, 'recall': 0.9 - 0.1 * i}
            for i in range(6)]
    append_metrics(str(run / 'metrics.jsonl'), [
        {'type': 'sweep', 'checkpoint': 'model/final', 'loader': 'tiny', 'time': 1.0,
         'fmeasure': 2 * row['precision'] * row['recall'] / (row['precision'] + row['recall']), **row}
        for row in rows])
    with open(run / 'metrics.jsonl', 'a', encoding='utf-8') as stream:
        stream.write('{"type": "tr')  # a torn last line is tolerated
    before = sorted(os.listdir(run))
    from tools import plot
    assert plot.main([str(run)]) == 0
    assert sorted(os.listdir(run)) == sorted(before + ['plots'])
    names = ['loss.png', 'lr.png', 'pr_curve.png', 'validation.png']
    assert sorted(os.listdir(run / 'plots')) == names
    for name in names:
        data = (run / 'plots' / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    out = tmp_path / 'elsewhere'
    assert plot.main([str(run / 'metrics.jsonl'), '--out', str(out)]) == 0
    assert sorted(os.listdir(out)) == names
    assert plot.main([str(tmp_path / 'nothing')]) == 1


# -- --resume auto -------------------------------------------------------------------------------------


def test_resume_auto_continues_from_latest_as_the_explicit_path_does(tmp_path):
    killed = tmp_path / 'killed'
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12, noise=0.05), epochs=3, dropout=0.2)
    trainer = Trainer(experiment, helpers.options(str(killed)))
    helpers.record_steps(trainer, stop_after=4)
    assert trainer.train()['interrupted']
    explicit, auto = tmp_path / 'explicit', tmp_path / 'auto'
    shutil.copytree(killed, explicit)
    shutil.copytree(killed, auto)
    _train(explicit, helpers.make_experiment(helpers.TinyTrainSet(12, noise=0.05), epochs=3, dropout=0.2,
                                             resume=str(explicit / 'model' / 'latest')))
    _, summary = _train(auto, helpers.make_experiment(helpers.TinyTrainSet(12, noise=0.05), epochs=3, dropout=0.2,
                                                      resume='auto'))
    assert summary['resumed'] and summary['iteration'] == 9
    _same_weights(helpers.model_state(str(explicit)), helpers.model_state(str(auto)))
    assert f'resume auto: continuing from {auto / "model" / "latest"}, the newest checkpoint of this run' in _log(auto)


def test_resume_auto_without_a_checkpoint_starts_afresh_and_ignores_other_runs(tmp_path):
    other = tmp_path / 'other_run'
    _train(other, helpers.make_experiment(helpers.TinyTrainSet(12), epochs=1, save_interval=1))
    assert (other / 'model' / 'latest').exists()
    mine = tmp_path / 'my_run'
    _, summary = _train(mine, helpers.make_experiment(helpers.TinyTrainSet(12), epochs=1, resume='auto'))
    assert not summary['resumed'] and summary['iteration'] == 3
    log = _log(mine)
    assert f'resume auto: no checkpoint of this run yet ({mine / "model" / "latest"} does not exist): starting ' \
           'afresh' in log
    assert 'start: no checkpoint' in log and str(other) not in log


def test_resume_auto_with_weights_fine_tunes_first_then_continues_its_own_run(tmp_path):
    """One command for a fine-tuning (detectron2's resume_or_load): the first run starts from the weights, a rerun
    after an interruption continues this run's checkpoint (and the weights file is not loaded again)."""
    from training.checkpoint import Checkpoint
    pretrained = tmp_path / 'pretrained'
    _train(pretrained, helpers.make_experiment(helpers.TinyTrainSet(12), epochs=1))
    weights = str(pretrained / 'model' / 'final')
    run = tmp_path / 'fine_tune'

    def experiment():
        made = helpers.make_experiment(helpers.TinyTrainSet(12, noise=0.05), epochs=3, dropout=0.2)
        made.train.checkpoint = Checkpoint(resume='auto', weights=weights)
        return made
    first = Trainer(experiment(), helpers.options(str(run)))
    helpers.record_steps(first, stop_after=4)
    assert first.train()['interrupted']
    log = _log(run)
    assert f'resume auto: no checkpoint of this run yet ({run / "model" / "latest"} does not exist): starting from ' \
           f'the weights of {weights}' in log
    explicit = tmp_path / 'explicit'
    shutil.copytree(run, explicit)
    _, summary = _train(run, experiment())
    assert summary['resumed'] and summary['iteration'] == 9
    assert f'resume auto: continuing from {run / "model" / "latest"}, the newest checkpoint of this run (weights ' \
           f'{weights} are for the first run only)' in _log(run)
    _train(explicit, helpers.make_experiment(helpers.TinyTrainSet(12, noise=0.05), epochs=3, dropout=0.2,
                                             resume=str(explicit / 'model' / 'latest')))
    _same_weights(helpers.model_state(str(explicit)), helpers.model_state(str(run)))


def test_resume_and_weights_together_only_with_auto():
    from concern.config import ConfigError
    from tools.cli import apply_train_flags, compile_experiment, train_parser
    config = compile_experiment(train_parser().parse_args([IC15, '--resume', 'auto', '--weights', 'w.pth']),
                                apply_train_flags)
    assert config.tree['train']['checkpoint']['resume'] == 'auto'
    assert config.tree['train']['checkpoint']['weights'] == 'w.pth'
    with pytest.raises(ConfigError, match='give one'):
        compile_experiment(train_parser().parse_args([IC15, '--resume', 'x/latest', '--weights', 'w.pth']),
                           apply_train_flags)


def test_train_py_passes_resume_auto_to_the_checkpoint():
    from tools.cli import apply_train_flags, compile_experiment, train_parser
    config = compile_experiment(train_parser().parse_args([IC15, '--resume', 'auto']), apply_train_flags)
    assert config.tree['train']['checkpoint']['resume'] == 'auto'


# -- early stopping ------------------------------------------------------------------------------------

# the scripted F-measure of each validation (every 2 iterations): best 0.6 at iteration 4, no improvement by more
# than 0.01 at 6 and 8 -> with patience 2 the run stops at iteration 8 (of 12)
SCRIPT = {2: 0.5, 4: 0.6, 6: 0.605, 8: 0.55, 10: 0.9, 12: 0.95}


@pytest.fixture
def scripted_validation(monkeypatch):
    calls = []

    def validate(self, model, iteration):
        calls.append(iteration)
        value = SCRIPT[iteration]
        return {'tiny': {'precision': value, 'recall': value, 'fmeasure': value}}

    monkeypatch.setattr('training.validation.Validator.validate', validate)
    return calls


def _stopping_experiment(resume=None):
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12, noise=0.05), epochs=4, dropout=0.2, save_interval=2,
                                         validation=helpers.make_validation(interval=2), resume=resume)
    experiment.train.early_stopping = EarlyStopping(patience=2, min_delta=0.01)
    return experiment


def test_early_stopping_ends_a_run_whose_fmeasure_stopped_improving(tmp_path, scripted_validation):
    _, summary = _train(tmp_path, _stopping_experiment(), validate=True)
    assert summary['iteration'] == 8 and not summary['interrupted'] and summary['early_stopped']
    assert scripted_validation == [2, 4, 6, 8]
    final = read_checkpoint_file(str(tmp_path / 'model' / 'final'))
    assert final['iteration'] == 8
    assert final['early_stopping'] == {'best': 0.6, 'best_iteration': 4, 'since': 2}
    assert read_checkpoint_file(str(tmp_path / 'model' / 'best'))['iteration'] == 6  # 0.605 > 0.6 (no min_delta)
    assert ("early stopping at iteration 8: the fmeasure of validation loader 'tiny' has not improved by more than "
            "0.01 in 2 validation(s) (patience 2; best 0.6000 at iteration 4); the best checkpoint is "
            f"{tmp_path / 'model' / 'best'} (fmeasure 0.6050)") in _log(tmp_path)


@pytest.mark.parametrize('stop_after', [5, 6])
def test_a_resumed_run_stops_where_the_uninterrupted_one_did(tmp_path, scripted_validation, stop_after):
    """6: the checkpoint of iteration 6 is written before the validation of iteration 6, so the resumed run must
    validate again before its first step; 5: a checkpoint between validations."""
    straight = tmp_path / 'straight'
    _, expected = _train(straight, _stopping_experiment(), validate=True)
    stopped = tmp_path / 'stopped'
    trainer = Trainer(_stopping_experiment(), helpers.options(str(stopped), validate=True))
    helpers.record_steps(trainer, stop_after=stop_after)
    assert trainer.train()['interrupted']
    _, summary = _train(stopped, _stopping_experiment(resume=str(stopped / 'model' / 'latest')), validate=True)
    assert (summary['iteration'], summary['early_stopped']) == (expected['iteration'], expected['early_stopped'])
    _same_weights(helpers.model_state(str(straight)), helpers.model_state(str(stopped)))
    assert read_checkpoint_file(str(stopped / 'model' / 'final'))['early_stopping'] == \
        read_checkpoint_file(str(straight / 'model' / 'final'))['early_stopping']
    validations = [record['iteration'] for record in _lines(stopped, 'validation')]
    assert validations == [2, 4, 6, 8]  # each once, the repeated validation of 6 included


def test_rerunning_an_early_stopped_run_trains_nothing_and_keeps_its_checkpoints(tmp_path, scripted_validation):
    """--resume auto after the run ended by early stopping finds its final checkpoint (latest), whose state says
    stop: the rerun ends at once, as a rerun of a finished run does, without rewriting final, latest or best."""
    _train(tmp_path, _stopping_experiment(), validate=True)
    model = tmp_path / 'model'
    before = {name: (model / name).read_bytes() for name in ('final', 'latest', 'best')}
    times = {name: os.stat(model / name).st_mtime_ns for name in ('final', 'best')}
    trainer = Trainer(_stopping_experiment(resume='auto'), helpers.options(str(tmp_path), validate=True))
    steps = helpers.record_steps(trainer)
    summary = trainer.train()
    assert steps == [] and scripted_validation == [2, 4, 6, 8]  # no step, no validation again
    assert summary['iteration'] == 8 and summary['resumed'] and not summary['interrupted']
    assert summary['early_stopped'] == 'early stopping already ended this run at iteration 8'
    assert {name: (model / name).read_bytes() for name in before} == before
    assert {name: os.stat(model / name).st_mtime_ns for name in times} == times
    log = _log(tmp_path)
    assert (f"early stopping already ended this run at iteration 8; best: {model / 'best'} (fmeasure 0.6050)"
            in log)
    assert log.count('training done at iteration') == 1  # the first run's
    assert [record['iteration'] for record in _lines(tmp_path, 'validation')] == [2, 4, 6, 8]
    # a larger patience continues the run
    experiment = _stopping_experiment(resume='auto')
    experiment.train.early_stopping = EarlyStopping(patience=3, min_delta=0.01)
    _, summary = _train(tmp_path, experiment, validate=True)
    assert summary['iteration'] == 12 and not summary['early_stopped']


def test_early_stopping_is_an_experiment_component_with_a_checked_schema(tmp_path):
    config = load_config(IC15)
    built = ObjectBuilder(config).build({'class': 'EarlyStopping', 'patience': 3, 'min_delta': '1e-3'},
                                        'train.early_stopping')
    assert isinstance(built, EarlyStopping) and (built.patience, built.min_delta, built.loader) == (3, 0.001, None)
    from experiment import TrainSettings
    assert TrainSettings(data_loader=None, early_stopping=built).early_stopping is built
    with pytest.raises(ValueError, match='patience'):
        EarlyStopping(0)
    experiment = helpers.make_experiment(helpers.TinyTrainSet(12), validation=helpers.make_validation())
    experiment.train.early_stopping = EarlyStopping(2, loader='nope')
    with pytest.raises(TrainingStartError, match="'nope' is not a validation loader"):
        Trainer(experiment, helpers.options(str(tmp_path), validate=True))


# -- parameters and FLOPs ------------------------------------------------------------------------------


def test_flops_of_one_convolution_equal_the_hand_count():
    from tools.flops import count_flops
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)  # 32x32 -> 16x16
    assert count_flops(conv, 32, 32).total == 2 * 8 * 3 * 3 * 3 * 16 * 16 == 110592
    grouped = nn.Conv2d(8, 16, 3, padding=1, groups=4, bias=False)  # each output sees 8/4 inputs
    report = count_flops(nn.Sequential(nn.Conv2d(3, 8, 1), grouped), 10, 10)
    assert report.total == 2 * 8 * 3 * 100 + 2 * 16 * 2 * 3 * 3 * 100
    assert report.parameters == 8 * 3 + 8 + 16 * 2 * 9


class _Deformable(nn.Module):
    def __init__(self):
        super().__init__()
        from assets.ops.dcn import ModulatedDeformConv
        self.offset = nn.Conv2d(4, 27, 3, padding=1)
        self.dcn = ModulatedDeformConv(4, 6, 3, padding=1, deformable_groups=1)

    def forward(self, image):
        image = image.repeat(1, 2, 1, 1)[:, :4]
        offset_mask = self.offset(image)
        return self.dcn(image, offset_mask[:, :18], torch.sigmoid(offset_mask[:, 18:]))


def test_flops_of_a_deformable_convolution_are_its_convolution_plus_the_sampling():
    from assets.ops.dcn import _backend
    from tools.flops import count_flops
    if not (_backend.extension_available() or _backend.torchvision_available()):
        pytest.skip('neither the dcn extension nor torchvision: no deformable operator to count')
    report = count_flops(_Deformable(), 8, 12)
    positions = 8 * 12
    offset_conv = 2 * 27 * 4 * 9 * positions
    dcn_conv = 2 * 6 * 4 * 9 * positions
    sampling = positions * 9 * (4 * (7 + 1) + 10 * 1)
    assert (report.deformable.calls, report.deformable.conv, report.deformable.sampling) == (1, dcn_conv, sampling)
    assert report.total == offset_conv + dcn_conv + sampling


def _hand_count(model, height, width):
    """FLOPs by the textbook formulas, from the shapes each layer saw in a real forward."""
    from assets.ops.dcn import ModulatedDeformConv
    total = []

    def hook(module, inputs, output):
        n, c_in, h_in, w_in = inputs[0].shape
        c_out, h_out, w_out = output.shape[1:]
        kh, kw = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
        if isinstance(module, nn.ConvTranspose2d):  # every input pixel scatters a k x k x Cout patch
            total.append(2 * n * c_in * c_out * kh * kw * h_in * w_in // module.groups)
            return
        total.append(2 * n * c_out * c_in * kh * kw * h_out * w_out // module.groups)
        if isinstance(module, ModulatedDeformConv):
            total.append(n * h_out * w_out * kh * kw * (c_in * 8 + 10 * module.deformable_groups))

    handles = [module.register_forward_hook(hook) for module in model.modules()
               if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, ModulatedDeformConv))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, height, width))
    for handle in handles:
        handle.remove()
    return sum(total)


@pytest.mark.parametrize('backbone', ['resnet18', 'deformable_resnet18'])
def test_flops_of_a_resnet18_dbnet_equal_the_hand_count(backbone):
    from assets.ops.dcn import _backend
    from structure.model import SegDetectorModel
    from tools.flops import count_flops
    if backbone.startswith('deformable') and not (_backend.extension_available() or _backend.torchvision_available()):
        pytest.skip('no deformable operator to count')
    torch.manual_seed(0)
    decoder_args = {'adaptive': True, 'in_channels': [64, 128, 256, 512], 'inner_channels': 64, 'k': 50}
    model = SegDetectorModel(backbone, 'SegDetector', decoder_args=decoder_args)
    report = count_flops(model, 64, 96)
    assert report.total == _hand_count(model, 64, 96)
    assert (report.deformable.calls > 0) == backbone.startswith('deformable')


def test_flops_of_the_resnet18_trunk_match_its_published_figure():
    """torchvision's ResNet-18: 1.814 G multiply-adds at 224x224 (its weights' metadata), 1.0 M of them the
    classifier, which the detection backbone does not have."""
    from backbones import resnet18
    from tools.flops import count_flops
    report = count_flops(resnet18(), 224, 224)
    assert report.total == pytest.approx(2 * (1.814e9 - 0.512e6), rel=2e-3)


def test_print_config_only_adds_the_parameter_and_flop_count(capsys):
    import yaml

    import train
    assert train.main(['experiments/seg_detector/pages_resnet18_thre.yaml', '--print-config-only']) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)['Experiment']  # still the compiled experiment, the counts are comments
    comments = [line for line in out.splitlines() if line.startswith('# ')]
    assert comments[0].startswith('# parameters: ')
    assert comments[1].startswith('# forward FLOPs at 1x3x256x256 (the crop of train.data_loader.dataset.processes')


# -- eval.py --metrics ---------------------------------------------------------------------------------


def test_eval_metrics_lines_and_the_inputs_it_refuses_to_write(tmp_path):
    from types import SimpleNamespace

    import eval as evaluate
    checkpoint = tmp_path / 'final'
    checkpoint.write_bytes(b'weights')
    args = SimpleNamespace(exp=IC15, resume=str(checkpoint), polygon=False, metrics=str(checkpoint))
    with pytest.raises(ValueError, match='an input of this evaluation'):
        evaluate.check_metrics_path(args)
    args.metrics = str(tmp_path)
    with pytest.raises(ValueError, match='is a folder'):
        evaluate.check_metrics_path(args)
    args.metrics = str(tmp_path / 'metrics.jsonl')
    evaluate.check_metrics_path(args)
    rows = [{'box_thresh': 0.3, 'precision': 0.5, 'recall': 0.9, 'fmeasure': 0.64},
            {'box_thresh': 0.4, 'precision': 0.7, 'recall': 0.8, 'fmeasure': 0.75}]
    metrics = {'precision': 0.7, 'recall': 0.8, 'fmeasure': 0.75, 'images': 3,
               'sweep': {'rows': rows, 'best': rows[1]}}
    records = evaluate.metrics_records(args, 'ic15', 0.4, metrics, 12.5)
    assert [(record['type'], record.get('box_thresh'), record.get('best')) for record in records] == \
        [('evaluation', 0.4, None), ('sweep', 0.3, False), ('sweep', 0.4, True)]
    assert all(record['time'] == 12.5 and record['checkpoint'] == str(checkpoint) for record in records)


def test_eval_metrics_refuses_every_yaml_file_of_the_experiment(tmp_path):
    from types import SimpleNamespace

    import eval as evaluate
    config = load_config(IC15)
    assert [os.path.basename(path) for path in config.files] == \
        ['ic15_resnet18_deform_thre.yaml', 'base_ic15.yaml', 'base.yaml']
    args = SimpleNamespace(exp=IC15, resume=None, metrics=None)
    for imported in ('experiments/seg_detector/base_ic15.yaml', 'experiments/base.yaml'):
        args.metrics = imported
        with pytest.raises(ValueError, match=r'a file of the experiment \(import:\), an input'):
            evaluate.check_metrics_path(args, config)
    link = tmp_path / 'base.yaml'
    link.symlink_to(os.path.abspath('experiments/base.yaml'))
    args.metrics = str(link)  # compared by real path
    with pytest.raises(ValueError, match='a file of the experiment'):
        evaluate.check_metrics_path(args, config)
    args.metrics = str(tmp_path / 'metrics.jsonl')
    evaluate.check_metrics_path(args, config)


def test_eval_metrics_refuses_the_data_lists_and_anything_inside_the_data_dirs(tmp_path):
    from types import SimpleNamespace

    import eval as evaluate
    data, lists = tmp_path / 'data', tmp_path / 'lists'
    (data / 'test_gts').mkdir(parents=True)
    lists.mkdir()
    (data / 'test_gts' / 'gt_img_1.txt').write_text('1,1,2,1,2,2,1,2,text\n')
    (lists / 'test.txt').write_text('img_1.jpg\n')
    (tmp_path / 'data_other').mkdir()
    dataset = SimpleNamespace(data_dir=[str(data)], data_list=[str(lists / 'test.txt')])
    loaders = {'mine': SimpleNamespace(dataset=SimpleNamespace(datasets=[dataset]))}  # a concatenation too
    args = SimpleNamespace(exp=IC15, resume=None, metrics=None)
    refused = {str(lists / 'test.txt'): "a data_list of evaluation loader 'mine'",
               str(data / 'test_gts' / 'gt_img_1.txt'): f"inside {data}, a data_dir of evaluation loader 'mine'",
               str(data / 'new.jsonl'): 'a data_dir',  # a new file inside the data set's folder too
               str(tmp_path / 'lists' / '..' / 'data' / 'x.jsonl'): 'a data_dir'}
    for path, what in refused.items():
        args.metrics = path
        with pytest.raises(ValueError, match=what.replace('(', r'\(')):
            evaluate.check_metrics_path(args, None, loaders)
    for path in (tmp_path / 'data_other' / 'metrics.jsonl', lists / 'metrics.jsonl'):  # a sibling, a new file
        args.metrics = str(path)
        evaluate.check_metrics_path(args, None, loaders)


def test_eval_sweep_metrics_end_to_end_feed_the_precision_recall_plot(tmp_path, monkeypatch, capsys):
    import eval as eval_script
    from inference_helpers import REPO_ROOT, small_evaluation
    from tools import plot
    experiment, checkpoint, data_dir = small_evaluation(str(tmp_path))
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(eval_script, 'run_name', lambda args: str(tmp_path / 'run'))
    metrics = tmp_path / 'metrics.jsonl'
    metrics.write_text('{"type": "start", "iteration": 0}\n')  # appended to, never truncated
    assert eval_script.main([experiment, '--resume', checkpoint, '--sweep', '--metrics', str(metrics)]) == 0
    records = read_metrics(str(metrics))
    assert [record['type'] for record in records] == ['start', 'evaluation'] + ['sweep'] * 13
    assert sum(record['best'] for record in records[2:]) == 1
    assert eval_script.main([experiment, '--resume', checkpoint, '--metrics', checkpoint]) == 2  # an input
    data_list = os.path.join(data_dir, 'test_list.txt')
    gt = os.path.join(data_dir, 'test_gts', sorted(os.listdir(os.path.join(data_dir, 'test_gts')))[0])
    inputs = {path: open(path, 'rb').read() for path in (data_list, gt, os.path.join(REPO_ROOT, 'experiments',
                                                                                     'base.yaml'))}
    for path in inputs:  # the data list, a ground-truth file in the data_dir, the imported base YAML
        capsys.readouterr()
        assert eval_script.main([experiment, '--resume', checkpoint, '--metrics', path]) == 2
        assert f'error: --metrics {path}: is ' in capsys.readouterr().err
    assert {path: open(path, 'rb').read() for path in inputs} == inputs
    assert plot.main([str(metrics), '--out', str(tmp_path / 'plots')]) == 0
    assert os.listdir(tmp_path / 'plots') == ['pr_curve.png']
