"""DataLoader: distinct reproducible augmentation streams per sample, worker and epoch; skip counting."""
import os

import cv2
import numpy as np
import pytest
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


def test_validation_settings_evaluate_a_list_named_train_as_annotated(tmp_path):
    # The original guesses a data set's role from its list file's name: evaluating `train_list.txt` shuffled,
    # padded and sanitized it, and marked words under min_text_size (8 px) don't care, so it scored other ground
    # truth. Through ValidationSettings the loader gives every sample once, in list order, ground truth as annotated.
    from data.image_io import DataError
    from data.processes import ICDARCollectFN
    from experiment import ValidationSettings

    dataset = make_dataset(tmp_path, count=5, bad=())
    with open(tmp_path / 'train_gts' / 'img_3.jpg.txt', 'w') as handle:  # a 5-px tall word: cared for
        handle.write('20,20,60,20,60,25,20,25,tiny\n')
    dataset.processes = [AugmentDetectionData([['Resize', {'width': 320, 'height': 192}]], only_resize=True,
                                              keep_ratio=True),
                         MakeICDARData(), MakeSegDetectionData(), NormalizeImage()]
    loader = DataLoader(dataset, batch_size=2, num_workers=0, collect_fn=ICDARCollectFN())
    assert dataset.is_training and loader.shuffle and loader.sampler.pad  # what the list's name alone gives
    settings = ValidationSettings(data_loaders={'dev': loader})
    assert settings.data_loaders['dev'] is loader
    assert not dataset.is_training and dataset.on_bad_sample == 'raise'
    batches = list(loader)
    assert [len(batch['filename']) for batch in batches] == [2, 2, 1]
    names = [os.path.basename(name) for batch in batches for name in batch['filename']]
    assert names == [f'img_{index}.jpg' for index in range(5)]
    tags = {os.path.basename(name): list(tag) for batch in batches
            for name, tag in zip(batch['filename'], batch['ignore_tags'])}
    assert tags['img_3.jpg'] == [False] and tags['img_0.jpg'] == [False, True]
    assert list(loader) and [b['filename'] for b in loader] == [b['filename'] for b in batches]  # same order again
    fresh = DataLoader(make_dataset(tmp_path / 'again', count=3, bad=(1,)), batch_size=1, num_workers=0,
                       collect_fn=ICDARCollectFN())
    fresh.dataset.processes = dataset.processes
    ValidationSettings(data_loaders={'dev': fresh})
    with pytest.raises(DataError, match='img_1.jpg'):
        list(fresh)  # a bad image is never replaced by another in evaluation


def test_for_evaluation_is_refused_once_a_pass_began(tmp_path):
    loader = DataLoader(DrawDataset(), batch_size=2, num_workers=0)
    next(iter(loader))
    with pytest.raises(RuntimeError, match='already been bound or iterated'):
        loader.for_evaluation()
