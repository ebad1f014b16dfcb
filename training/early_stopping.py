"""``EarlyStopping``: end a run whose validation F-measure (the hmean) has stopped improving (``train.early_stopping``).

A plain class: its constructor signature is its schema in the experiment file. The Validation hook
(training/hooks.py) feeds it each validation's result; its state goes into every checkpoint (``state_dict``), so
that a resumed run decides exactly as the uninterrupted one would.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional


class EarlyStopping:
    """Stop after ``patience`` validations in a row without an F-measure more than ``min_delta`` above the best so
    far. ``loader``: the validation loader whose F-measure counts (default: the first, the one that picks
    ``model/best``). A validation that gave no result for that loader (it failed, logged) does not count.

    The run then ends normally: the final checkpoint is written (``model/final``), ``model/best`` stays the best.
    """

    def __init__(self, patience: int, min_delta: float = 0.0, loader: Optional[str] = None):
        if isinstance(patience, bool) or int(patience) != patience or int(patience) < 1:
            raise ValueError(f'train.early_stopping.patience: expected a whole number of validations >= 1, '
                             f'got {patience!r}')
        if not math.isfinite(float(min_delta)) or float(min_delta) < 0:
            raise ValueError(f'train.early_stopping.min_delta: expected a finite number >= 0, got {min_delta!r}')
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.loader = loader
        self.best: Optional[float] = None
        self.best_iteration: Optional[int] = None
        self.since = 0  # validations since the last improvement

    def observe(self, fmeasure: float, iteration: int) -> bool:
        """Count one validation's F-measure; whether the run should stop now."""
        if self.best is None or fmeasure > self.best + self.min_delta:
            self.best, self.best_iteration, self.since = float(fmeasure), int(iteration), 0
        else:
            self.since += 1
        return self.should_stop

    @property
    def should_stop(self) -> bool:
        """Whether the validations counted so far end the run (also when a resumed state already did)."""
        return self.since >= self.patience

    def reason(self, iteration: int) -> str:
        """Why the run stops (one line for its log)."""
        best = 'none' if self.best is None else f'{self.best:.4f} at iteration {self.best_iteration}'
        return (f'early stopping at iteration {iteration}: the fmeasure of validation loader {self.loader!r} has not '
                f'improved by more than {self.min_delta:g} in {self.since} validation(s) (patience {self.patience}; '
                f'best {best})')

    def state_dict(self) -> Dict[str, Any]:
        """Plain values, for the checkpoint."""
        return {'best': self.best, 'best_iteration': self.best_iteration, 'since': self.since}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        best, best_iteration, since = state.get('best'), state.get('best_iteration'), state.get('since', 0)
        self.best = None if best is None else float(best)
        self.best_iteration = None if best_iteration is None else int(best_iteration)
        self.since = int(since)

    def __repr__(self) -> str:
        return f'EarlyStopping(patience={self.patience}, min_delta={self.min_delta}, loader={self.loader!r})'


__all__ = ['EarlyStopping']
