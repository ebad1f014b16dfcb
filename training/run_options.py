"""``RunOptions``: the command-line choices of one training run (train.py fills them in)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class RunOptions:
    name: str
    workspace: Optional[str] = None  # default: workspace/<name>
    device: Optional[str] = None  # 'cpu', 'cuda', 'cuda:N'; None: cuda when available
    validate: bool = False
    visualize: bool = False
    amp: Any = False  # False / None: fp32; True or 'auto': bf16 where supported, else fp16; 'bf16'; 'fp16'
    seed: Optional[int] = None
    benchmark: bool = False
    debug: bool = False
    distributed: bool = False
    num_gpus: int = 1
    local_rank: int = 0
    grad_clip: Optional[float] = None
    max_nan_steps: int = 5
    sync_bn: bool = False  # DDP only: convert BatchNorm layers to SyncBatchNorm
    channels_last: bool = False  # NHWC memory format for the model and the images (faster convolutions on CPU)
    threads: Any = None  # torch CPU threads: None leaves them alone; 'auto' (concern.threads.ThreadGovernor); N fixed

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError('RunOptions.name must be a non-empty run name')
        if self.workspace is None:
            self.workspace = os.path.join('workspace', self.name)
        if self.device is not None and not (self.device == 'cpu' or self.device == 'cuda'
                                            or (self.device.startswith('cuda:') and self.device[5:].isdigit())):
            raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.num_gpus < 1:
            raise ValueError(f'num_gpus must be >= 1, got {self.num_gpus}')
        if self.distributed and self.num_gpus > 1:
            raise ValueError('use either --distributed (one process per GPU, torchrun) or --num_gpus N '
                             '(DataParallel in one process), not both')
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f'grad_clip must be > 0, got {self.grad_clip}')
        if self.amp not in (False, None, True, 'auto', 'bf16', 'fp16'):
            raise ValueError(f"amp: expected False, True, 'auto', 'bf16' or 'fp16', got {self.amp!r}")
        if self.threads is not None:
            from concern.threads import parse_threads
            parse_threads(self.threads)  # ValueError naming a bad value, before anything starts
        if self.max_nan_steps < 1:
            raise ValueError(f'max_nan_steps must be >= 1, got {self.max_nan_steps}')
