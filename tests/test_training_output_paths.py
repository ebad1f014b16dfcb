"""Output paths stay where the user put them (issue 25): the paths an experiment sets for writing or deleting stay
in the run's workspace, and the clean-up deletes only files this project's saver wrote (its manifest), never a
file for its name alone."""
import os

import pytest
import torch

import training_helpers as helpers
from concern.config import ConfigError, ObjectBuilder, apply_overrides, get_path, load_config
from training.model_saver import MANIFEST, ModelSaver, OutputPathError
from training.trainer import Trainer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO_ROOT, 'experiments', 'seg_detector', 'synthetic_resnet18_deform_thre.yaml')


def build_model_saver(overrides):
    """The experiment's ``train.model_saver`` built as train.py builds it, after ``--opt`` overrides."""
    config = load_config(os.path.relpath(DEMO, REPO_ROOT) if os.getcwd() == REPO_ROOT else DEMO)
    apply_overrides(config, overrides)
    return ObjectBuilder(config).build(get_path(config, 'train.model_saver'), 'train.model_saver')


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the experiment files import others relative to the working directory


@pytest.mark.parametrize('key, value', [
    ('signal_path', 'ABS'), ('signal_path', '../../precious'), ('dir_path', 'ABS'), ('dir_path', '../../x'),
    ('dir_path', 'model/../../x'), ('dir_path', '.')])
def test_a_path_leaving_the_workspace_is_a_config_error_naming_the_key(tmp_path, in_repo, key, value):
    precious = tmp_path / 'precious'
    precious.write_text('mine')
    value = str(precious) if value == 'ABS' else value
    with pytest.raises(ConfigError) as raised:
        build_model_saver([f'train.model_saver.{key}={value}'])
    message = str(raised.value)
    assert f'train.model_saver.{key}: {value!r} is not inside the run\'s workspace' in message
    assert 'relative to workspace/<name>/' in message
    assert precious.read_text() == 'mine'


def test_paths_inside_the_workspace_are_accepted(in_repo):
    saver = build_model_saver(['train.model_saver.dir_path=checkpoints/r18', 'train.model_saver.signal_path=save'])
    assert (saver.dir_path, saver.signal_path) == (os.path.join('checkpoints', 'r18'), 'save')


def test_a_signal_file_outside_the_run_is_never_deleted(tmp_path):
    precious = tmp_path / 'precious'
    precious.write_text('mine')
    with pytest.raises(OutputPathError, match='train.model_saver.signal_path'):
        helpers.make_experiment(helpers.TinyTrainSet(8), signal_path=str(precious))
    assert precious.read_text() == 'mine'


def test_a_symbolic_link_out_of_the_workspace_is_refused_before_anything_is_written(tmp_path):
    outside = tmp_path / 'outside'
    outside.mkdir()
    workspace = tmp_path / 'run'
    workspace.mkdir()
    os.symlink(outside, workspace / 'model')
    with pytest.raises(OutputPathError, match='train.model_saver.dir_path: .* leads out of the run'):
        ModelSaver().bind(str(workspace))
    assert os.listdir(outside) == []


def test_the_clean_up_leaves_files_the_saver_did_not_write_alone_and_names_them(tmp_path):
    folder = tmp_path / 'model'
    folder.mkdir()
    planted = {'model_epoch_9_minibatch_999': b'a periodic checkpoint? not ours',
               '.keepme.abc123.tmp': b'a temporary file? not ours'}
    for name, data in planted.items():
        (folder / name).write_bytes(data)
    experiment = helpers.make_experiment(helpers.TinyTrainSet(8), epochs=3, save_interval=1)
    experiment.train.model_saver.keep_last = 2
    Trainer(experiment, helpers.options(str(tmp_path))).train()
    for name, data in planted.items():
        assert (folder / name).read_bytes() == data, name
    periodic = sorted(name for name in os.listdir(folder) if name.startswith('model_epoch_'))
    assert periodic == ['model_epoch_2_minibatch_5', 'model_epoch_2_minibatch_6', 'model_epoch_9_minibatch_999']
    log = (tmp_path / 'output.log').read_text()
    assert f'left alone: {folder / "model_epoch_9_minibatch_999"} is named like a periodic checkpoint' in log
    assert f'left alone: {folder / ".keepme.abc123.tmp"} looks like a temporary file' in log
    assert (folder / MANIFEST).exists()


def test_a_periodic_file_replaced_by_another_is_not_deleted(tmp_path):
    saver = ModelSaver(save_interval=1, keep_last=1)
    saver.bind(str(tmp_path))
    first = saver.save_step({'w': torch.zeros(1)}, epoch=0, iteration=1)
    with open(first, 'wb') as stream:  # the user put another file of that name there
        stream.write(b'the user\'s own file, of another size')
    saver.save_step({'w': torch.zeros(1)}, epoch=0, iteration=2)
    assert open(first, 'rb').read() == b'the user\'s own file, of another size'
    saver.save_step({'w': torch.zeros(1)}, epoch=0, iteration=3)
    assert not os.path.exists(saver.path_of('model_epoch_0_minibatch_2'))  # its own files are still pruned


def test_a_torn_last_manifest_line_does_not_swallow_the_next_record(tmp_path):
    # review item 6: a kill while appending leaves a line without its newline; the next record used to be glued
    # to it and lost: here the announcement of a temporary file that a second kill then leaves behind, which was
    # left alone (and reported) at every start instead of removed
    saver = ModelSaver(keep_last=1)
    saver.bind(str(tmp_path))
    manifest = saver.manifest
    with open(manifest.path, 'a', encoding='utf-8') as stream:
        stream.write('file\tmodel_epoch_0_minibatch_1\t12')  # torn
    temporary = tmp_path / 'model' / '.model_epoch_0_minibatch_2.0123abcd.tmp'
    manifest.record('temp', temporary.name)
    temporary.write_bytes(b'partial')
    assert manifest.read()[1] == [temporary.name] and 'model_epoch_0_minibatch_1' not in manifest.read()[0]
    messages = ModelSaver(keep_last=1).bind(str(tmp_path))
    assert messages == [f'removed {temporary} (7 bytes): temporary file of an interrupted checkpoint save']
    saver.save_step({'weights': torch.zeros(3)}, 0, 2)
    assert 'model_epoch_0_minibatch_2' in manifest.read()[0]
    assert ModelSaver(keep_last=1).bind(str(tmp_path)) == []


def test_a_periodic_checkpoint_killed_before_its_record_is_adopted_and_pruned(tmp_path, monkeypatch):
    # review item 6: kill -9 between os.replace and the manifest's 'file' record: the checkpoint is in place, its
    # temporary file announced; the next start records it (once) instead of reporting it at every start forever
    saver = ModelSaver(keep_last=1)
    saver.bind(str(tmp_path))
    record = saver.manifest.record

    def killed_before_the_file_record(kind, name):
        if kind == 'file' and name == 'model_epoch_0_minibatch_1':
            raise KeyboardInterrupt  # stands for the kill: nothing after os.replace runs
        record(kind, name)
    monkeypatch.setattr(saver.manifest, 'record', killed_before_the_file_record)
    with pytest.raises(KeyboardInterrupt):
        saver.save_step({'weights': torch.zeros(3)}, 0, 1)
    monkeypatch.undo()
    path = tmp_path / 'model' / 'model_epoch_0_minibatch_1'
    assert path.is_file()
    resumed = ModelSaver(keep_last=1)
    messages = resumed.bind(str(tmp_path))
    assert len(messages) == 1 and messages[0].startswith(f'recorded {path}: a periodic checkpoint whose save was ')
    assert ModelSaver(keep_last=1).bind(str(tmp_path)) == []  # adopted once
    resumed.save_step({'weights': torch.ones(3)}, 0, 2)
    assert not path.exists()  # pruned by keep_last like any checkpoint of the run
    # a planted file of the same form, never announced, is still left alone
    planted = tmp_path / 'model' / 'model_epoch_9_minibatch_999'
    planted.write_bytes(b'x')
    assert any('left alone' in line for line in ModelSaver(keep_last=1).bind(str(tmp_path)))


@pytest.mark.parametrize('how', ['removed at the next start', 'removed by the failed write'])
def test_a_file_appearing_where_a_removed_temporary_file_was_headed_is_never_adopted(tmp_path, monkeypatch, how):
    # second review item 3: a save announced its temporary file and ended before the rename; the temporary file was
    # removed (as stale by the next bind, or by the failed write itself), yet the announcement stayed the last
    # word on that name, so a file someone else put there later was adopted as the saver's and pruned by keep_last.
    # Now the removal is recorded ('gone'), and only an announcement that is the manifest's last record is adopted
    import training.model_saver as model_saver_module
    saver = ModelSaver(keep_last=1)
    saver.bind(str(tmp_path))
    if how == 'removed at the next start':
        monkeypatch.setattr(model_saver_module, '_discard', lambda *args: None)  # kill -9: nothing runs after it

    def failing(content, stream, *args, **kwargs):
        stream.write(b'\0' * 100)
        raise KeyboardInterrupt if how == 'removed at the next start' else RuntimeError('the write failed')
    monkeypatch.setattr(model_saver_module.torch, 'save', failing)
    with pytest.raises((KeyboardInterrupt, RuntimeError)):
        saver.save_step({'weights': torch.zeros(3)}, 0, 1)
    monkeypatch.undo()
    folder = tmp_path / 'model'
    stale = [name for name in os.listdir(folder) if name.endswith('.tmp')]
    if how == 'removed at the next start':
        assert len(stale) == 1
        messages = ModelSaver(keep_last=1).bind(str(tmp_path))
        assert messages == [f'removed {folder / stale[0]} (100 bytes): temporary file of an interrupted '
                            'checkpoint save']
    assert [name for name in os.listdir(folder) if name.endswith('.tmp')] == []
    users = folder / 'model_epoch_0_minibatch_1'
    users.write_bytes(b'the user\'s own file')
    resumed = ModelSaver(keep_last=1)
    messages = resumed.bind(str(tmp_path))
    assert len(messages) == 1 and messages[0].startswith(f'left alone: {users} is named like a periodic checkpoint')
    for iteration in (2, 3):
        resumed.save_step({'weights': torch.ones(3)}, 0, iteration)
    assert users.read_bytes() == b'the user\'s own file'
    assert not (folder / 'model_epoch_0_minibatch_2').exists()  # the saver's own files are still pruned
