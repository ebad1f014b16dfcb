"""Small helpers on batches and loaders shared by the training step and validation."""
from __future__ import annotations

from typing import Any, Mapping

import torch


def move_to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Every tensor of ``batch`` (a dict, or one tensor) on ``device``; a 4-D ``image`` channels-last on request."""
    if isinstance(batch, Mapping):
        moved = {key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
                 for key, value in batch.items()}
        if channels_last and isinstance(moved.get('image'), torch.Tensor) and moved['image'].dim() == 4:
            moved['image'] = moved['image'].contiguous(memory_format=torch.channels_last)
        return moved
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return batch


def describe_batch(batch: Any, epoch: int, epoch_iteration: int) -> str:
    """``files a, b, ...`` of a batch, for messages; its position when it names no file."""
    files = batch.get('filename') if isinstance(batch, Mapping) else None
    if files:
        return 'files ' + ', '.join(str(name) for name in files)
    return f'batch {epoch_iteration} of epoch {epoch} (no filename key)'


def bind_loader(loader: Any, context: Any, where: str, seed: Any = None) -> Any:
    """``loader`` bound to this rank (``data.DataLoader.bind``: the rank's share of the samples); a loader
    without ``bind`` is used as it is in a single process, and is an error under several."""
    bind = getattr(loader, 'bind', None)
    if bind is not None:
        bind(context.rank, context.world_size, seed)
    elif context.world_size > 1:
        raise TypeError(f'{where}: expected a data.DataLoader (it shards the samples over the ranks), got '
                        f'{type(loader).__name__}')
    return loader
