"""Keeping NaN and inf out of the weights: the checks around one training step.

The property: a step either commits finite parameters, buffers (BatchNorm running statistics) and optimizer
state, or leaves all of them exactly as they were before its batch. Four checks, in the order a step meets them:

1. the batch: every floating-point input (image, label maps) finite, else the step is skipped and the files named;
2. after the forward: the loss and every buffer finite (the forward has already updated BatchNorm's running
   statistics: a NaN batch, or activations overflowing after a huge learning rate, leaves NaN / inf there);
3. after the backward: every gradient finite (with a GradScaler, fp16 AMP, the scaler's own skip does this);
4. after the optimizer step: every parameter and optimizer state finite (a finite gradient times a huge learning
   rate can still overflow).

A failed check restores the snapshot taken before the forward (buffers; parameters and optimizer state too when
check 4 fails) and the step counts as skipped. Under DistributedDataParallel every rank takes the same decision
(the flags are OR-ed over the ranks) and restores its own snapshot. Cost: one copy of the buffers per step, one of
the parameters and optimizer state (into buffers allocated once), and one max-abs reduction per check over the
same tensors; docs/training.md has the measured figure.
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


class NonFiniteGuard:
    """Snapshot / check / restore around one step of ``model`` (unwrapped or wrapped) and ``optimizer``.

    ``any_flag``: OR of a flag over the ranks (``DistributedContext.any_flags``); the identity alone.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 any_flag: Optional[Any] = None):
        self.model = model
        self.optimizer = optimizer
        self.any_flag = any_flag or (lambda flag: bool(flag))
        self._buffers = [buffer for buffer in model.buffers()]
        self._parameters = [parameter for parameter in model.parameters()]
        self._buffer_copies: Optional[List[torch.Tensor]] = None
        self._parameter_copies: Optional[List[torch.Tensor]] = None
        self._state_copies: Dict[int, Dict[str, Any]] = {}

    # -- snapshot ---------------------------------------------------------------------------
    def snapshot(self) -> None:
        """Copy the buffers, the parameters and the optimizer state (into storage allocated once)."""
        with torch.no_grad():
            if self._buffer_copies is None or self._parameter_copies is None:  # the first snapshot sets both
                self._buffer_copies = [buffer.detach().clone() for buffer in self._buffers]
                self._parameter_copies = [parameter.detach().clone() for parameter in self._parameters]
            else:
                _copy_all(self._buffer_copies, self._buffers)
                _copy_all(self._parameter_copies, self._parameters)
            for parameter in self._parameters:
                state = self.optimizer.state.get(parameter)
                if not state:
                    self._state_copies.pop(id(parameter), None)
                    continue
                saved = self._state_copies.get(id(parameter))
                if saved is None or saved.keys() != state.keys() or any(
                        isinstance(value, torch.Tensor) and saved[key].shape != value.shape
                        for key, value in state.items()):
                    self._state_copies[id(parameter)] = {
                        key: value.detach().clone() if isinstance(value, torch.Tensor) else value
                        for key, value in state.items()}
                    continue
                for key, value in state.items():
                    if isinstance(value, torch.Tensor):
                        saved[key].copy_(value)
                    else:
                        saved[key] = value

    def restore_buffers(self) -> None:
        if self._buffer_copies is None:
            raise RuntimeError('NonFiniteGuard.restore_buffers: no snapshot taken yet')
        with torch.no_grad():
            _copy_all(self._buffers, self._buffer_copies)

    def restore_all(self) -> None:
        """Buffers, parameters and optimizer state as at the last snapshot."""
        if self._parameter_copies is None:
            raise RuntimeError('NonFiniteGuard.restore_all: no snapshot taken yet')
        with torch.no_grad():
            self.restore_buffers()
            _copy_all(self._parameters, self._parameter_copies)
            for parameter in self._parameters:
                saved = self._state_copies.get(id(parameter))
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

    # -- checks (each OR-ed over the ranks) -----------------------------------------------------
    def forward_ok(self, loss: torch.Tensor) -> bool:
        """Loss and buffers finite on every rank."""
        local = bool(torch.isfinite(loss.detach()).all()) and all_finite(self._buffers)
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
