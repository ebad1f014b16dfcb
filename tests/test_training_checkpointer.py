"""One Checkpointer: one safe reader, one load report, resume vs weights said in one line, config differences,
retention, last_checkpoint, stale temporary files, clear write errors and no non-finite checkpoint."""
import ast
import errno
import os
import re
import shutil
from collections import OrderedDict

import pytest
import torch
from torch import nn

import training.model_saver as model_saver_module
from concern.checkpoint_io import HARMLESS_KEYS, load_report, read_weights_file
from training.checkpoint import (Checkpoint, NonFiniteCheckpointError, build_checkpoint, config_differences,
                                 non_finite_entries)
from training.model_saver import CheckpointWriteError, ModelSaver

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO_ROOT, 'experiments', 'seg_detector', 'synthetic_resnet18_deform_thre.yaml')


class Tiny(nn.Module):
    """The original's key layout (``model.module.backbone.*``) in a few parameters."""

    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        self.model.module = nn.Module()
        self.model.module.backbone = nn.Conv2d(3, 4, 3, padding=1)
        self.model.module.decoder = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        return self.model.module.decoder(torch.relu(self.model.module.backbone(x)))


def trained(steps: int = 2):
    """A Tiny model and its Adam optimizer after ``steps`` steps (optimizer state present)."""
    torch.manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(2, 3, 8, 8)).square().mean().backward()
        optimizer.step()
    return model, optimizer


def full_checkpoint(model, optimizer, path, iteration=300, epoch=4, config=None):
    content = build_checkpoint(model.state_dict(), optimizer, None, epoch, 2, iteration, [], 0.5, config, 7)
    torch.save(content, path)
    return str(path)


# ---------------------------------------------------------------------------------------------- one reader


def test_the_project_has_exactly_one_torch_load_and_it_is_weights_only():
    calls = []
    for root, folders, files in os.walk(REPO_ROOT):
        folders[:] = [name for name in folders if not name.startswith('.') and name not in
                      ('tests', 'benchmarks', 'workspace', '__pycache__', 'build')]
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(root, name)
                with open(path, encoding='utf-8') as stream:
                    tree = ast.parse(stream.read())
                calls.extend((os.path.relpath(path, REPO_ROOT), node) for node in ast.walk(tree)
                             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                             and node.func.attr == 'load' and isinstance(node.func.value, ast.Name)
                             and node.func.value.id == 'torch')
    assert [path for path, _ in calls] == [os.path.join('concern', 'checkpoint_io.py')]
    keywords = {keyword.arg: ast.literal_eval(keyword.value) for keyword in calls[0][1].keywords}
    assert keywords == {'map_location': 'cpu', 'weights_only': True}


def unreadable_files(tmp_path):
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint at all')
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    truncated = tmp_path / 'truncated.pth'
    torch.save(Tiny().state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    pickled = tmp_path / 'pickled.pth'
    torch.save({'model': Tiny()}, pickled)  # a pickled module: a global weights_only refuses
    return {'garbage': garbage, 'empty': empty, 'truncated': truncated, 'pickled': pickled}


@pytest.mark.parametrize('kind', ['garbage', 'empty', 'truncated', 'pickled'])
def test_resume_of_a_file_that_is_not_a_checkpoint_is_one_clear_error(tmp_path, kind):
    path = unreadable_files(tmp_path)[kind]
    with pytest.raises(ValueError) as raised:
        Checkpoint(resume=str(path)).restore(Tiny())
    message = str(raised.value)
    assert message.startswith(f'{path}: not a PyTorch checkpoint (') and message.endswith(')')
    assert 'weights_only=False' not in message and 'weights_only' not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no chained torch traceback
    expected = {'garbage': 'cannot read', 'empty': 'empty', 'truncated': 'truncated',
                'pickled': 'pickled Python object of type test_training_checkpointer.Tiny'}[kind]
    assert expected in message


def test_every_reader_goes_through_the_one_reader(tmp_path):
    from backbones.pretrained import load_weights_file
    from structure.weights import load_trained_model
    from structure.weights import load_model_file
    garbage = unreadable_files(tmp_path)['garbage']

    class Builder:
        model = 'Tiny'
        model_args = {}

        def build(self):
            return Tiny()
    for read in (read_weights_file, load_weights_file, lambda path: load_model_file(Tiny(), path),
                 lambda path: load_trained_model(Builder(), path)):
        with pytest.raises(ValueError, match=f'^{re.escape(str(garbage))}: not a PyTorch checkpoint'):
            read(str(garbage))
        with pytest.raises(FileNotFoundError, match='absent.pth'):
            read(str(tmp_path / 'absent.pth'))


def test_a_model_folder_given_as_a_checkpoint_names_its_newest_file(tmp_path):
    saver = ModelSaver()
    saver.bind(str(tmp_path))
    saver.save({'w': torch.zeros(1)}, 'final')
    with pytest.raises(ValueError, match=f'^{re.escape(saver.directory)}: not a PyTorch checkpoint \\(a directory; '
                                         f'its newest checkpoint is {re.escape(saver.path_of("final"))}\\)$'):
        Checkpoint(resume=saver.directory).restore(Tiny())


# ---------------------------------------------------------------------------------------------- resume / weights


def test_resume_of_a_full_checkpoint_continues_the_run_and_says_so(tmp_path):
    model, optimizer = trained()
    path = full_checkpoint(model, optimizer, tmp_path / 'latest')
    target = Tiny()
    target_optimizer = torch.optim.Adam(target.parameters(), lr=0.01)
    start = Checkpoint(resume=path).restore(target, target_optimizer)
    assert start.full and (start.epoch, start.epoch_iteration, start.iteration) == (4, 2, 300)
    assert start.best_fmeasure == 0.5 and start.data_seed == 7 and start.report is None
    assert start.how == (f'resume: {path} is a full checkpoint (iteration 300, epoch 4): model, optimizer, '
                         'counters and RNG restored')
    assert torch.equal(target_optimizer.state_dict()['state'][0]['exp_avg'],
                       optimizer.state_dict()['state'][0]['exp_avg'])
    scaler = torch.amp.GradScaler('cpu', enabled=True)
    content = build_checkpoint(model.state_dict(), optimizer, scaler, 4, 2, 300, [], None, None, 7)
    torch.save(content, tmp_path / 'with_scaler')
    start = Checkpoint(start_epoch=9, resume=str(tmp_path / 'with_scaler')).restore(
        Tiny(), torch.optim.Adam(Tiny().parameters()), torch.amp.GradScaler('cpu', enabled=True))
    assert 'model, optimizer, grad scaler, counters and RNG restored' in start.how
    assert 'start_epoch 9 / start_iter 0 ignored' in start.how and start.epoch == 4


def _fp16_step(model, optimizer):
    """One step under fp16 AMP's GradScaler (the path on which an optimizer built as fused needs a fused group)."""
    scaler = torch.amp.GradScaler('cpu', init_scale=4.0)
    optimizer.zero_grad()
    scaler.scale(model(torch.ones(1, 3, 8, 8)).square().mean()).backward()
    scaler.step(optimizer)
    scaler.update()


def test_resume_keeps_the_experiments_optimizer_settings_and_says_which_differed(tmp_path):
    # torch's load_state_dict takes every group setting from the file: a run resumed from a checkpoint of
    # single-tensor Adam stayed single-tensor under `fused: true` (and failed at its first fp16 step), and a changed
    # weight decay was ignored while the resume said it continued with the new config
    model, optimizer = trained()
    path = full_checkpoint(model, optimizer, tmp_path / 'latest')
    target = Tiny()
    fused = torch.optim.Adam(target.parameters(), lr=0.01, weight_decay=0.001, fused=True)
    start = Checkpoint(resume=path).restore(target, fused)
    assert all(group['fused'] is True and group['weight_decay'] == 0.001 for group in fused.param_groups)
    assert "optimizer (with this experiment's weight_decay 0 -> 0.001, fused None -> True)" in start.how
    for parameter, state in fused.state.items():  # the state is the checkpoint's, the step count where fused keeps it
        assert state['step'].dtype == torch.float32 and state['step'].device == parameter.device
        assert float(state['step']) == 2
    assert torch.equal(fused.state_dict()['state'][0]['exp_avg'], optimizer.state_dict()['state'][0]['exp_avg'])
    _fp16_step(target, fused)
    assert float(next(iter(fused.state.values()))['step']) == 3
    # and back: a fused checkpoint resumed by a single-tensor experiment runs single-tensor, its steps on the CPU
    torch.save(build_checkpoint(target.state_dict(), fused, None, 4, 2, 300, [], None, None, 7), tmp_path / 'fused')
    plain = torch.optim.Adam(Tiny().parameters(), lr=0.01, weight_decay=0.001)
    start = Checkpoint(resume=str(tmp_path / 'fused')).restore(Tiny(), plain)
    assert all(not group['fused'] for group in plain.param_groups)
    assert "optimizer (with this experiment's fused True -> None)" in start.how
    assert all(state['step'].device.type == 'cpu' for state in plain.state.values())


def test_resume_with_amsgrad_switched_on_is_refused_by_name(tmp_path):
    model, optimizer = trained()
    path = full_checkpoint(model, optimizer, tmp_path / 'latest')
    with pytest.raises(ValueError, match=r'optimizer state does not fit this optimizer \(Adam\): amsgrad: true in '
                                         r'this experiment, but the checkpoint was written without it'):
        Checkpoint(resume=path).restore(Tiny(), torch.optim.Adam(Tiny().parameters(), amsgrad=True))


@pytest.mark.parametrize('layout', ['project', 'original', 'model_key'])
def test_resume_of_a_plain_state_dict_fine_tunes_and_says_why(tmp_path, layout):
    model, _ = trained()
    state = OrderedDict(model.state_dict())
    if layout == 'original':  # the original code base's files: its unused classifier and 1x1 conv too
        state['model.module.backbone.fc.weight'] = torch.zeros(10, 4)
        state['model.module.backbone.fc.bias'] = torch.zeros(10)
        state['model.module.backbone.smooth.weight'] = torch.zeros(2, 2, 1, 1)
    content = {'model': state} if layout == 'model_key' else state
    path = tmp_path / 'pre-trained-model-synthtext-resnet18'
    torch.save(content, path)
    target = Tiny()
    optimizer = torch.optim.Adam(target.parameters())
    start = Checkpoint(start_epoch=2, start_iter=5, resume=str(path)).restore(target, optimizer)
    assert not start.full and (start.epoch, start.epoch_iteration, start.iteration) == (2, 5, None)
    assert start.how == (f'weights: {path} is a plain state dict (no optimizer state or counters): fine-tuning '
                         'from its weights, counting from epoch 2 iteration 5 (to continue a run, resume a full '
                         'checkpoint of this project)')
    assert optimizer.state_dict()['state'] == {} and start.config is None
    for key, value in target.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])
    if layout == 'original':  # left out as harmless, and said where they come from
        assert 'left out, known to be harmless (3)' in start.report
        assert 'model.module.backbone.fc.{weight, bias} (2): the ResNet ImageNet classifier' in start.report
        assert "never runs" in start.report
    else:
        assert start.report is None


def test_weights_of_a_full_checkpoint_load_only_the_weights(tmp_path):
    model, optimizer = trained()
    path = full_checkpoint(model, optimizer, tmp_path / 'synthtext_final', iteration=5000, epoch=1,
                           config={'Experiment': {'x': 1}})
    target = Tiny()
    target_optimizer = torch.optim.Adam(target.parameters(), lr=0.01)
    start = Checkpoint(start_epoch=0, start_iter=0, weights=path).restore(target, target_optimizer)
    assert not start.full and (start.epoch, start.epoch_iteration, start.iteration) == (0, 0, None)
    assert start.best_fmeasure is None and start.data_seed is None and start.rng_states == [] and start.config is None
    assert target_optimizer.state_dict()['state'] == {}  # untouched
    assert start.how.startswith(f'weights: {path} is a full checkpoint (iteration 5000, epoch 1) of which only the '
                                'model weights are loaded')
    assert 'counting from epoch 0 iteration 0' in start.how
    for key, value in target.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])
    plain = tmp_path / 'plain'
    torch.save(model.state_dict(), plain)
    start = Checkpoint(start_iter=3, weights=str(plain)).restore(Tiny())
    assert start.how == (f'weights: {plain} is a plain state dict: fine-tuning from its weights, '
                         'counting from epoch 0 iteration 3')


def test_resume_and_weights_together_are_an_error():
    with pytest.raises(ValueError, match='resume .*and weights .*both set'):
        Checkpoint(resume='a', weights='b')


def test_a_fresh_start_says_where_the_weights_come_from_and_reports_the_imagenet_load(tmp_path):
    torchvision = pytest.importorskip('torchvision')
    import backbones
    path = tmp_path / 'resnet18-f37072fd.pth'
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = nn.Sequential(backbones.deformable_resnet18(pretrained=str(path)))
    start = Checkpoint(start_epoch=1).restore(model)
    assert start.how == (f'start: no checkpoint (train.checkpoint resume and weights unset): ImageNet weights from '
                         f'{path} for the backbone, counting from epoch 1 iteration 0')
    report = start.report
    assert report.startswith(f'ImageNet initialisation {path} -> ResNet: loaded ')
    assert 'unexpected fc.{weight, bias} (2): the ResNet ImageNet classifier' in report
    assert 'missing layer2.0.conv2_offset.{weight, bias}' in report and 'zero-initialised' in report
    assert Checkpoint().restore(Tiny()).how.endswith('random weights, counting from epoch 0 iteration 0')
    assert Checkpoint().restore(Tiny()).report is None


# ---------------------------------------------------------------------------------------------- the load report


def test_the_load_report_groups_keys_by_module_and_stays_short():
    missing = [f'model.module.backbone.layer{i}.{j}.bn1.{leaf}' for i in range(1, 4) for j in range(4)
               for leaf in ('weight', 'bias')]
    text = load_report('header:', missing=missing, unexpected=['decoder.extra.weight'],
                       mismatched=['decoder.in5.weight: checkpoint (2, 2), model (3, 3)'])
    lines = text.splitlines()
    assert lines[:3] == ['header:', '  missing keys (24):', '    model.module.backbone.layer1.0.bn1.{weight, bias}']
    assert '    ... and 8 more in 4 more modules' in lines
    assert '  unexpected keys (1):' in lines and '    decoder.extra.weight' in lines
    assert '    decoder.in5.weight: checkpoint (2, 2), model (3, 3)' in lines
    assert len(lines) == 1 + 1 + 9 + 2 + 2


def test_the_one_harmless_list_says_where_each_entry_comes_from():
    assert {(entry.kind, entry.where) for entry in HARMLESS_KEYS} >= {('unexpected', 'both'), ('missing', 'imagenet')}
    assert all(entry.origin for entry in HARMLESS_KEYS)


# ---------------------------------------------------------------------------------------------- config differences


def compiled(*overrides):
    from concern.config import apply_overrides, load_config
    config = load_config(DEMO)
    apply_overrides(config, list(overrides))
    return {config.define: config.tree}


def test_config_differences_ignore_what_a_resume_changes():
    saved = compiled()
    resumed = compiled('train.checkpoint.resume=workspace/demo/model/latest', 'train.checkpoint.start_epoch=3')
    assert config_differences(saved, resumed) == []
    resumed['Experiment']['train']['checkpoint']['weights'] = None  # a key a newer version added
    assert config_differences(saved, resumed) == []
    changed = compiled('train.checkpoint.resume=workspace/demo/model/latest',
                       'train.scheduler.optimizer_args.lr=0.002')
    assert config_differences(saved, changed) == ['Experiment.train.scheduler.optimizer_args.lr']
    assert config_differences(None, changed) == [] and config_differences(saved, None) == []
    added = compiled()
    added['Experiment']['train']['model_saver']['keep_last'] = 5
    assert config_differences(saved, added) == ['Experiment.train.model_saver.keep_last']


# ---------------------------------------------------------------------------------------------- retention


def test_only_the_last_periodic_checkpoints_stay_and_best_stays_readable(tmp_path):
    saver = ModelSaver(save_interval=100, keep_last=3)
    saver.bind(str(tmp_path))
    (tmp_path / 'model' / 'notes.txt').write_text('mine')
    (tmp_path / 'model' / 'model_epoch_0_minibatch_50.bak').write_text('mine too')
    for step in range(1, 8):
        iteration = step * 100
        path = saver.save_step({'iteration': torch.tensor(iteration)}, epoch=step // 3, iteration=iteration)
        if iteration == 200:
            saver.mark_best(path)
    saver.link_latest(saver.save({'iteration': torch.tensor(700)}, 'final'))
    assert sorted(os.listdir(tmp_path / 'model')) == [
        '.saver_manifest', 'best', 'final', 'last_checkpoint', 'latest', 'model_epoch_0_minibatch_50.bak',
        'model_epoch_1_minibatch_500',
        'model_epoch_2_minibatch_600', 'model_epoch_2_minibatch_700', 'notes.txt']
    assert int(read_weights_file(saver.path_of('best'))['iteration']) == 200  # its periodic file is gone
    assert int(read_weights_file(saver.path_of('latest'))['iteration']) == 700
    assert (tmp_path / 'model' / 'last_checkpoint').read_text() == 'final\n'
    assert saver.last_checkpoint() == saver.path_of('final')


def test_last_checkpoint_names_the_newest_file_written(tmp_path):
    saver = ModelSaver(save_interval=10)
    saver.bind(str(tmp_path))
    assert saver.last_checkpoint() is None
    saver.save_step({'w': torch.zeros(1)}, epoch=0, iteration=10)
    assert (tmp_path / 'model' / 'last_checkpoint').read_text() == 'model_epoch_0_minibatch_10\n'
    saver.save_step({'w': torch.zeros(1)}, epoch=1, iteration=20)
    assert saver.last_checkpoint() == saver.path_of('model_epoch_1_minibatch_20')
    assert not [name for name in os.listdir(tmp_path / 'model') if name.endswith('.tmp')]


def test_the_demo_keeps_at_most_three_periodic_files(tmp_path):
    from concern.config import load_config
    settings = dict(load_config(DEMO).tree['train']['model_saver'])
    settings.pop('class')
    saver = ModelSaver(**settings)
    saver.bind(str(tmp_path))
    for iteration in range(1, 601):  # 600 iterations, as make demo trains
        if saver.due(iteration):
            saver.save_step({'w': torch.zeros(1)}, epoch=iteration // 75, iteration=iteration)
    periodic = [name for name in os.listdir(tmp_path / 'model') if name.startswith('model_epoch_')]
    assert len(periodic) == 3 and 'model_epoch_8_minibatch_600' in periodic
    keep_all = ModelSaver(save_interval=1, keep_last=0)
    keep_all.bind(str(tmp_path / 'all'))
    for iteration in range(1, 6):
        keep_all.save_step({'w': torch.zeros(1)}, epoch=0, iteration=iteration)
    assert len([name for name in os.listdir(tmp_path / 'all' / 'model') if name.startswith('model_epoch_')]) == 5


# ---------------------------------------------------------------------------------------------- interrupted saves


def test_bind_removes_the_temporary_files_of_an_interrupted_save(tmp_path, monkeypatch):
    saver = ModelSaver(keep_last=0)
    saver.bind(str(tmp_path))
    folder = tmp_path / 'model'
    saver.save_step({'w': torch.zeros(1)}, epoch=3, iteration=300)
    # kill -9 in the middle of writing a checkpoint and of linking latest: the temporary files stay behind
    monkeypatch.setattr(model_saver_module, '_discard', lambda *args: None)

    def killed_while_writing(content, stream, *args, **kwargs):
        stream.write(b'\0' * 3000)
        raise KeyboardInterrupt
    monkeypatch.setattr(model_saver_module.torch, 'save', killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        saver.save({'w': torch.zeros(1)}, 'model_epoch_3_minibatch_400')
    monkeypatch.setattr(model_saver_module.os, 'replace', lambda *args: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        saver.link_latest(saver.path_of('model_epoch_3_minibatch_300'))
    monkeypatch.undo()
    stale = sorted(name for name in os.listdir(folder) if name.endswith('.tmp'))
    assert len(stale) == 2 and stale[0].startswith('.latest.') and stale[0].endswith('.link.tmp')
    assert stale[1].startswith('.model_epoch_3_minibatch_400.')
    kept = ['.hidden', 'notes.tmp', '.keepme.abc123.tmp']  # the last looks like a temporary file: not the saver's
    for name in kept:
        (folder / name).write_bytes(b'keep')
    (tmp_path / '.elsewhere.abc.tmp').write_bytes(b'not in the model folder')
    messages = ModelSaver().bind(str(tmp_path))
    assert len(messages) == 3
    assert messages[0].startswith(f'left alone: {folder / ".keepme.abc123.tmp"} looks like a temporary file')
    size = os.path.getsize(saver.path_of('model_epoch_3_minibatch_300'))  # the link of latest: the same file
    assert messages[1] == (f'removed {folder / stale[0]} ({size / 1024:.1f} kB): temporary file of an interrupted '
                           'checkpoint save')
    assert messages[2] == f'removed {folder / stale[1]} (2.9 kB): temporary file of an interrupted checkpoint save'
    assert sorted(os.listdir(folder)) == sorted(kept + ['.saver_manifest', 'last_checkpoint', 'latest',
                                                        'model_epoch_3_minibatch_300'])
    assert (tmp_path / '.elsewhere.abc.tmp').exists()
    assert len(ModelSaver().bind(str(tmp_path))) == 1  # only the file left alone is named again


def partial_write_then(error):
    def save(content, stream, *args, **kwargs):
        stream.write(b'PK\x03\x04 partial bytes of a checkpoint')
        stream.flush()
        raise error()
    return save


def enospc():
    return OSError(errno.ENOSPC, 'No space left on device')


def enospc_from_torch():
    """What torch.save raises when the stream's write fails: a RuntimeError chained from the OSError."""
    try:
        raise enospc()
    except OSError as cause:
        try:
            raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0') from cause
        except RuntimeError as error:
            return error


@pytest.mark.parametrize('error', [enospc, enospc_from_torch])
def test_a_full_disk_is_one_clear_error_naming_the_file_and_free_space(tmp_path, monkeypatch, error):
    saver = ModelSaver(save_interval=10)
    saver.bind(str(tmp_path))
    saver.save_step({'w': torch.arange(3.0)}, epoch=0, iteration=10)
    monkeypatch.setattr(model_saver_module.torch, 'save', partial_write_then(error))
    with pytest.raises(CheckpointWriteError) as raised:
        saver.save_step({'w': torch.zeros(3)}, epoch=0, iteration=20)
    target = saver.path_of('model_epoch_0_minibatch_20')
    message = str(raised.value)
    assert raised.value.errno == errno.ENOSPC and isinstance(raised.value, OSError)
    assert message.startswith(f'cannot write checkpoint {target}: No space left on device (')
    assert re.search(r'\(\d+\.\d (GB|MB|kB) free on that file system\)', message)
    assert 'inline_container' not in message
    assert sorted(os.listdir(tmp_path / 'model')) == ['.saver_manifest', 'last_checkpoint', 'latest',
                                                      'model_epoch_0_minibatch_10']
    assert torch.equal(read_weights_file(saver.path_of('latest'))['w'], torch.arange(3.0))


def test_an_unexplained_writer_failure_on_a_full_disk_is_converted_too(tmp_path, monkeypatch):
    saver = ModelSaver()
    saver.bind(str(tmp_path))
    monkeypatch.setattr(model_saver_module.torch, 'save', partial_write_then(
        lambda: RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0')))
    with pytest.raises(RuntimeError, match='inline_container') as raised:  # plenty of space: not a disk problem
        saver.save({'w': torch.zeros(1)}, 'final')
    assert not isinstance(raised.value, OSError)
    full = shutil.disk_usage(str(tmp_path))._replace(free=4096)
    monkeypatch.setattr(model_saver_module.shutil, 'disk_usage', lambda path: full)
    with pytest.raises(CheckpointWriteError, match=r'final: No space left on device \(4\.0 kB free'):
        saver.save({'w': torch.zeros(1)}, 'final')
    assert os.listdir(tmp_path / 'model') == ['.saver_manifest']  # the manifest, and no temporary file


@pytest.mark.skipif(hasattr(os, 'geteuid') and os.geteuid() == 0,
                    reason='root writes into read-only folders, so permission denied cannot be provoked')
def test_a_read_only_model_folder_is_one_clear_error(tmp_path):
    saver = ModelSaver()
    saver.bind(str(tmp_path))
    os.chmod(tmp_path / 'model', 0o555)
    try:
        with pytest.raises(CheckpointWriteError, match=r'cannot write checkpoint .*final: Permission denied') as raised:
            saver.save({'w': torch.zeros(1)}, 'final')
        assert raised.value.errno == errno.EACCES
    finally:
        os.chmod(tmp_path / 'model', 0o755)


@pytest.mark.parametrize('code, reason', [(errno.EACCES, 'Permission denied'), (errno.EROFS, 'Read-only file system')])
def test_permission_and_read_only_errors_name_the_file_too(tmp_path, monkeypatch, code, reason):
    saver = ModelSaver()
    saver.bind(str(tmp_path))

    def refuse(*args, **kwargs):
        raise OSError(code, reason)
    monkeypatch.setattr(model_saver_module, 'open', refuse, raising=False)  # a read-only folder, as root too
    with pytest.raises(CheckpointWriteError, match=f'cannot write checkpoint {re.escape(saver.path_of("best"))}: '
                                                   f'{reason} \\(') as raised:
        saver.save({'w': torch.zeros(1)}, 'best')
    assert raised.value.errno == code and raised.value.filename == saver.path_of('best')


# ---------------------------------------------------------------------------------------------- non-finite


def test_a_checkpoint_holding_non_finite_values_is_never_built(tmp_path):
    model, optimizer = trained()
    with torch.no_grad():
        model.model.module.decoder.bias.fill_(float('nan'))
    with pytest.raises(NonFiniteCheckpointError, match=r'iteration 30 \(epoch 1\) not written: non-finite values in '
                                                       r'model/model\.module\.decoder\.bias'):
        build_checkpoint(model.state_dict(), optimizer, None, 1, 0, 30, [], None, None, 0)
    model, optimizer = trained()
    optimizer.state[model.model.module.backbone.weight]['exp_avg_sq'][0, 0, 0, 0] = float('inf')
    with pytest.raises(NonFiniteCheckpointError, match='optimizer/state/0/exp_avg_sq'):
        build_checkpoint(model.state_dict(), optimizer, None, 1, 0, 30, [], None, None, 0)
    scaler = torch.amp.GradScaler('cpu', enabled=True)
    scaler.load_state_dict({**scaler.state_dict(), 'scale': float('inf')})
    model, optimizer = trained()
    with pytest.raises(NonFiniteCheckpointError, match='scaler/scale'):
        build_checkpoint(model.state_dict(), optimizer, scaler, 1, 0, 30, [], None, None, 0)


def test_large_finite_values_and_integer_tensors_pass_the_check():
    state = {'big': torch.full((4,), 1e30), 'half': torch.full((3,), 6e4, dtype=torch.float16),
             'count': torch.tensor(7), 'empty': torch.zeros(0)}
    assert non_finite_entries([('model', state)]) == []
    state['later'] = torch.tensor([1.0, float('-inf')])
    state['first'] = torch.tensor([float('nan')], dtype=torch.bfloat16)
    assert non_finite_entries([('model', state)]) == ['model/later', 'model/first']
