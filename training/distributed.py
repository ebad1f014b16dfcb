"""Everything that depends on the rank: process-group set-up, model wrapping, collectives.

Data sharding lives with the loader: ``data.DataLoader.bind(rank, world_size, seed)``.

One process per device under ``torchrun`` (``--distributed``): the process group is initialised from the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), with NCCL on GPUs
and Gloo on CPUs. Without it, ``num_gpus > 1`` runs DataParallel in one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from concern.device import select_device

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

    def average_tensors(self, tensors: Sequence[torch.Tensor]) -> None:
        """Each floating-point tensor replaced, in place, by its mean over all ranks (one all-reduce each)."""
        if not self.enabled:
            return
        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor.div_(self.world_size)

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
    """``concern.device.select_device(requested)``; on CUDA the rank's GPU (``local_rank`` under ``distributed``,
    else the given or current index), made the current device."""
    device = select_device(requested)
    if device.type == 'cuda':
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
                                device_id=device if device.type == 'cuda' else None)
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
