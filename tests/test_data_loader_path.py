"""data.DataLoader as the one training/validation path: bind (ranks), start_epoch (order, exact resume), workers,
bad samples reported back to the main process."""
import os

import cv2
import numpy as np
import pytest
import torch
import torch.utils.data

from data import DataLoader, ImageDataset
from data.processes import (AugmentDetectionData, FilterKeys, ICDARCollectFN, MakeBorderMap, MakeICDARData,
                            MakeSegDetectionData, NormalizeImage, RandomCropData)
from data.rng import get_rng
from data.sampler import EpochBatchSampler

GT = '20,20,120,25,118,60,22,55,word\n150,100,300,100,300,140,150,140,###\n'


def write_images(root, split, count, bad=()):
    os.makedirs(root / f'{split}_images')
    os.makedirs(root / f'{split}_gts')
    rng = np.random.default_rng(0)
    names = [f'img_{index}.jpg' for index in range(count)]
    for index, name in enumerate(names):
        path = str(root / f'{split}_images' / name)
        if index in bad:
            with open(path, 'w') as handle:
                handle.write('not a jpeg')
        else:
            cv2.imwrite(path, rng.integers(0, 255, (180, 320, 3), dtype=np.uint8))
        with open(root / f'{split}_gts' / (name + '.txt'), 'w') as handle:
            handle.write(GT)
    with open(root / f'{split}_list.txt', 'w') as handle:
        handle.write('\n'.join(names) + '\n')
    return [str(root)], [str(root / f'{split}_list.txt')]


def training_set(root, count=8, bad=()):
    """A training ImageDataset with random augmentation (flip, rotation, scale, crop) and 'substitute' (default)."""
    data_dir, data_list = write_images(root, 'train', count, bad)
    augmenters = [['Fliplr', 0.5], {'cls': 'Affine', 'rotate': [-10, 10]}, ['Resize', [0.5, 3.0]]]
    processes = [AugmentDetectionData(augmenters),
                 RandomCropData(size=[48, 48], max_tries=10), MakeICDARData(), MakeSegDetectionData(),
                 MakeBorderMap(), NormalizeImage(),
                 FilterKeys(superfluous=['polygons', 'shape', 'ignore_tags', 'is_training'])]
    return ImageDataset(data_dir=data_dir, data_list=data_list, processes=processes)


def assert_same_batches(left, right):
    assert len(left) == len(right)
    for a, b in zip(left, right):
        assert a['filename'] == b['filename']
        for key in ('image', 'gt', 'mask', 'thresh_mask', 'thresh_map'):  # bit-exact, label maps included
            assert torch.equal(a[key], b[key]), key


def epoch(loader, number, skip_batches=0):
    loader.start_epoch(number, skip_batches)
    return list(loader)


def test_epochs_repeat_and_resume_exactly_with_and_without_workers(tmp_path):
    dataset = training_set(tmp_path)
    runs = {}
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=2, num_workers=workers, seed=3, pin_memory=False)
        loader.bind(0, 1, seed=11)
        assert loader.steps_per_epoch == 4 and loader.batch_size == 2
        full = epoch(loader, 1)
        assert len(full) == 4 and tuple(full[0]['image'].shape) == (2, 3, 48, 48)
        assert_same_batches(epoch(loader, 1), full)  # the same (seed, epoch): the same batches, augmentation too
        resumed = DataLoader(dataset, batch_size=2, num_workers=workers, seed=3, pin_memory=False)
        resumed.bind(0, 1, seed=11)
        resumed.start_epoch(1, skip_batches=3)
        assert len(resumed) == 1
        assert_same_batches(list(resumed), full[3:])
        assert_same_batches(epoch(resumed, 1, skip_batches=1), full[1:])
        other = epoch(loader, 2)
        assert [b['filename'] for b in other] != [b['filename'] for b in full]
        runs[workers] = full
    # each sample has its own augmentation stream: any number of workers gives the same batches
    assert_same_batches(runs[0], runs[2])


def test_seed_changes_order_and_augmentation(tmp_path):
    dataset = training_set(tmp_path, count=4)
    batches = {}
    for seed in (1, 2):
        loader = DataLoader(dataset, batch_size=4, num_workers=0, pin_memory=False)
        loader.bind(seed=seed)
        batches[seed] = epoch(loader, 0)[0]
    one, two = (sorted(zip(b['filename'], b['image'])) for b in (batches[1], batches[2]))
    assert [name for name, _ in one] == [name for name, _ in two]
    assert not any(torch.equal(a, b) for (_, a), (_, b) in zip(one, two))


class Indices(torch.utils.data.Dataset):
    """Items: the index, the process that loaded it and two augmentation draws."""

    def __init__(self, length, is_training=True):
        self.length, self.is_training = length, is_training

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return {'index': index, 'pid': os.getpid(), 'draws': torch.from_numpy(get_rng().random(2))}


def indices(batches):
    return [int(i) for batch in batches for i in batch['index']]


def test_two_ranks_share_the_padded_permutation_of_each_epoch():
    length, world = 11, 2
    single = DataLoader(Indices(length), batch_size=4, num_workers=0, drop_last=False)
    single.bind(0, 1, seed=5)
    ranks = [DataLoader(Indices(length), batch_size=4, num_workers=0, drop_last=False) for _ in range(world)]
    for rank, loader in enumerate(ranks):
        loader.bind(rank, world, seed=5)
        assert loader.batch_size == 2 and loader.steps_per_epoch == 3 and loader.configured_batch_size == 4
    for number in (0, 1):
        sampler = EpochBatchSampler(length, 4, shuffle=True, seed=5)
        sampler.set_epoch(number)
        order = sampler.epoch_order()
        assert sorted(order) == list(range(length))
        padded = order + order[:1]  # 11 -> 12, a multiple of the world size
        per_rank = [epoch(loader, number) for loader in ranks]
        assert sorted(indices(per_rank[0]) + indices(per_rank[1])) == sorted(padded)
        assert indices(per_rank[0]) == padded[0::2] and indices(per_rank[1]) == padded[1::2]
        # batch k of one process with the global batch holds batch k of every rank (the last one: but the padding)
        whole = epoch(single, number)
        assert indices(whole) == order
        for k, batch in enumerate(whole[:2]):
            assert sorted(batch['index'].tolist()) == sorted(per_rank[0][k]['index'].tolist()
                                                             + per_rank[1][k]['index'].tolist())
        # one stream per position: the ranks' copies of the padded sample are augmented differently
        draws = [row for batches in per_rank for batch in batches for row in batch['draws']]
        assert len({tuple(row.tolist()) for row in draws}) == len(padded)
    with pytest.raises(ValueError, match='train.data_loader.batch_size'):
        DataLoader(Indices(length), batch_size=4, num_workers=0).bind(0, 3)


def test_validation_ranks_see_every_sample_exactly_once():
    length, world = 11, 2
    shares = []
    for rank in range(world):
        loader = DataLoader(Indices(length, is_training=False), batch_size=4, num_workers=0)
        assert not loader.shuffle and not loader.drop_last and not loader.is_training
        loader.bind(rank, world)
        assert loader.batch_size == 4  # a validation loader's batch is per process
        shares.append(indices(loader))
    assert shares == [list(range(0, length, 2)), list(range(1, length, 2))]
    loader.bind(0, 1)  # rebinding (validation after a distributed run) gives the whole set again
    assert indices(loader) == list(range(length))


def test_validation_images_through_icdar_collect_on_two_ranks_and_workers(tmp_path):
    data_dir, data_list = write_images(tmp_path, 'test', 5)
    dataset = ImageDataset(data_dir=data_dir, data_list=data_list, processes=[MakeICDARData()])
    assert not dataset.is_training and dataset.on_bad_sample == 'raise'
    names = []
    for rank in range(2):
        loader = DataLoader(dataset, batch_size=2, num_workers=2 * rank, collect_fn=ICDARCollectFN(),
                            pin_memory=False)
        loader.bind(rank, 2)
        batches = list(loader)
        assert all(batch['image'].shape[1:] == (180, 320, 3) for batch in batches)
        names += [os.path.basename(name) for batch in batches for name in batch['filename']]
    assert sorted(names) == [f'img_{index}.jpg' for index in range(5)]


def test_passes_without_start_epoch():
    training = DataLoader(Indices(6), batch_size=2, num_workers=0)
    first, second = list(training), list(training)  # a training loader's next pass is the next epoch
    assert training.epoch == 1 and indices(first) != indices(second)
    assert sorted(indices(first)) == sorted(indices(second)) == list(range(6))
    training.start_epoch(0, skip_batches=2)
    assert len(training) == 1 and indices(training) == indices(first)[4:]
    assert len(training) == 3  # the pass after a resumed one is a whole epoch
    validation = DataLoader(Indices(5, is_training=False), batch_size=2, num_workers=0)
    first, second = list(validation), list(validation)
    assert indices(first) == indices(second) == list(range(5))
    assert all(torch.equal(a['draws'], b['draws']) for a, b in zip(first, second))  # validation repeats itself


def test_workers_persist_across_epochs_and_rebinding():
    loader = DataLoader(Indices(8), batch_size=2, num_workers=2, pin_memory=False)
    assert loader.torch_loader.persistent_workers and loader.torch_loader.num_workers == 2
    loader.bind(0, 1, seed=1)
    pids = {int(p) for batch in epoch(loader, 0) for p in batch['pid']}
    assert len(pids) == 2 and os.getpid() not in pids
    loader.bind(1, 2, seed=1)  # the batch sampler is reconfigured; the workers stay
    batches = epoch(loader, 1)
    assert loader.batch_size == 1 and len(batches) == 4
    assert {int(p) for batch in batches for p in batch['pid']} == pids
    assert not DataLoader(Indices(8), batch_size=2, num_workers=0).torch_loader.persistent_workers


@pytest.mark.parametrize('workers,context', [(0, None), (2, None), (1, 'spawn')])
def test_bad_samples_come_back_to_the_main_process(tmp_path, workers, context):
    dataset = training_set(tmp_path, count=4, bad=(2,))
    assert dataset.on_bad_sample == 'substitute'
    loader = DataLoader(dataset, batch_size=2, num_workers=workers, pin_memory=False, multiprocessing_context=context)
    loader.bind(0, 1, seed=0)
    taken = []
    for number in (0, 1):
        batches = epoch(loader, number)
        assert sum(len(batch['image']) for batch in batches) == 4  # the bad image's slot filled by another sample
        reports = loader.take_bad_samples()
        assert len(reports) == 1 and loader.take_bad_samples() == []
        taken += reports
    bad_file = str(tmp_path / 'train_images' / 'img_2.jpg')
    assert [file for file, _ in taken] == [bad_file, bad_file]  # met once per epoch: two reports, one distinct file
    assert len({file for file, _ in taken}) == 1
    assert all(bad_file in message for _, message in taken)
