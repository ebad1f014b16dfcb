"""EpochBatchSampler: the batches of one rank for one epoch, fixed by (seed, epoch); the only sampler of the loaders.

Every item is a :class:`SampleKey` rather than a bare index: besides the sample's index it carries what seeds
that sample's augmentation (seed, epoch, position in the epoch), so a sample is augmented the same whichever
process loads it, with or without worker processes, and a resumed epoch repeats the skipped one's samples.
"""
import math
from typing import Iterator, List, NamedTuple

import torch
from torch.utils.data import Sampler


class SampleKey(NamedTuple):
    """What the loader asks its data set for: sample ``sample_index``, augmented from the stream (seed, epoch,
    position). (Not ``index``: a field of that name would hide ``tuple.index``.)"""
    sample_index: int
    seed: int
    epoch: int
    position: int  # in the epoch's whole order (all ranks): unique per epoch, so ranks never share a stream


class EpochBatchSampler(Sampler[List[SampleKey]]):
    """Batches of this rank's share of one epoch, starting after ``skip_batches`` of them.

    The epoch's order depends only on (seed, epoch): with ``shuffle`` a ``randperm`` from a generator seeded
    ``seed + epoch``, else ``0 .. length-1``. With ``pad`` (training) the order is padded by wrapping around to a
    multiple of ``world_size`` (as DistributedSampler does), so that every rank has as many samples and as many
    steps; without (validation) every sample appears exactly once over all ranks. Either way position ``p`` of
    the order belongs to rank ``p % world_size``, so batch ``k`` of one process with batch ``B * world_size`` holds
    the samples of batch ``k`` of every rank with batch ``B``.

    :meth:`configure` (rank, world, batch size, seed) and :meth:`set_epoch` change what the next ``iter`` gives;
    an iteration already started keeps its batches.
    """

    def __init__(self, length: int, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 pad: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.length = int(length)
        self.shuffle, self.drop_last, self.pad = bool(shuffle), bool(drop_last), bool(pad)
        self.epoch = 0
        self.skip_batches = 0
        self.configure(rank, world_size, batch_size, seed)

    def configure(self, rank: int, world_size: int, batch_size: int, seed: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f'expected 0 <= rank < world_size, got rank {rank} and world_size {world_size}')
        if batch_size < 1:
            raise ValueError(f'expected a batch size >= 1, got {batch_size}')
        self.rank, self.world_size, self.batch_size, self.seed = int(rank), int(world_size), int(batch_size), int(seed)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        if skip_batches < 0:
            raise ValueError(f'expected skip_batches >= 0, got {skip_batches}')
        self.epoch, self.skip_batches = int(epoch), int(skip_batches)

    @property
    def samples_per_rank(self) -> int:
        """This rank's samples in one epoch (all ranks have as many with ``pad``)."""
        if self.pad:
            return math.ceil(self.length / self.world_size)
        return len(range(self.rank, self.length, self.world_size))

    @property
    def steps_per_epoch(self) -> int:
        """This rank's batches in a whole epoch (a last incomplete one dropped with ``drop_last``)."""
        if self.drop_last:
            return self.samples_per_rank // self.batch_size
        return math.ceil(self.samples_per_rank / self.batch_size)

    def epoch_order(self) -> List[int]:
        """The indices of the whole epoch (all ranks), padded to a multiple of the world size with ``pad``."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        if self.pad and order:
            total = math.ceil(self.length / self.world_size) * self.world_size
            while len(order) < total:
                order += order[:total - len(order)]
        return order

    def __iter__(self) -> Iterator[List[SampleKey]]:
        # Fixed now: set_epoch / configure after this call change the next iteration only.
        order, size, seed, epoch = self.epoch_order(), self.batch_size, self.seed, self.epoch
        positions = range(self.rank, len(order), self.world_size)[self.skip_batches * size:self.steps_per_epoch * size]
        return ([SampleKey(order[p], seed, epoch, p) for p in positions[start:start + size]]
                for start in range(0, len(positions), size))

    def __len__(self) -> int:
        return max(self.steps_per_epoch - self.skip_batches, 0)
