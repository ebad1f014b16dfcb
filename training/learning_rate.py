"""Learning-rate schedules. Each one maps (epoch, step) to a learning rate.

``epoch`` counts completed epochs (0 for the first one) and ``step`` counts completed iterations over the
whole run (it does not restart at each epoch). ``base_lr`` is the rate the schedule starts from; the
optimizer scheduler compares it with ``optimizer_args['lr']``.
"""
from __future__ import annotations

import bisect
from typing import Any, List, Optional, Sequence


def _whole(name: str, value: Any) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or int(value) < 1:
        raise ValueError(f'{name} must be a whole number >= 1, got {value!r}')
    return int(value)


def _positive(name: str, value: Any) -> float:
    value = float(value)
    if not value > 0:
        raise ValueError(f'{name} must be > 0, got {value}')
    return value


class DecayLearningRate:
    """Polynomial ("poly") decay of the DB paper: ``lr * (1 - epoch / (epochs + 1)) ** factor``."""

    def __init__(self, lr: float = 0.007, epochs: int = 1200, factor: float = 0.9):
        self.lr = _positive('lr', lr)
        self.epochs = int(epochs)
        if self.epochs < 1:
            raise ValueError(f'epochs must be >= 1, got {epochs}')
        self.factor = float(factor)

    @property
    def base_lr(self) -> float:
        return self.lr

    def get_learning_rate(self, epoch: int, step: int) -> float:
        fraction = min(epoch, self.epochs) / (self.epochs + 1)
        return self.lr * (1.0 - fraction) ** self.factor

    def __repr__(self) -> str:
        return f'DecayLearningRate(lr={self.lr}, epochs={self.epochs}, factor={self.factor})'


class PolyIterationLearningRate:
    """Polynomial decay over iterations: ``lr * (1 - min(step, iterations) / iterations) ** factor``.

    The DB paper's "poly" policy with its power 0.9, applied per iteration instead of per epoch
    (:class:`DecayLearningRate` keeps the original's per-epoch form). A short run needs it: the per-epoch
    form over 3 epochs spends its last epoch at (2 / 4) ** 0.9 = 0.54 of the starting rate; this one trains its
    last step at ``lr * (1 / iterations) ** factor`` and reaches 0 after it.

    ``iterations``: the run's length in iterations, after which the rate stays 0; None (the default) takes the
    length of the run being trained (epochs x iterations per epoch, so ``--epochs`` and ``--batch_size`` carry
    over), which the trainer sets through :func:`bind_run_length` before the first step and again at a resume
    (a resume that lengthens the run, e.g. more epochs, continues on the longer run's curve, so its rate jumps up).
    Asking for a rate before the length is known raises ``RuntimeError``; a non-integer length ``ValueError``.
    """

    def __init__(self, lr: float = 0.007, iterations: Optional[int] = None, factor: float = 0.9):
        self.lr = _positive('lr', lr)
        self.configured_iterations = None if iterations is None else _whole('iterations', iterations)
        self.iterations = self.configured_iterations
        self.factor = _positive('factor', factor)

    @property
    def base_lr(self) -> float:
        """The rate at step 0."""
        return self.lr

    def bind_run_length(self, iterations: int) -> Optional[str]:
        """Take the run's length unless the file gave one; returns a line for the log: the length in use, and
        whether the file's length differs from the run's (the rate then stays 0, or stops above 0)."""
        run_length = max(int(iterations), 1)
        if self.configured_iterations is None:
            self.iterations = run_length
            return f'learning rate: poly decay per iteration over the run\'s {run_length} iterations'
        if self.configured_iterations != run_length:
            return (f'learning rate: poly decay over iterations={self.configured_iterations} from the file, but the '
                    f'run has {run_length} iterations (iterations: null follows the run)')
        return None

    def get_learning_rate(self, epoch: int, step: int) -> float:
        """The rate of iteration ``step`` (``epoch`` is not used)."""
        if self.iterations is None:
            raise RuntimeError('PolyIterationLearningRate(iterations=None): the run length is not known yet '
                               '(the trainer sets it; elsewhere give iterations)')
        fraction = min(step, self.iterations) / self.iterations
        return self.lr * (1.0 - fraction) ** self.factor

    def __repr__(self) -> str:
        bound = '' if self.iterations == self.configured_iterations else f' (the run: {self.iterations})'
        return (f'PolyIterationLearningRate(lr={self.lr}, iterations={self.configured_iterations}{bound}, '
                f'factor={self.factor})')


class ConstantLearningRate:
    def __init__(self, lr: float = 0.0001):
        self.lr = _positive('lr', lr)

    @property
    def base_lr(self) -> float:
        return self.lr

    def get_learning_rate(self, epoch: int, step: int) -> float:
        return self.lr

    def __repr__(self) -> str:
        return f'ConstantLearningRate(lr={self.lr})'


class MultiStepLR:
    """``lr * gamma ** k`` where k is the number of milestones (epochs) already reached."""

    def __init__(self, lr: float = 0.007, milestones: Sequence[int] = (), gamma: float = 0.1):
        self.lr = _positive('lr', lr)
        self.milestones = [int(m) for m in milestones]
        if self.milestones != sorted(self.milestones):
            raise ValueError(f'milestones must be sorted ascending, got {list(milestones)}')
        self.gamma = float(gamma)

    @property
    def base_lr(self) -> float:
        return self.lr

    def get_learning_rate(self, epoch: int, step: int) -> float:
        return self.lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)

    def __repr__(self) -> str:
        return f'MultiStepLR(lr={self.lr}, milestones={self.milestones}, gamma={self.gamma})'


class WarmupLR:
    """Linear warm-up from ``warmup_lr`` to the wrapped schedule over the first ``steps`` iterations.

    At iteration ``s < steps`` the rate is ``warmup_lr + (origin(epoch, s) - warmup_lr) * s / steps``;
    from ``steps`` on it is the wrapped schedule ``origin_lr`` itself.
    """

    def __init__(self, steps: int = 4000, warmup_lr: float = 1e-5, origin_lr: Any = None):
        self.steps = int(steps)
        if self.steps < 0:
            raise ValueError(f'steps must be >= 0, got {steps}')
        self.warmup_lr = float(warmup_lr)
        if origin_lr is None or not hasattr(origin_lr, 'get_learning_rate'):
            raise ValueError('origin_lr must be a learning-rate object (a dict with class: ...), '
                             f'got {origin_lr!r}')
        self.origin_lr = origin_lr

    @property
    def base_lr(self) -> float:
        return base_learning_rate(self.origin_lr)

    def get_learning_rate(self, epoch: int, step: int) -> float:
        target = self.origin_lr.get_learning_rate(epoch, step)
        if step >= self.steps:
            return target
        return self.warmup_lr + (target - self.warmup_lr) * step / self.steps

    def __repr__(self) -> str:
        return f'WarmupLR(steps={self.steps}, warmup_lr={self.warmup_lr}, origin_lr={self.origin_lr!r})'


class PiecewiseConstantLearningRate:
    """``values[i]`` while ``step < boundaries[i]``; ``values[-1]`` after the last boundary (iterations)."""

    def __init__(self, boundaries: Sequence[int] = (10000, 20000), values: Sequence[float] = (0.01, 0.001, 0.0001)):
        self.boundaries = [int(b) for b in boundaries]
        self.values = [float(v) for v in values]
        if self.boundaries != sorted(self.boundaries):
            raise ValueError(f'boundaries must be sorted ascending, got {list(boundaries)}')
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(f'values must have one more entry than boundaries: expected '
                             f'{len(self.boundaries) + 1}, got {len(self.values)}')

    @property
    def base_lr(self) -> float:
        return self.values[0]

    def get_learning_rate(self, epoch: int, step: int) -> float:
        return self.values[bisect.bisect_right(self.boundaries, step)]

    def __repr__(self) -> str:
        return f'PiecewiseConstantLearningRate(boundaries={self.boundaries}, values={self.values})'


def base_learning_rate(schedule: Any) -> float:
    """The rate a schedule starts from (``schedule.base_lr``, else its value at epoch 0, step 0)."""
    if hasattr(schedule, 'base_lr'):
        return float(schedule.base_lr)
    return float(schedule.get_learning_rate(0, 0))


def bind_run_length(schedule: Any, iterations: int) -> List[str]:
    """Tell a schedule, and the schedules it wraps (``origin_lr``), how many iterations the run has; the lines
    they return for the log."""
    lines: List[str] = []
    while schedule is not None:
        if hasattr(schedule, 'bind_run_length'):
            line = schedule.bind_run_length(iterations)
            if line:
                lines.append(line)
        schedule = getattr(schedule, 'origin_lr', None)
    return lines
