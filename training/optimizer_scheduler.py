"""``OptimizerScheduler``: which torch.optim optimizer to build, and the learning rate of each step.

The original code base kept two learning rates: ``optimizer_args.lr`` and the schedule's own ``lr``
(``DecayLearningRate`` defaults to 0.007); only the schedule's was ever used. Here the schedule still
wins (it sets the rate before every step), and a mismatch between the two is reported with a warning.
``--lr`` sets both (see tools/cli.py).
"""
from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, Dict, Iterable, Optional

import torch

from training.learning_rate import base_learning_rate


def optimizer_names() -> list:
    return sorted(name for name, obj in vars(torch.optim).items()
                  if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer)
                  and obj is not torch.optim.Optimizer)


def default_optimizer_args(optimizer: str) -> Dict[str, Any]:
    """``optimizer_args`` when an experiment gives none: the paper's SGD settings, else torch's defaults."""
    return {'lr': 0.007, 'momentum': 0.9, 'weight_decay': 0.0001} if optimizer == 'SGD' else {}


class OptimizerScheduler:
    def __init__(self, optimizer: str = 'SGD', optimizer_args: Optional[Dict[str, Any]] = None,
                 learning_rate: Any = None):
        cls = getattr(torch.optim, str(optimizer), None)
        if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)) or cls is torch.optim.Optimizer:
            raise ValueError(f'optimizer: unknown torch.optim optimizer {optimizer!r}; '
                             f'expected one of {", ".join(optimizer_names())}')
        self.optimizer = str(optimizer)
        self.optimizer_class = cls
        if optimizer_args is None:
            optimizer_args = default_optimizer_args(self.optimizer)
        if not isinstance(optimizer_args, dict):
            raise ValueError(f'optimizer_args must be a mapping, got {type(optimizer_args).__name__}')
        accepted = inspect.signature(cls.__init__).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
        unknown = [] if takes_any else sorted(set(optimizer_args) - set(accepted))
        if unknown:
            raise ValueError(f'optimizer_args: unknown argument(s) {unknown} for torch.optim.{self.optimizer} '
                             f'(accepted: {", ".join(p for p in accepted if p not in ("self", "params"))})')
        self.optimizer_args = dict(optimizer_args)
        if learning_rate is not None and not hasattr(learning_rate, 'get_learning_rate'):
            raise ValueError(f'learning_rate must be a learning-rate object with get_learning_rate(epoch, step), '
                             f'got {learning_rate!r}')
        self.learning_rate = learning_rate
        self._check_base_lr()

    def _check_base_lr(self) -> None:
        if self.learning_rate is None or 'lr' not in self.optimizer_args:
            return
        optimizer_lr = float(self.optimizer_args['lr'])
        schedule_lr = base_learning_rate(self.learning_rate)
        if not math.isclose(optimizer_lr, schedule_lr, rel_tol=1e-9, abs_tol=0.0):
            warnings.warn(f'optimizer_args.lr = {optimizer_lr} differs from the base rate {schedule_lr} of the '
                          f'learning-rate schedule {self.learning_rate!r}; the schedule sets the rate of every '
                          f'step, so {schedule_lr} is used (--lr sets both)', UserWarning, stacklevel=3)

    def create_optimizer(self, parameters: Iterable[Any]) -> torch.optim.Optimizer:
        return self.optimizer_class(parameters, **self.optimizer_args)

    def learning_rate_at(self, epoch: int, step: int) -> Optional[float]:
        """The scheduled rate, or None when there is no schedule (the optimizer keeps its own)."""
        if self.learning_rate is None:
            return None
        return float(self.learning_rate.get_learning_rate(epoch, step))

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, step: int) -> float:
        """Set the rate of every parameter group for this step; returns the rate in use."""
        rate = self.learning_rate_at(epoch, step)
        if rate is None:
            return float(optimizer.param_groups[0]['lr'])
        for group in optimizer.param_groups:
            group['lr'] = rate
        return rate

    def __repr__(self) -> str:
        return (f'OptimizerScheduler(optimizer={self.optimizer!r}, optimizer_args={self.optimizer_args!r}, '
                f'learning_rate={self.learning_rate!r})')
