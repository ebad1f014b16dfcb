"""EpochBatchSampler: the batches of one rank for one epoch, fixed by (seed, epoch); the only sampler of the loaders.

Every item is a :class:`SampleKey` rather than a bare index: besides the sample's index it carries what seeds
that sample's augmentation (seed, epoch, position in the epoch), so a sample is augmented the same whichever
process loads it, with or without worker processes, and a resumed epoch repeats the skipped one's samples.

A pass may start anywhere in the epoch's order (``set_epoch(epoch, skip_samples=N)``): the order depends on (seed,
epoch) and the data set's length only, never on the batch size or the world size, so a run resumed with another
global batch or world size reads the positions after the ``N`` already consumed, each exactly once over all ranks
(``epoch_span`` says where such a pass ends).
"""
import math
from typing import Iterator, List, NamedTuple, Optional

import torch
from torch.utils.data import Sampler


class SampleKey(NamedTuple):
    """What the loader asks its data set for: sample ``sample_index``, augmented from the stream (seed, epoch,
    position). (Not ``index``: a field of that name would hide ``tuple.index``.)"""
    sample_index: int
    seed: int
    epoch: int
    position: int  # in the epoch's whole order (all ranks): unique per epoch, so ranks never share a stream


class EpochSpan(NamedTuple):
    """One pass over an epoch's order: positions ``start .. end - 1`` (all ranks together) in ``steps`` steps of
    each rank; ``total``: the positions the pass's order has, past the data set's length by wrapping around (pad)."""
    start: int
    end: int
    steps: int
    total: int


def epoch_span(length: int, start: int, batch_size: int, world_size: int = 1, drop_last: bool = False,
               pad: bool = True, rank: int = 0) -> EpochSpan:
    """Where a pass over an epoch of ``length`` samples that starts at position ``start`` of its order ends, with
    ``batch_size`` samples per rank and ``world_size`` ranks (``EpochBatchSampler``'s rule).

    With ``pad`` the positions from ``start`` on are padded to a multiple of ``world_size`` by wrapping around to
    the order's beginning, so that every rank has as many samples; without, they end at ``length``. Rank ``r`` reads
    the positions ``start + r``, ``start + r + world_size``, ...; step ``k`` of all ranks together reads the
    positions ``start + k * batch_size * world_size`` up to the next step's, so consecutive steps read consecutive
    slices of the order. With ``drop_last`` a last incomplete step is dropped: ``end`` is where the last full one
    ends. ``steps`` and ``end`` are the same on every rank with ``pad`` (training); without, they are ``rank``'s.
    """
    if start < 0:
        raise ValueError(f'expected a start position >= 0, got {start}')
    if batch_size < 1 or world_size < 1:
        raise ValueError(f'expected batch_size and world_size >= 1, got {batch_size} and {world_size}')
    left = max(length - start, 0)
    total = start + (math.ceil(left / world_size) * world_size if pad else left)
    count = len(range(start + rank, total, world_size))
    steps = count // batch_size if drop_last else math.ceil(count / batch_size)
    return EpochSpan(start, min(start + steps * batch_size * world_size, total), steps, total)


class EpochBatchSampler(Sampler[List[SampleKey]]):
    """Batches of this rank's share of one epoch, from position ``start`` of the epoch's order on.

    The epoch's order depends only on (seed, epoch): with ``shuffle`` a ``randperm`` from a generator seeded
    ``seed + epoch``, else ``0 .. length-1``. With ``pad`` (training) the order is padded by wrapping around to a
    multiple of ``world_size`` (as DistributedSampler does), so that every rank has as many samples and as many
    steps; without (validation) every sample appears exactly once over all ranks. Either way position ``p`` of
    the order belongs to rank ``(p - start) % world_size``, so batch ``k`` of one process with batch
    ``B * world_size`` holds the samples of batch ``k`` of every rank with batch ``B``.

    ``start`` (:meth:`set_epoch`) is ``skip_samples + skip_batches * batch_size * world_size``: ``skip_batches``
    batches of the current global batch (an exact resume with the same batch and world size), or ``skip_samples``
    positions of the order, whatever batch and world size consumed them (a resume after changing either).

    :meth:`configure` (rank, world, batch size, seed) and :meth:`set_epoch` change what the next ``iter`` gives;
    an iteration already started keeps its batches.
    """

    def __init__(self, length: int, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 pad: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.length = int(length)
        self.shuffle, self.drop_last, self.pad = bool(shuffle), bool(drop_last), bool(pad)
        self.epoch = 0
        self.skip_batches = self.skip_samples = 0
        self.configure(rank, world_size, batch_size, seed)

    def configure(self, rank: int, world_size: int, batch_size: int, seed: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f'expected 0 <= rank < world_size, got rank {rank} and world_size {world_size}')
        if batch_size < 1:
            raise ValueError(f'expected a batch size >= 1, got {batch_size}')
        self.rank, self.world_size, self.batch_size, self.seed = int(rank), int(world_size), int(batch_size), int(seed)

    def set_epoch(self, epoch: int, skip_batches: int = 0, skip_samples: int = 0) -> None:
        """The next pass reads epoch ``epoch`` from position ``skip_samples + skip_batches * batch_size *
        world_size`` of its order (the batch size and world size of the pass: :meth:`configure` may follow)."""
        if skip_batches < 0 or skip_samples < 0:
            raise ValueError(f'expected skip_batches and skip_samples >= 0, got {skip_batches} and {skip_samples}')
        self.epoch, self.skip_batches, self.skip_samples = int(epoch), int(skip_batches), int(skip_samples)

    @property
    def start(self) -> int:
        """The position of the epoch's order (all ranks) where the next pass starts."""
        return self.skip_samples + self.skip_batches * self.batch_size * self.world_size

    def span(self, start: Optional[int] = None) -> EpochSpan:
        """Where the next pass (or one from position ``start``) starts and ends (``epoch_span``)."""
        return epoch_span(self.length, self.start if start is None else int(start), self.batch_size,
                          self.world_size, self.drop_last, self.pad, self.rank)

    @property
    def samples_per_rank(self) -> int:
        """This rank's samples in a whole epoch (all ranks have as many with ``pad``)."""
        return len(range(self.rank, self.span(0).total, self.world_size))

    @property
    def steps_per_epoch(self) -> int:
        """This rank's batches in a whole epoch (a last incomplete one dropped with ``drop_last``)."""
        return self.span(0).steps

    def epoch_order(self, epoch: Optional[int] = None) -> List[int]:
        """The indices of the epoch (all ranks; ``epoch`` default: the next pass's): a permutation of
        ``0 .. length-1`` fixed by (seed, epoch), the same for every batch size and world size, with ``pad`` padded
        by wrapping around so that the positions from the next pass's start split evenly over the world size (from
        the beginning of the epoch: a multiple of the world size)."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + (self.epoch if epoch is None else int(epoch)))
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        if self.pad and order:
            total = self.span().total
            while len(order) < total:
                order += order[:total - len(order)]
        return order

    def __iter__(self) -> Iterator[List[SampleKey]]:
        # Fixed now: set_epoch / configure after this call change the next iteration only.
        order, size, seed, epoch, span = self.epoch_order(), self.batch_size, self.seed, self.epoch, self.span()
        positions = range(span.start + self.rank, span.total, self.world_size)[:span.steps * size]
        return ([SampleKey(order[p], seed, epoch, p) for p in positions[start:start + size]]
                for start in range(0, len(positions), size))

    def __len__(self) -> int:
        return self.span().steps
