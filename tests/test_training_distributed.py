"""DistributedDataParallel for real: two CPU processes (Gloo) under torchrun vs one process, same global batch."""
import os
import subprocess
import sys

import pytest
import torch

import training_helpers as helpers
from data.sampler import EpochBatchSampler
from training.trainer import Trainer

HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'training_helpers.py')


def test_ranks_share_out_each_global_batch():
    length, world = 10, 2

    def batches(sampler):
        return [[key.sample_index for key in batch] for batch in sampler]

    single = batches(EpochBatchSampler(length, 4, shuffle=True, seed=5))
    ranks = [batches(EpochBatchSampler(length, 2, shuffle=True, seed=5, rank=rank, world_size=world))
             for rank in range(world)]
    # batch k of the single process (size 4) is the union of batch k of each rank (size 2)
    for k in range(2):
        assert sorted(single[k]) == sorted(ranks[0][k] + ranks[1][k])
    assert sorted(sum(ranks[0] + ranks[1], [])) == sorted(sum(single, []))
    resumed = EpochBatchSampler(length, 4, shuffle=True, seed=5)
    resumed.set_epoch(0, skip_batches=1)
    assert batches(resumed) == single[1:] and len(resumed) == 2
    resumed.set_epoch(1)
    assert batches(resumed) != single and sorted(sum(batches(resumed), [])) == list(range(length))


def test_two_gloo_processes_match_one_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
               HELPERS, str(tmp_path)]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    ranks = [torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in range(2)]
    assert [r['world_size'] for r in ranks] == [2, 2]
    assert [r['per_process_batch'] for r in ranks] == [helpers.DDP_GLOBAL_BATCH // 2] * 2
    for key, value in ranks[0]['state'].items():
        assert torch.equal(value, ranks[1]['state'][key]), key  # DDP keeps the replicas identical
    local = ('last_loss',)  # each rank's own loss; the rest is shared
    assert {k: v for k, v in ranks[0]['summary'].items() if k not in local} == \
        {k: v for k, v in ranks[1]['summary'].items() if k not in local}

    single_workspace = str(tmp_path / 'single')
    trainer = Trainer(helpers.ddp_experiment(single_workspace), helpers.options(single_workspace, validate=True))
    summary = trainer.train()
    single_state = trainer.model.state_dict()
    for key, value in single_state.items():
        torch.testing.assert_close(ranks[0]['state'][key], value, rtol=1e-5, atol=1e-6)
    assert summary['iteration'] == ranks[0]['summary']['iteration'] == 4
    # validation measured on two shards (3 + 2 images) and gathered equals the single-process measurement
    single_validation = summary['validation']
    assert trainer.validate() == single_validation  # after training: the same model, the same result
    assert single_validation['tiny']['precision'] == single_validation['tiny']['recall'] == 5
    for rank in ranks:
        assert rank['summary']['validation'] == {'tiny': pytest.approx(single_validation['tiny'], rel=1e-5)}
    assert 0 < summary['best_fmeasure'] < 1
    assert ranks[0]['summary']['best_fmeasure'] == pytest.approx(summary['best_fmeasure'], rel=1e-5)
    # rank 0 alone wrote the checkpoint; its keys have no DDP 'module.' prefix
    saved = helpers.model_state(str(tmp_path / 'workspace'))
    assert set(saved) == set(single_state) and all(key.startswith('model.module.') for key in saved)
    torch.testing.assert_close(saved, ranks[0]['state'])


def test_precise_bn_under_two_gloo_processes_leaves_the_replicas_with_the_same_statistics(tmp_path):
    """Each rank recomputes over its half of every global batch; the statistics are then averaged over the ranks,
    so the replicas stay identical (without the average each would keep the statistics of its own shards), and
    the running mean is the mean over the whole global batches of the recomputation."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore', DDP_PRECISE_BN='3')
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
               HELPERS, str(tmp_path)]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    ranks = [torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in range(2)]
    norm = 'model.module.backbone.1.'
    for key in ranks[0]['state']:
        assert torch.equal(ranks[0]['state'][key], ranks[1]['state'][key]), key
    assert int(ranks[0]['state'][norm + 'num_batches_tracked']) == 3
    # by hand: the final convolution over the 3 global batches of the epochs after the last (2 batches an epoch)
    state = ranks[0]['state']
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    conv.load_state_dict({'weight': state['model.module.backbone.0.weight'],
                          'bias': state['model.module.backbone.0.bias']})
    loader = helpers.make_experiment(helpers.TinyTrainSet(helpers.DDP_SAMPLES),
                                     batch_size=helpers.DDP_GLOBAL_BATCH).train.data_loader
    loader.bind(0, 1, seed=0)
    images = []
    for epoch in (helpers.DDP_EPOCHS, helpers.DDP_EPOCHS + 1):
        loader.start_epoch(epoch)
        images += [batch['image'] for batch in loader]
    with torch.no_grad():
        means = torch.stack([conv(image).mean(dim=(0, 2, 3)) for image in images[:3]]).mean(0)
    torch.testing.assert_close(state[norm + 'running_mean'], means, rtol=1e-5, atol=1e-6)
    saved = helpers.model_state(str(tmp_path / 'workspace'))
    torch.testing.assert_close(saved, ranks[0]['state'])
    assert 'train.precise_bn: BatchNorm statistics of 1 layers recomputed over 3 batches (24 samples)' in \
        (tmp_path / 'workspace' / 'output.log').read_text()
