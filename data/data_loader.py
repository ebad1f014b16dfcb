"""DataLoader: the experiment's loader, the one path that trains and validates (order, sharding, seeds, bad samples)."""
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Protocol, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.utils.data
from torch.utils.data import default_collate

from .rng import reseed
from .sampler import EpochBatchSampler, EpochSpan, SampleKey

BadSample = Tuple[str, str]  # (file, message)


class SizedDataset(Protocol):
    """What the loader needs of a data set (a map-style torch Dataset with a length): its length and samples."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


def _take_bad_samples(dataset: Any) -> List[BadSample]:
    """The bad samples ``dataset`` met in this process since it was last asked (none if it does not report)."""
    take = getattr(dataset, 'take_bad_samples', None)
    return [tuple(report) for report in take()] if take is not None else []


class _SeededSamples(torch.utils.data.Dataset):
    """The data set as the torch loader sees it: a :class:`SampleKey` gives (sample, bad samples met making it).

    The one place the augmentation stream (:mod:`data.rng`) is seeded, in the main process and in every worker
    alike: before each sample, from (seed, epoch, position in the epoch). A sample's augmentation therefore does
    not depend on which process loads it nor on what that process loaded before. The bad samples travel back with
    the batch, so no queue or shared memory is needed between the workers and the main process.
    """

    def __init__(self, dataset: SizedDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey) -> Tuple[Any, List[BadSample]]:
        reseed(key.seed, stream=(key.epoch, key.position))
        sample = self.dataset[key.sample_index]
        return sample, _take_bad_samples(self.dataset)


class _CollateWithReports:
    """The loader's collate function on the samples; the bad-sample reports of the batch beside it."""

    def __init__(self, collate: Callable):
        self.collate = collate

    def __call__(self, items: Sequence[Tuple[Any, List[BadSample]]]) -> Tuple[Any, List[BadSample]]:
        return self.collate([sample for sample, _ in items]), [report for _, reports in items for report in reports]


class DataLoader:
    """The experiment's loader (the original's schema plus ``seed``, ``distributed`` and a few torch options).

    ``shuffle`` and ``drop_last`` default to the loader's role: a *training* loader (``is_training`` and the data
    set's own ``is_training``, True when it has none) shuffles and drops the last incomplete batch; a *validation*
    loader does neither: the YAML files leave the loader's ``is_training`` at its default, and
    :class:`experiment.ValidationSettings` makes each of its loaders one (:meth:`for_evaluation`). ``collect_fn``
    (an object, e.g. ``ICDARCollectFN()``) defaults to torch's default collate; memory is pinned when CUDA is
    available (``pin_memory``); workers are persistent when ``num_workers > 0``.

    Order and sharding (:class:`data.sampler.EpochBatchSampler`): an epoch's order depends only on (seed, epoch).
    :meth:`bind` gives this process's rank and world size: a training loader's ``batch_size`` is the global batch,
    each rank loads ``batch_size // world_size`` of it from the epoch's order padded to a multiple of the world
    size; a validation loader gives each rank its share of the samples, each sample exactly once over all ranks.
    :meth:`start_epoch` names the epoch of the next pass and where in its order it starts: after ``skip_batches``
    batches of the current global batch, or after ``skip_samples`` samples of the order whatever batch and world
    size consumed them (resume with another batch or world size; :meth:`span` says where such a pass ends); a
    training loader's pass that no ``start_epoch`` announced is the epoch after the previous one, a validation
    loader's repeats it.

    Augmentation: every sample is augmented from its own stream (seed, epoch, position), so the same (seed,
    epoch) gives bit-identical batches with any number of workers, and a resumed epoch gives exactly the batches
    after the skipped ones.

    Bad samples: what the data set replaced ('substitute' mode of :class:`ImageDataset`), in the main process or a
    worker, comes back with its batch; :meth:`take_bad_samples` returns them as (file, message).

    torch's DataLoader fixes its batch size and sampler when it is built: the one built here (``torch_loader``) is
    given the batch sampler itself, which :meth:`bind` and :meth:`start_epoch` configure before each pass (the main
    process draws the batches, the workers only load them), so persistent workers survive rebinding.
    """

    def __init__(self, dataset: SizedDataset, batch_size: int = 256, num_workers: int = 10,
                 collect_fn: Optional[Callable] = None, is_training: bool = True, shuffle: Optional[bool] = None,
                 drop_last: Optional[bool] = None, distributed: bool = False, seed: int = 0,
                 pin_memory: Optional[bool] = None, prefetch_factor: Optional[int] = None,
                 multiprocessing_context: Optional[str] = None):
        if batch_size < 1:
            raise ValueError(f'DataLoader: expected batch_size >= 1, got {batch_size}')
        self.dataset = dataset
        self._chosen_order = (shuffle, drop_last)  # None: follow the role
        self.configured_batch_size = int(batch_size)  # as in the file: the global batch of a training loader
        self.num_workers = int(num_workers)
        self.collate_fn = collect_fn if collect_fn is not None else default_collate
        self.distributed = bool(distributed)  # bind to torch.distributed at the first pass unless bind() was called
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.seed = int(seed)
        self.rank, self.world_size = 0, 1
        self._worker_options: Dict[str, Any] = {}
        if self.num_workers > 0:
            self._worker_options = {'persistent_workers': True, 'multiprocessing_context': multiprocessing_context}
            if prefetch_factor is not None:
                self._worker_options['prefetch_factor'] = prefetch_factor
        self._set_role(bool(is_training and getattr(dataset, 'is_training', True)))
        self._bound = False
        self._passes = 0
        self._announced = False  # start_epoch named the next pass
        self._bad_samples: List[BadSample] = []

    def _set_role(self, is_training: bool) -> None:
        """Order, padding and the torch loader for the role: training (shuffled, padded, incomplete batch dropped)
        or validation (in order, every sample once), unless ``shuffle`` / ``drop_last`` were given."""
        shuffle, drop_last = self._chosen_order
        self.is_training = is_training
        self.shuffle = self.is_training if shuffle is None else bool(shuffle)
        self.drop_last = self.is_training if drop_last is None else bool(drop_last)
        self.sampler = EpochBatchSampler(len(self.dataset), self.configured_batch_size, self.shuffle, self.drop_last,
                                         pad=self.is_training, seed=self.seed)
        # torch seeds each worker's torch, ``random`` and legacy NumPy from a base seed drawn from this generator
        # when the workers start (they persist afterwards); the augmentation stream is seeded per sample instead
        self._generator = torch.Generator()
        self._generator.manual_seed(self.seed)
        self.torch_loader = torch.utils.data.DataLoader(
            _SeededSamples(self.dataset), batch_sampler=self.sampler, num_workers=self.num_workers,
            collate_fn=_CollateWithReports(self.collate_fn), pin_memory=self.pin_memory, generator=self._generator,
            **self._worker_options)

    def for_evaluation(self) -> 'DataLoader':
        """Make this a validation / evaluation loader whatever its list files are called: samples in order, each
        exactly once, and the data set in evaluation mode (``set_training(False)`` where it has one: ground truth
        as annotated, a bad sample raises). :class:`experiment.ValidationSettings` calls it on each of its
        loaders. The original guessed the role from the list file's name alone, so that evaluating a list named
        ``train_list.txt`` shuffled, padded and sanitized it. A ``shuffle`` or ``drop_last`` given explicitly is
        kept. Refused once the loader was bound or iterated. Returns self."""
        if self._passes or self._bound:
            raise RuntimeError('DataLoader.for_evaluation: the loader has already been bound or iterated')
        set_training = getattr(self.dataset, 'set_training', None)
        if callable(set_training):
            set_training(False)
        if self.is_training:
            self._set_role(False)
        return self

    # -- configuration --------------------------------------------------------------------
    def bind(self, rank: int = 0, world_size: int = 1, seed: Optional[int] = None) -> None:
        """This process's share: rank ``rank`` of ``world_size``; ``seed`` (None: keep the current one) fixes the
        epochs' order and augmentation. Call before the first pass; calling again reconfigures the next pass."""
        seed = self.seed if seed is None else int(seed)
        batch_size = self.configured_batch_size
        if self.is_training:
            if len(self.dataset) < 1:
                raise ValueError('train.data_loader: the training dataset is empty (length 0)')
            if batch_size % world_size:
                raise ValueError(f'train.data_loader.batch_size: the global batch {batch_size} must be divisible by '
                                 f'the world size {world_size}')
            batch_size //= world_size
        self.sampler.configure(rank, world_size, batch_size, seed)
        self.rank, self.world_size, self.seed = int(rank), int(world_size), seed
        self._generator.manual_seed(seed + 1_000_003 * self.rank)  # the workers' torch / random / NumPy seeds
        self._bound = True

    def start_epoch(self, epoch: int, skip_batches: int = 0, skip_samples: int = 0) -> None:
        """The next pass gives epoch ``epoch`` (order and augmentation) from position ``skip_samples + skip_batches *
        global batch`` of its order: its batch ``skip_batches``, or the sample after the ``skip_samples`` (all ranks
        together) a run with another batch or world size consumed."""
        self.sampler.set_epoch(epoch, skip_batches, skip_samples)
        self._announced = True

    def span(self) -> EpochSpan:
        """Where the next pass starts and ends in its epoch's order (positions over all ranks) and its steps; for
        the pass :meth:`start_epoch` announced (else the whole epoch of the sampler's current setting)."""
        return self.sampler.span()

    @property
    def batch_size(self) -> int:
        """Samples per batch of this rank (the global batch divided by the world size for a training loader)."""
        return self.sampler.batch_size

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    @property
    def steps_per_epoch(self) -> int:
        """Batches of this rank in a whole epoch (the last incomplete one dropped with ``drop_last``)."""
        return self.sampler.steps_per_epoch

    # -- iteration ------------------------------------------------------------------------
    def _begin_pass(self) -> None:
        if not self._bound and (self.distributed or (dist.is_available() and dist.is_initialized())):
            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError('DataLoader: distributed is set but no process group is initialized; call '
                                   'bind(rank, world_size) or init_process_group first')
            self.bind(dist.get_rank(), dist.get_world_size())
        if self._passes and not self._announced:
            self.sampler.set_epoch(self.sampler.epoch + 1 if self.is_training else self.sampler.epoch)
        self._announced = False
        self._passes += 1

    def __iter__(self) -> Iterator[Any]:
        self._begin_pass()
        return self._unpack(iter(self.torch_loader))

    def _unpack(self, batches: Iterator[Tuple[Any, List[BadSample]]]) -> Iterator[Any]:
        for batch, reports in batches:
            self._record(reports)
            yield batch

    def __len__(self) -> int:
        """Batches of the next pass: those of the epoch start_epoch named after the skipped ones, else a whole epoch."""
        if self._passes and not self._announced:
            return self.sampler.steps_per_epoch
        return len(self.sampler)

    # -- bad samples ----------------------------------------------------------------------
    def _record(self, reports: Iterable[BadSample]) -> None:
        self._bad_samples.extend(reports)  # already tuples: _take_bad_samples makes them

    def take_bad_samples(self) -> List[BadSample]:
        """(file, message) of every bad sample met since the last call, by the workers and by this process, in
        the order met; a file met twice (two epochs) is listed twice."""
        self._record(_take_bad_samples(self.dataset))  # met in this process outside a pass, e.g. dataset[i]
        taken, self._bad_samples = self._bad_samples, []
        return taken
