"""Every fatal error once, clearly, in the run's log (issue 25): an expected failure (disk full during a save, a
log that cannot be written, the non-finite stop, TensorBoard's writer on a full disk) is one line naming what
failed, the path and the remedy, in output.log and on the console, and train.py ends non-zero without a traceback;
a bug keeps its traceback, which goes to output.log too. Under DDP a non-finite input is named with its rank."""
import errno
import os
import subprocess
import sys

import pytest
import torch

import train as train_entry
import training.model_saver as model_saver_module
import training_helpers as helpers
from concern import log as log_module
from training.trainer import Trainer


def run(tmp_path, experiment, capsys, **overrides):
    """train.py's ending of a run: (exit status, console text, output.log text)."""
    status = train_entry.run_training(lambda: Trainer(experiment, helpers.options(str(tmp_path), **overrides)))
    console = capsys.readouterr().err
    log_file = tmp_path / 'output.log'
    return status, console, log_file.read_text() if log_file.is_file() else ''


def lines_with(text, fragment):
    return [line for line in text.replace('\r', '\n').splitlines() if fragment in line]


def disk_full(content, stream, *args, **kwargs):
    stream.write(b'PK\x03\x04 part of a checkpoint')
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_at_the_first_save_is_one_line_and_claims_no_previous_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(model_saver_module.torch, 'save', disk_full)
    experiment = helpers.make_experiment(helpers.TinyTrainSet(8), epochs=1, save_interval=1)
    status, console, log = run(tmp_path, experiment, capsys)
    assert status == 1
    target = tmp_path / 'model' / 'model_epoch_0_minibatch_1'
    for text in (console, log):
        found = lines_with(text, f'cannot write checkpoint {target}: No space left on device')
        assert len(found) == 1, text
        assert 'no checkpoint of this run has been written yet' in found[0] and 'free some space' in found[0]
        assert 'previous checkpoints are intact' not in text and 'Traceback' not in text


def test_disk_full_at_a_later_save_names_the_checkpoint_to_resume_from(tmp_path, capsys, monkeypatch):
    real_save = torch.save
    calls = []

    def full_from_the_second(content, stream, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            return disk_full(content, stream)
        return real_save(content, stream, *args, **kwargs)
    monkeypatch.setattr(model_saver_module.torch, 'save', full_from_the_second)
    status, console, log = run(tmp_path, helpers.make_experiment(helpers.TinyTrainSet(8), epochs=1, save_interval=1),
                               capsys)
    assert status == 1
    for text in (console, log):
        found = lines_with(text, 'No space left on device')
        assert len(found) == 1 and 'Traceback' not in text
        assert f'the previous checkpoints are intact; free some space (or move the workspace) and resume from ' \
               f'{tmp_path / "model" / "latest"}' in found[0]


def test_a_log_that_cannot_be_written_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    def refused(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    monkeypatch.setattr(log_module, '_FileHandler', refused)
    status, console, _ = run(tmp_path, helpers.make_experiment(helpers.TinyTrainSet(8), epochs=1), capsys)
    assert status == 1
    found = lines_with(console, f"cannot write the run's log {tmp_path / 'output.log'}: Permission denied")
    assert len(found) == 1 and f'check the permissions of {tmp_path}' in found[0]
    assert 'Traceback' not in console


def test_the_non_finite_stop_is_one_line_in_the_log_and_on_the_console(tmp_path, capsys):
    experiment = helpers.make_experiment(helpers.TinyTrainSet(16), epochs=4, lr=1e30, save_interval=1, momentum=0.0)
    status, console, log = run(tmp_path, experiment, capsys)
    assert status == 1
    for text in (console, log):
        found = lines_with(text, 'training stopped: ')
        assert len(found) == 1 and 'lower --lr' in found[0] and 'Traceback' not in text


def test_tensorboard_on_a_full_disk_names_its_folder(tmp_path, capsys, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter
    real_close = SummaryWriter.close

    def close_reports_the_thread_error(self):
        real_close(self)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what its writer thread met, raised at close
    monkeypatch.setattr(SummaryWriter, 'close', close_reports_the_thread_error)
    status, console, log = run(tmp_path, helpers.make_experiment(helpers.TinyTrainSet(8), epochs=1), capsys)
    assert status == 1
    for text in (console, log):
        found = lines_with(text, f'cannot write TensorBoard events to {tmp_path / "tensorboard"}: No space left on '
                                 'device')
        assert len(found) == 1 and 'free some space' in found[0] and 'Traceback' not in text
    assert 'training done at iteration 2' in log  # the log itself was complete before


def test_a_training_crop_the_network_cannot_take_is_one_line_naming_the_setting(tmp_path, capsys):
    """A crop whose side is no multiple of 32 is a setting, not a bug: a real DBNet (ResNet-18, FPN) trained on the
    16x16 samples of the tiny set refuses them in its decoder, and the run ends with one line naming the batch's
    size and the setting to change, without a traceback."""
    from structure.builder import Builder
    experiment = helpers.make_experiment(helpers.TinyTrainSet(8), epochs=1)
    experiment.structure.builder = Builder('SegDetectorModel', {
        'backbone': 'resnet18', 'decoder': 'SegDetector', 'loss_class': 'L1BalanceCELoss',
        'decoder_args': {'adaptive': True, 'in_channels': [64, 128, 256, 512], 'inner_channels': 16, 'k': 50}})
    status, console, log = run(tmp_path, experiment, capsys)
    assert status == 1
    # 16 px: c2..c5 of 4, 2, 1 and 1 px (the last two not a factor 2 apart)
    for text in (console, log):
        found = lines_with(text, 'training batch of 16x16 pixels: feature maps of sizes (1, 1) and (1, 1) are not a '
                                 'factor 2 apart')
        assert len(found) == 1, text
        assert "set the training crop (RandomCropData's size" in found[0] and 'to multiples of 32' in found[0]
        assert 'Traceback' not in text and 'unexpected error' not in text


def test_a_bug_keeps_its_traceback_and_it_goes_to_the_log(tmp_path, capsys, monkeypatch):
    def broken(self, batch):
        return 1 / 0
    monkeypatch.setattr(Trainer, 'run_step', broken)
    status, console, log = run(tmp_path, helpers.make_experiment(helpers.TinyTrainSet(8), epochs=1), capsys)
    assert status == 1
    assert 'training failed at iteration 0 (epoch 0) with an unexpected error (a bug' in log
    assert 'Traceback (most recent call last)' in log and 'ZeroDivisionError: division by zero' in log
    assert len(lines_with(console, 'Traceback (most recent call last)')) == 1  # once: the logger's, not also Python's


def test_a_bug_before_the_log_exists_propagates_with_its_traceback(tmp_path):
    def broken():
        raise ZeroDivisionError('division by zero')
    with pytest.raises(ZeroDivisionError):
        train_entry.run_training(broken)


class OtherRankHasNaN:
    """A two-rank context seen from rank 0: rank 1 read a non-finite image, rank 0's batch is clean."""
    enabled, rank, world_size, is_main = True, 0, 2, True

    def __init__(self, device):
        self.device = device

    def any_flags(self, flags):
        return [True] + [bool(flag) for flag in flags[1:]]

    def gather_objects(self, obj):
        return [obj, ['/data/train/img_8.jpg (image)']]


def test_a_non_finite_input_on_another_rank_is_named_with_its_rank_and_file(tmp_path):
    trainer = Trainer(helpers.make_experiment(helpers.TinyTrainSet(8), epochs=1), helpers.options(str(tmp_path)))
    trainer.train()
    trainer.context = OtherRankHasNaN(trainer.device)
    batch = torch.utils.data.default_collate([helpers.TinyTrainSet(8)[i] for i in (0, 1)])
    step = trainer.run_step(batch)
    assert step.skipped == 'non-finite input: rank 1: /data/train/img_8.jpg (image)' and step.names_files
    assert 'img_0.jpg' not in step.skipped and 'img_1.jpg' not in step.skipped


def test_under_ddp_the_log_names_the_rank_and_the_file_that_was_not_finite(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore', DDP_NAN_RANK='1')
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
               os.path.join(os.path.dirname(os.path.abspath(__file__)), 'training_helpers.py'), str(tmp_path)]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    log = (tmp_path / 'workspace' / 'output.log').read_text()
    skipped = lines_with(log, 'non-finite input')
    assert len(skipped) == 1, log
    named = skipped[0].split('non-finite input: ', 1)[1]
    assert named.startswith('rank 1: img_') and 'rank 0' not in named and named.count('(image)') == 4
