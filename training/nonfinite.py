"""Keeping NaN and inf out of the weights: the checks around one training step.

The property: a step either commits finite parameters, buffers (BatchNorm running statistics) and optimizer
state, or leaves all of them exactly as they were before its batch. Four checks, in the order a step meets them:

1. the batch: every floating-point input (image, label maps) finite, else the step is skipped and the files named;
2. after the forward: the loss and every buffer finite (the forward has already updated BatchNorm's running
   statistics: a NaN batch, or activations overflowing after a huge learning rate, leaves NaN / inf there);
3. after the backward: every gradient finite (with a GradScaler, fp16 AMP, the scaler's own skip does this);
4. after the optimizer step: every parameter and optimizer state finite (a finite gradient times a huge learning
   rate can still overflow).

A failed check restores the snapshot taken before the forward (buffers; parameters, optimizer state and the
GradScaler's scale and growth tracker too when check 4 fails) and the step counts as skipped.

Finite is not enough: a huge learning rate can leave weights that are huge but finite, whose next forward is NaN.
So a step is committed only if the model it leaves behind still gives a finite forward (the commit rule): the next
step's forward verifies it, and when that forward is not finite the guard goes back to the state before the
previous step (``undo_previous_step``) and runs the batch again; finite there, the previous step is rolled back,
else the batch is to blame and the previous step stays (``redo_previous_step``). A save verifies the state it
writes itself (``training.trainer.Trainer.save``: the probability map of the last committed step's batch; a
non-finite one undoes the step just taken, ``undo_step``), so no checkpoint is written whose forward is
non-finite. A step written to a checkpoint is final (``seal``): it is never rolled back afterwards, so resuming
from that checkpoint gives the same weights as the run that went on.

Under DistributedDataParallel every rank takes the same decision (the flags are OR-ed over the ranks) and restores
its own snapshot. Cost: one copy of the buffers, the parameters and the optimizer state per step (into two sets of
buffers allocated once, used in turn), and one vectorised norm per check over the same tensors; docs/training.md
has the measured figure.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import torch
from torch import nn


def non_finite_indices(tensors: Sequence[torch.Tensor]) -> List[int]:
    """Positions of the floating-point tensors holding NaN or infinity, in one vectorised pass: the 2-norm of
    every tensor (``torch._foreach_norm``, one call per device and dtype; NaN and infinity propagate into it), one
    ``isfinite`` over the norms, then an element-wise check of only the tensors flagged (a norm also overflows for
    large finite values). About 30 ms for a ResNet-18 DBNet with its Adam state (146 MB) on a 2-core CPU, where
    the infinity norm took 0.5 s and ``isfinite`` on every tensor 0.1-1 s."""
    groups: Dict[Any, List[int]] = {}
    for index, tensor in enumerate(tensors):
        if tensor.is_floating_point() and tensor.numel():
            groups.setdefault((tensor.device, tensor.dtype), []).append(index)
    found: List[int] = []
    with torch.no_grad():
        for indices in groups.values():
            finite = torch.isfinite(torch.stack(torch._foreach_norm([tensors[i].detach() for i in indices])))
            if not bool(finite.all()):
                flagged = [indices[j] for j in (~finite).nonzero().flatten().tolist()]
                found.extend(i for i in flagged if not bool(torch.isfinite(tensors[i]).all()))
    return sorted(found)


def non_finite_inputs(batch: Any) -> List[str]:
    """Per sample of ``batch`` (a dict of (B, ...) tensors with an optional ``filename`` list) holding a
    non-finite floating-point value: its file name (or ``sample N``) and the key."""
    if not isinstance(batch, Mapping):
        return []
    bad: Dict[int, List[str]] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() >= 1 and value.numel():
            finite = torch.isfinite(value.detach()).reshape(value.shape[0], -1).all(dim=1)
            for index in torch.nonzero(~finite).flatten().tolist():
                bad.setdefault(index, []).append(key)
    files = batch.get('filename')
    return [f"{files[index] if files is not None and index < len(files) else f'sample {index}'} "
            f"({', '.join(keys)})" for index, keys in sorted(bad.items())]


class _Snapshot:
    """One copy of the buffers, the parameters and the optimizer state (storage allocated once).
    ``committed``: whether the step taken from this state was committed (kept)."""

    def __init__(self) -> None:
        self.buffers: Optional[List[torch.Tensor]] = None
        self.parameters: Optional[List[torch.Tensor]] = None
        self.states: Dict[int, Dict[str, Any]] = {}
        self.scaler: Dict[str, Any] = {}  # the GradScaler's state_dict (fp16 AMP; empty when it is disabled)
        self.committed = False


class NonFiniteGuard:
    """Snapshot / check / restore around one step of ``model`` (unwrapped or wrapped) and ``optimizer``.

    Two snapshots alternate: the state before the current step and the state before the previous step, so that a
    committed step can still be undone when the model it left behind turns out to give a non-finite forward (the
    commit rule, docs/training.md): ``undo_step`` (the step just taken, before a save) and ``undo_previous_step`` /
    ``redo_previous_step`` (the step before the current one, when the current forward fails). Each step copies one
    snapshot, as with a single one; the memory is twice a copy of the parameters, buffers and optimizer state.

    A checkpoint holds the state it wrote: after a save ``seal`` makes every step up to it final (neither
    snapshot can be undone any more), so a resume from that checkpoint takes the same decisions as the run that
    went on, and a checkpoint never holds weights the run later rejected.

    ``any_flag``: OR of a flag over the ranks (``DistributedContext.any_flags``); the identity alone. ``scaler``:
    the GradScaler (fp16 AMP), whose scale and growth tracker are part of the state snapshotted and restored.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 any_flag: Optional[Any] = None, scaler: Optional[Any] = None):
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.any_flag = any_flag or (lambda flag: bool(flag))
        self._buffers = [buffer for buffer in model.buffers()]
        self._parameters = [parameter for parameter in model.parameters()]
        self._snapshots = (_Snapshot(), _Snapshot())
        self._current = 1  # the first snapshot goes to slot 0
        self._taken = 0

    # -- snapshot ---------------------------------------------------------------------------
    @property
    def _now(self) -> _Snapshot:
        return self._snapshots[self._current]

    @property
    def _other(self) -> _Snapshot:
        return self._snapshots[1 - self._current]

    def snapshot(self) -> None:
        """Copy the buffers, the parameters and the optimizer state: the state before the step about to be taken.
        The previous snapshot (the state before the previous step) is kept."""
        self._current = 1 - self._current
        self._taken += 1
        target = self._now
        target.committed = False
        target.scaler = self._scaler_state()
        with torch.no_grad():
            if target.buffers is None or target.parameters is None:  # the first snapshot of this slot sets both
                target.buffers = [buffer.detach().clone() for buffer in self._buffers]
                target.parameters = [parameter.detach().clone() for parameter in self._parameters]
            else:
                _copy_all(target.buffers, self._buffers)
                _copy_all(target.parameters, self._parameters)
            for parameter in self._parameters:
                state = self.optimizer.state.get(parameter)
                if not state:
                    target.states.pop(id(parameter), None)
                    continue
                saved = target.states.get(id(parameter))
                if saved is None or saved.keys() != state.keys() or any(
                        isinstance(value, torch.Tensor) and saved[key].shape != value.shape
                        for key, value in state.items()):
                    target.states[id(parameter)] = {
                        key: value.detach().clone() if isinstance(value, torch.Tensor) else value
                        for key, value in state.items()}
                    continue
                for key, value in state.items():
                    if isinstance(value, torch.Tensor):
                        saved[key].copy_(value)
                    else:
                        saved[key] = value

    def _scaler_state(self) -> Dict[str, Any]:
        if self.scaler is None or not self.scaler.is_enabled():
            return {}
        return dict(self.scaler.state_dict())

    def commit(self) -> None:
        """The step taken since the last snapshot is kept (it may still be undone: ``undo_step``)."""
        self._now.committed = True

    def restore_buffers(self) -> None:
        """Buffers as at the last snapshot."""
        if self._now.buffers is None:
            raise RuntimeError('NonFiniteGuard.restore_buffers: no snapshot taken yet')
        with torch.no_grad():
            _copy_all(self._buffers, self._now.buffers)

    def restore_all(self) -> None:
        """Buffers, parameters and optimizer state as at the last snapshot."""
        if self._now.parameters is None:
            raise RuntimeError('NonFiniteGuard.restore_all: no snapshot taken yet')
        self._restore(self._now)

    def _restore(self, snapshot: _Snapshot) -> None:
        assert snapshot.buffers is not None and snapshot.parameters is not None
        if snapshot.scaler and self.scaler is not None:
            self.scaler.load_state_dict(snapshot.scaler)
        with torch.no_grad():
            _copy_all(self._buffers, snapshot.buffers)
            _copy_all(self._parameters, snapshot.parameters)
            for parameter in self._parameters:
                saved = snapshot.states.get(id(parameter))
                if saved is None:
                    self.optimizer.state.pop(parameter, None)
                    continue
                state = self.optimizer.state[parameter]
                for key, value in saved.items():
                    if isinstance(value, torch.Tensor) and isinstance(state.get(key), torch.Tensor) \
                            and state[key].shape == value.shape:
                        state[key].copy_(value)
                    else:
                        state[key] = value.clone() if isinstance(value, torch.Tensor) else value

    # -- undoing a committed step -----------------------------------------------------------------
    def seal(self) -> None:
        """A checkpoint was written from the current state (call on every rank after a save): no step up to here
        can be undone any more."""
        for snapshot in self._snapshots:
            snapshot.committed = False

    def can_undo_step(self) -> bool:
        """Whether the step taken since the last snapshot was committed (and can be undone)."""
        return self._now.committed

    def undo_step(self) -> None:
        """Back to the state before the step taken since the last snapshot (which was committed)."""
        if not self._now.committed:
            raise RuntimeError('NonFiniteGuard.undo_step: the last step was not committed')
        self._restore(self._now)
        self._now.committed = False

    def can_undo_previous_step(self) -> bool:
        """Whether the step before the current one (the one the last snapshot followed) was committed."""
        return self._taken >= 2 and self._other.committed

    def undo_previous_step(self) -> None:
        """Back to the state before the previous step; that state becomes the current snapshot (call before the
        current step changed the parameters: its forward failed). ``redo_previous_step`` goes back."""
        if not self.can_undo_previous_step():
            raise RuntimeError('NonFiniteGuard.undo_previous_step: the previous step was not committed')
        self._current = 1 - self._current
        self._restore(self._now)
        self._now.committed = False

    def redo_previous_step(self) -> None:
        """Undo ``undo_previous_step``: the state the previous step committed, as the current snapshot."""
        self._now.committed = True
        self._current = 1 - self._current
        self._restore(self._now)

    # -- checks (each OR-ed over the ranks) -----------------------------------------------------
    def forward_ok(self, loss: Optional[torch.Tensor]) -> bool:
        """Loss and buffers finite on every rank (``loss`` None: the forward failed on non-finite values here)."""
        local = loss is not None and bool(torch.isfinite(loss.detach()).all()) and all_finite(self._buffers)
        return not self.any_flag(not local)

    def gradients_ok(self) -> bool:
        grads = [parameter.grad for parameter in self._parameters if parameter.grad is not None]
        return not self.any_flag(not all_finite(grads))

    def state_ok(self) -> bool:
        """Parameters and optimizer state finite after the optimizer step."""
        tensors: List[torch.Tensor] = list(self._parameters)
        for parameter in self._parameters:
            tensors.extend(value for value in self.optimizer.state.get(parameter, {}).values()
                           if isinstance(value, torch.Tensor))
        return not self.any_flag(not all_finite(tensors))


def _copy_all(targets: Iterable[torch.Tensor], sources: Iterable[torch.Tensor]) -> None:
    targets, sources = list(targets), list(sources)
    if targets:
        torch._foreach_copy_(targets, sources)


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every floating-point tensor given is finite."""
    return not non_finite_indices(list(tensors))
