"""Checkpoint files: atomic writes, safe loading, weights-only (fine-tuning) loads, RNG state round trip."""
import os
import random
from collections import OrderedDict

import numpy as np
import pytest
import torch

import training.model_saver as model_saver_module
from training.checkpoint import Checkpoint, capture_rng_state, read_checkpoint_file, restore_rng_state
from training.model_saver import ModelSaver
from training_helpers import TinyDetector


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    saver = ModelSaver(dir_path='model', save_interval=10)
    saver.bind(str(tmp_path))
    first = {'model': {'w': torch.arange(4.0)}}
    path = saver.save_step(first, epoch=0, iteration=10)
    saver.save(first, 'best')
    real_save = torch.save

    def dies_mid_write(content, stream, *args, **kwargs):
        stream.write(b'PK\x03\x04 partial bytes of a checkpoint')
        stream.flush()
        raise OSError('disk full (simulated)')

    monkeypatch.setattr(model_saver_module.torch, 'save', dies_mid_write)
    with pytest.raises(OSError, match='simulated'):
        saver.save({'model': {'w': torch.zeros(4)}}, 'best')
    with pytest.raises(OSError, match='simulated'):
        saver.save_step({'model': {'w': torch.zeros(4)}}, epoch=0, iteration=20)
    monkeypatch.setattr(model_saver_module.torch, 'save', real_save)
    for name in ('best', 'latest', os.path.basename(path)):
        content = torch.load(os.path.join(saver.directory, name), weights_only=True)
        assert torch.equal(content['model']['w'], torch.arange(4.0))
    assert sorted(os.listdir(saver.directory)) == ['.saver_manifest', 'best', 'last_checkpoint', 'latest',
                                                   'model_epoch_0_minibatch_10']
    assert (tmp_path / 'model' / 'last_checkpoint').read_text() == 'best\n'  # the failed saves changed nothing


def test_weights_only_files_load_for_fine_tuning(tmp_path):
    source = TinyDetector()
    state = source.state_dict()
    assert 'model.module.backbone.weight' in state  # the original code base's key layout
    path = tmp_path / 'weights.pth'
    torch.save(OrderedDict(state), path)
    target = TinyDetector()
    start = Checkpoint(start_epoch=3, start_iter=7, resume=str(path)).restore(target)
    assert not start.full and (start.epoch, start.epoch_iteration, start.iteration) == (3, 7, None)
    assert start.how.startswith(f'weights: {path} is a plain state dict') and 'epoch 3 iteration 7' in start.how
    for key, value in target.state_dict().items():
        assert torch.equal(value, state[key])


def test_bad_checkpoint_files_give_clear_errors(tmp_path):
    truncated = tmp_path / 'truncated'
    torch.save(TinyDetector().state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(ValueError, match='truncated: not a PyTorch checkpoint'):
        read_checkpoint_file(str(truncated))
    unsafe = tmp_path / 'unsafe'
    torch.save({'model': TinyDetector()}, unsafe)  # a pickled module: refused by weights_only
    with pytest.raises(ValueError, match='pickled Python object of type training_helpers.TinyDetector') as raised:
        read_checkpoint_file(str(unsafe))
    assert 'weights_only' not in str(raised.value)
    foreign = tmp_path / 'foreign'
    torch.save({'epoch': 3, 'note': 'x'}, foreign)
    with pytest.raises(ValueError, match=r"plain state dict of tensors, got a dict with keys \['epoch', 'note'\]"):
        read_checkpoint_file(str(foreign))
    wrong = tmp_path / 'wrong'
    state = TinyDetector().state_dict()
    state['model.module.decoder.weight'] = torch.zeros(5, 4, 1, 1)
    torch.save(state, wrong)
    with pytest.raises(Exception, match='model.module.decoder.weight'):
        Checkpoint(resume=str(wrong)).restore(TinyDetector())
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        Checkpoint(resume=str(tmp_path / 'missing.pth')).restore(TinyDetector())


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    path = tmp_path / 'rng'
    torch.save({'rng': capture_rng_state()}, path)
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    restore_rng_state(torch.load(path, weights_only=True)['rng'])
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected
