"""Everything that depends on the rank: process-group set-up, model wrapping, data sharding, collectives.

One process per device under ``torchrun`` (``--distributed``): the process group is initialised from the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), with NCCL on GPUs
and Gloo on CPUs. Without it, ``num_gpus > 1`` runs DataParallel in one process.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

ENV_KEYS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


@dataclass
class DistributedContext:
    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None
    device: torch.device = torch.device('cpu')

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def any_flags(self, flags: Sequence[bool]) -> List[bool]:
        """Each flag OR-ed over all ranks (one small all-reduce)."""
        if not self.enabled:
            return [bool(flag) for flag in flags]
        tensor = torch.tensor([int(bool(flag)) for flag in flags], dtype=torch.int32, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return [bool(value) for value in tensor.tolist()]

    def gather_objects(self, obj: Any) -> List[Any]:
        """``obj`` of every rank, in rank order (picklable objects)."""
        if not self.enabled:
            return [obj]
        gathered: List[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def resolve_device(requested: Optional[str], distributed: bool, local_rank: int) -> torch.device:
    if requested is None:
        requested = 'cuda' if torch.cuda.is_available() else 'cpu'
    device = torch.device(requested)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError(f'device {requested!r} asked for, but CUDA is not available here; use --device cpu')
        if distributed:
            device = torch.device('cuda', local_rank)
        elif device.index is None:
            device = torch.device('cuda', torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def setup_distributed(distributed: bool, requested_device: Optional[str], local_rank: int = 0) -> DistributedContext:
    """Initialise the process group from torchrun's environment (or return a single-process context)."""
    if not distributed:
        return DistributedContext(device=resolve_device(requested_device, False, local_rank))
    missing = [key for key in ENV_KEYS if key not in os.environ]
    if missing:
        raise RuntimeError(f'--distributed needs the environment torchrun sets; missing {missing}. Launch with '
                           f'`torchrun --nproc_per_node N train.py ... -d`')
    rank = int(os.environ['RANK'])
    world_size = int(os.environ['WORLD_SIZE'])
    local_rank = int(os.environ['LOCAL_RANK'])
    device = resolve_device(requested_device, True, local_rank)
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method='env://', rank=rank, world_size=world_size,
                                **({'device_id': device} if device.type == 'cuda' else {}))
    return DistributedContext(True, rank, world_size, local_rank, backend, device)


def teardown_distributed(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# Model


def wrap_model(model: nn.Module, context: DistributedContext, device: torch.device, num_gpus: int = 1,
               sync_bn: bool = False) -> nn.Module:
    if context.enabled:
        if sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device_ids = [device.index] if device.type == 'cuda' else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if num_gpus > 1:
        if device.type != 'cuda':
            raise RuntimeError(f'--num_gpus {num_gpus} needs CUDA devices, got device {device}')
        first = device.index or 0
        if torch.cuda.device_count() < first + num_gpus:
            raise RuntimeError(f'--num_gpus {num_gpus} from cuda:{first}: only {torch.cuda.device_count()} '
                               f'CUDA device(s) visible')
        return nn.DataParallel(model, device_ids=list(range(first, first + num_gpus)))
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model itself, without a DataParallel / DistributedDataParallel wrapper (whose ``module.``
    prefix must not reach saved state dicts: they keep ``model.module.backbone...``)."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


# ----------------------------------------------------------------------------------------------
# Data


class ResumableSampler(Sampler[int]):
    """The indices of one rank for one epoch, optionally starting after ``skip`` of them.

    The epoch's order depends only on (seed, epoch): ``randperm`` with a generator seeded ``seed + epoch``,
    padded by wrapping around to a multiple of the world size (as DistributedSampler does), and dealt out
    rank by rank. A resumed run asks for the same epoch and skips the samples already trained on.
    """

    def __init__(self, length: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1):
        if length < 1:
            raise ValueError(f'the training dataset is empty (length {length})')
        self.length = length
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0
        self.samples_per_rank = math.ceil(length / world_size)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = int(epoch)
        self.skip = int(skip)

    def epoch_order(self) -> List[int]:
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        total = self.samples_per_rank * self.world_size
        while len(order) < total:
            order += order[:total - len(order)]
        return order

    def __iter__(self) -> Iterator[int]:
        mine = self.epoch_order()[self.rank::self.world_size]
        return iter(mine[self.skip:])

    def __len__(self) -> int:
        return max(self.samples_per_rank - self.skip, 0)


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world_size, ...: every sample exactly once over all ranks (no padding)."""

    def __init__(self, length: int, rank: int, world_size: int):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _WorkerInit:
    """Seeds NumPy in each loader worker from torch's per-worker seed, then runs the loader's own hook."""

    def __init__(self, original: Any = None):
        self.original = original

    def __call__(self, worker_id: int) -> None:
        np.random.seed(torch.initial_seed() % 2 ** 32)
        if self.original is not None:
            self.original(worker_id)


def _loader_arguments(loader: Any, where: str) -> dict:
    missing = [name for name in ('dataset', 'batch_size', 'collate_fn', 'num_workers') if not hasattr(loader, name)]
    if missing:
        raise TypeError(f'{where}: expected a torch DataLoader, got a {type(loader).__name__} without {missing}')
    if loader.batch_size is None:
        raise ValueError(f'{where}: expected a DataLoader with batch_size, got one with a custom batch_sampler')
    arguments = dict(dataset=loader.dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn,
                     num_workers=loader.num_workers, pin_memory=getattr(loader, 'pin_memory', False),
                     drop_last=getattr(loader, 'drop_last', False), timeout=getattr(loader, 'timeout', 0),
                     multiprocessing_context=getattr(loader, 'multiprocessing_context', None))
    if loader.num_workers > 0:
        arguments['prefetch_factor'] = getattr(loader, 'prefetch_factor', None) or 2
    return arguments


def loader_shuffles(loader: Any) -> bool:
    sampler = getattr(loader, 'sampler', None)
    if isinstance(sampler, torch.utils.data.RandomSampler):
        return True
    if isinstance(sampler, torch.utils.data.SequentialSampler):
        return False
    return bool(getattr(sampler, 'shuffle', True))


def prepare_train_loader(loader: Any, context: DistributedContext, seed: int) -> tuple:
    """A loader over the same dataset whose order the trainer controls (exact resume, sharding).

    ``loader.batch_size`` is the global batch; each of the ``world_size`` processes loads
    ``batch_size / world_size`` samples per step. A loader already built with a DistributedSampler is
    taken to hold the per-process batch size. Returns ``(loader, sampler)``.
    """
    arguments = _loader_arguments(loader, 'train.data_loader')
    already_sharded = isinstance(getattr(loader, 'sampler', None), torch.utils.data.distributed.DistributedSampler)
    if context.world_size > 1 and not already_sharded:
        if arguments['batch_size'] % context.world_size:
            raise ValueError(f'train.data_loader.batch_size: the global batch {arguments["batch_size"]} must be '
                             f'divisible by the world size {context.world_size}')
        arguments['batch_size'] //= context.world_size
    sampler = ResumableSampler(len(arguments['dataset']), loader_shuffles(loader), seed,
                               context.rank, context.world_size)
    generator = torch.Generator()
    generator.manual_seed(seed)
    prepared = DataLoader(sampler=sampler, generator=generator,
                          worker_init_fn=_WorkerInit(getattr(loader, 'worker_init_fn', None)), **arguments)
    return prepared, sampler


def steps_per_epoch(sampler: ResumableSampler, batch_size: int, drop_last: bool) -> int:
    if drop_last:
        return sampler.samples_per_rank // batch_size
    return math.ceil(sampler.samples_per_rank / batch_size)


def shard_validation_loader(loader: Any, context: DistributedContext, where: str) -> Any:
    """This rank's share of a validation loader (the loader itself when there is one process)."""
    if context.world_size == 1:
        return loader
    arguments = _loader_arguments(loader, where)
    arguments['drop_last'] = False
    sampler = ShardSampler(len(arguments['dataset']), context.rank, context.world_size)
    return DataLoader(sampler=sampler, worker_init_fn=getattr(loader, 'worker_init_fn', None), **arguments)


def start_epoch(loader: DataLoader, sampler: ResumableSampler, epoch: int, skip_batches: int,
                context: DistributedContext) -> None:
    """Fix this epoch's order and worker seeds, skipping the batches already trained on."""
    sampler.set_epoch(epoch, skip_batches * loader.batch_size)
    loader.generator.manual_seed(sampler.seed + 1_000_003 * epoch + 7_919 * context.rank)
