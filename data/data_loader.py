"""DataLoader: torch.utils.data.DataLoader with per-worker, per-epoch augmentation streams."""
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.utils.data
from torch.utils.data import DistributedSampler, default_collate

from .rng import reseed


class _WorkerSeeder:
    """worker_init_fn: seeds the augmentation stream (and ``random`` / legacy NumPy) of each worker from
    torch's per-worker seed, which the loader derives from its own generator for every epoch."""

    def __call__(self, worker_id: int) -> None:
        import random

        import numpy as np
        seed = torch.initial_seed()  # base_seed (fresh per epoch, from the loader's generator) + worker_id
        reseed(seed, stream=(worker_id,))
        random.seed(seed)
        np.random.seed(seed % (2 ** 32))


class DataLoader(torch.utils.data.DataLoader):
    """Schema of the original's DataLoader plus ``seed`` and ``distributed``.

    ``shuffle`` and ``drop_last`` default to ``is_training`` (and the data set's own ``is_training``); ``collect_fn`` (an object, e.g.
    ``ICDARCollectFN()``) defaults to torch's default collate. With ``distributed`` (or an initialized
    process group) a DistributedSampler splits the data; call :meth:`set_epoch` each epoch then.
    Workers are persistent; memory is pinned when CUDA is available.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, batch_size: int = 256, num_workers: int = 10,
                 collect_fn: Optional[Callable] = None, is_training: bool = True, shuffle: Optional[bool] = None,
                 drop_last: Optional[bool] = None, distributed: bool = False, seed: int = 0,
                 pin_memory: Optional[bool] = None, prefetch_factor: Optional[int] = None):
        # A validation data set (is_training False) is neither shuffled nor truncated by default, even
        # though the YAML files leave the loader's is_training at its default.
        training = is_training and getattr(dataset, 'is_training', True)
        shuffle = training if shuffle is None else shuffle
        drop_last = training if drop_last is None else drop_last
        self.is_training, self.seed = is_training, int(seed)
        self.distributed = bool(distributed) or (dist.is_available() and dist.is_initialized())
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        sampler = None
        if self.distributed:
            sampler = DistributedSampler(dataset, shuffle=shuffle, seed=self.seed, drop_last=drop_last)
            shuffle = False
        if num_workers == 0:
            reseed(self.seed, stream=(0xDA7A,))  # main-process loading: reproducible too
        extra = {}
        if num_workers > 0:
            extra = {'persistent_workers': True, 'worker_init_fn': _WorkerSeeder()}
            if prefetch_factor is not None:
                extra['prefetch_factor'] = prefetch_factor
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=num_workers,
                         collate_fn=collect_fn if collect_fn is not None else default_collate, drop_last=drop_last,
                         pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                         generator=generator, **extra)

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)

    def take_skipped_count(self) -> int:
        """Samples skipped as unreadable since the last call (0 if the dataset does not count)."""
        take = getattr(self.dataset, 'take_skipped_count', None)
        return take() if take is not None else 0
