"""Checkpoints detect bit rot (issue 25): every checkpoint the trainer writes carries the SHA-256 of each tensor,
every read through the one reader verifies it, and a damaged file is refused naming the file; files without a
checksum (the original code base's, plain state dicts, older checkpoints of this project) still load, with a note.
"""
import os
import struct
import zipfile
from types import SimpleNamespace

import pytest
import torch

import training_helpers as helpers
from concern.checkpoint_io import CHECKSUM_KEY, CorruptCheckpointError, integrity_note, read_weights_file
from structure.weights import load_trained_model
from training.checkpoint import Checkpoint, build_checkpoint
from training.trainer import Trainer


def zero_bytes_in_the_largest_tensor(path, count=64):
    """Zero ``count`` bytes in the middle of the largest tensor's data (the ``data/`` member of torch's zip file,
    stored uncompressed), rewriting the file in place; returns the offset."""
    with zipfile.ZipFile(path) as archive:
        info = max((item for item in archive.infolist() if '/data/' in item.filename), key=lambda i: i.file_size)
    raw = bytearray(open(path, 'rb').read())
    name_length, extra_length = struct.unpack('<HH', raw[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length + info.file_size // 2 - count // 2
    assert raw[start:start + count] != bytes(count)  # the damage really changes the bytes
    raw[start:start + count] = bytes(count)
    with open(path, 'wb') as stream:
        stream.write(raw)
    return start


def saved_checkpoint(path):
    model = helpers.TinyDetector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.save(build_checkpoint(model.state_dict(), optimizer, None, 0, 1, 1, [], None, None, 0), path)
    return model


def test_a_saved_checkpoint_carries_a_checksum_and_loads(tmp_path):
    path = tmp_path / 'checkpoint'
    model = saved_checkpoint(path)
    content = read_weights_file(path)
    assert content[CHECKSUM_KEY]['algorithm'] == 'sha256'
    assert set(content[CHECKSUM_KEY]['tensors']) >= {f'model/{key}' for key in model.state_dict()}
    assert integrity_note(content, str(path)) is None


def test_zeroed_bytes_in_a_tensor_are_refused_by_every_reader(tmp_path):
    path = tmp_path / 'model_epoch_0_minibatch_1'
    saved_checkpoint(path)
    torch.load(path, weights_only=True)  # the damage below does not stop torch from reading the file
    zero_bytes_in_the_largest_tensor(path)
    assert torch.load(path, weights_only=True)  # torch reads it without a word
    with pytest.raises(CorruptCheckpointError) as raised:
        read_weights_file(path)
    message = str(raised.value)
    assert message.startswith(f'{path}: damaged checkpoint') and 'model/model.module.backbone.weight' in message
    assert 'another checkpoint' in message
    with pytest.raises(ValueError, match='damaged checkpoint'):  # train.py --resume
        Checkpoint(resume=str(path)).restore(helpers.TinyDetector())
    with pytest.raises(ValueError, match='damaged checkpoint'):  # eval.py, demo.py, TextDetector
        load_trained_model(SimpleNamespace(model='Tiny', model_args={}, build=helpers.TinyDetector), str(path))


def test_files_without_a_checksum_load_with_a_note(tmp_path):
    model = helpers.TinyDetector()
    plain = tmp_path / 'pre-trained-model-synthtext-resnet18'
    torch.save(model.state_dict(), plain)  # the original code base's released files: a plain state dict
    older = tmp_path / 'older'
    content = build_checkpoint(model.state_dict(), None, None, 0, 1, 1, [], None, None, 0)
    content.pop(CHECKSUM_KEY)  # this project's checkpoints before the checksum
    torch.save(content, older)
    for path in (plain, older):
        read_weights_file(path)
        start = Checkpoint(resume=str(path)).restore(helpers.TinyDetector())
        assert start.integrity == (f"{path}: no checksum (the original code base's files, plain state dicts and "
                                   'checkpoints written before checksums were recorded): its integrity is not '
                                   'verified')
        lines = []
        load_trained_model(SimpleNamespace(model='Tiny', model_args={}, build=helpers.TinyDetector), str(path),
                           log=lines.append)
        assert any('no checksum' in line for line in lines)


def test_a_resume_of_a_damaged_checkpoint_stops_before_training(tmp_path):
    first = tmp_path / 'first'
    Trainer(helpers.make_experiment(helpers.TinyTrainSet(8), epochs=1, save_interval=1),
            helpers.options(str(first))).train()
    latest = first / 'model' / 'latest'
    assert read_weights_file(latest)[CHECKSUM_KEY]
    zero_bytes_in_the_largest_tensor(latest)
    second = tmp_path / 'second'
    trainer = Trainer(helpers.make_experiment(helpers.TinyTrainSet(8), epochs=2, resume=str(latest)),
                      helpers.options(str(second)))
    with pytest.raises(ValueError, match=f'{latest}: damaged checkpoint'):
        trainer.train()
    assert not os.path.exists(second / 'model')
