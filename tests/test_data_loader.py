"""DataLoader: distinct reproducible augmentation streams per sample, worker and epoch; skip counting."""
import os

import cv2
import numpy as np
import torch
import torch.utils.data

from data import DataLoader, ImageDataset
from data.processes import (AugmentDetectionData, FilterKeys, MakeBorderMap, MakeICDARData, MakeSegDetectionData,
                            NormalizeImage, RandomCropData)
from data.rng import get_rng


class DrawDataset(torch.utils.data.Dataset):
    """Each item: the worker that made it and four draws from the augmentation stream."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        info = torch.utils.data.get_worker_info()
        return {'worker': info.id if info else -1, 'draws': torch.from_numpy(get_rng().random(4))}


def draws(loader, epochs=1):
    out = []
    for _ in range(epochs):
        out.append({})
        for batch in loader:
            out[-1].setdefault(int(batch['worker'][0]), []).append(batch['draws'][0])
    return out


def test_workers_and_epochs_get_distinct_reproducible_streams():
    loader = DataLoader(DrawDataset(), batch_size=1, num_workers=2, shuffle=False, drop_last=False, seed=5)
    first, second = draws(loader, epochs=2)
    assert sorted(first) == [0, 1]
    assert not torch.equal(first[0][0], first[1][0])  # the classic bug: every worker draws the same numbers
    assert not torch.equal(first[0][0], second[0][0])  # the next pass is the next epoch: other numbers
    again = draws(DataLoader(DrawDataset(), batch_size=1, num_workers=2, shuffle=False, drop_last=False, seed=5))[0]
    assert all(torch.equal(a, b) for w in (0, 1) for a, b in zip(first[w], again[w]))
    other = draws(DataLoader(DrawDataset(), batch_size=1, num_workers=2, shuffle=False, drop_last=False, seed=6))[0]
    assert not torch.equal(first[0][0], other[0][0])


def test_defaults_follow_is_training():
    loader = DataLoader(DrawDataset(), batch_size=2, num_workers=0, is_training=False)
    assert not loader.shuffle and not loader.drop_last and not loader.sampler.pad
    loader = DataLoader(DrawDataset(), batch_size=2, num_workers=0)
    assert loader.shuffle and loader.drop_last and loader.sampler.pad
    validation = DrawDataset()
    validation.is_training = False
    loader = DataLoader(validation, batch_size=2, num_workers=0)  # YAML leaves the loader's is_training default
    assert not loader.shuffle and not loader.drop_last and not loader.sampler.pad


def make_dataset(root, count=6, bad=(2,)):
    os.makedirs(root / 'train_images')
    os.makedirs(root / 'train_gts')
    rng = np.random.default_rng(0)
    names = []
    for index in range(count):
        name = f'img_{index}.jpg'
        names.append(name)
        path = str(root / 'train_images' / name)
        if index in bad:
            with open(path, 'w') as handle:
                handle.write('not a jpeg')
        else:
            cv2.imwrite(path, rng.integers(0, 255, (180, 320, 3), dtype=np.uint8))
        with open(root / 'train_gts' / (name + '.txt'), 'w') as handle:
            handle.write('20,20,120,25,118,60,22,55,word\n150,100,300,100,300,140,150,140,###\n')
    with open(root / 'train_list.txt', 'w') as handle:
        handle.write('\n'.join(names) + '\n')
    processes = [AugmentDetectionData([['Fliplr', 0.5], {'cls': 'Affine', 'rotate': [-10, 10]},
                                       ['Resize', [0.5, 3.0]]]),
                 RandomCropData(size=[64, 64], max_tries=10), MakeICDARData(), MakeSegDetectionData(),
                 MakeBorderMap(), NormalizeImage(),
                 FilterKeys(superfluous=['polygons', 'filename', 'shape', 'ignore_tags', 'is_training'])]
    return ImageDataset(data_dir=[str(root)], data_list=[str(root / 'train_list.txt')], processes=processes)


def test_training_batches_and_skip_count_across_workers(tmp_path):
    dataset = make_dataset(tmp_path)
    loader = DataLoader(dataset, batch_size=3, num_workers=2, shuffle=False, drop_last=False, seed=1)
    batches = list(loader)
    batch = batches[0]
    assert set(batch) == {'image', 'gt', 'mask', 'thresh_map', 'thresh_mask'}
    assert tuple(batch['image'].shape) == (3, 3, 64, 64) and tuple(batch['gt'].shape) == (3, 1, 64, 64)
    assert tuple(batch['thresh_map'].shape) == (3, 64, 64) and batch['mask'].dtype == torch.float32
    assert sum(len(b['image']) for b in batches) == 6  # the bad image's slot is filled by another sample
    reports = loader.take_bad_samples()
    assert len(reports) == 1 and loader.take_bad_samples() == []
