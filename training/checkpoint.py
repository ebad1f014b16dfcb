"""Checkpoint files: what a full training checkpoint holds, and how a run starts from one.

A full checkpoint is a dict (``format: 'dbnet-checkpoint'``) with the model state dict under ``model``
(keys ``model.module.backbone.*``, loadable alone as a plain state dict), the optimizer and grad-scaler
states, the counters (``epoch`` in progress, ``epoch_iteration`` completed in it, ``iteration`` completed
overall), the RNG states of every rank, the seed of the data order, the best validation F-measure so far, the compiled config
and the offset mode of a ResNet backbone (``offset_compat``: how the weights were trained; docs/model.md).
Everything is stored as tensors and plain Python values, so ``torch.load(weights_only=True)`` reads it.
"""
from __future__ import annotations

import os
import copy
import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch

CHECKPOINT_FORMAT = 'dbnet-checkpoint'
CHECKPOINT_VERSION = 1


# ----------------------------------------------------------------------------------------------
# RNG states


def capture_rng_state() -> Dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states as tensors and plain values."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        'python': random.getstate(),
        'numpy': {'kind': kind, 'keys': torch.from_numpy(keys.astype(np.int64)), 'position': int(position),
                  'has_gauss': int(has_gauss), 'cached_gaussian': float(cached_gaussian)},
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    augmentation = _augmentation_rng()
    if augmentation is not None:
        state['augmentation'] = copy.deepcopy(augmentation.bit_generator.state)
    return state


def _augmentation_rng() -> Optional[np.random.Generator]:
    """The data pipeline's own augmentation stream (data.rng), used when loading in the main process."""
    try:
        from data.rng import get_rng
    except ImportError:
        return None
    return get_rng()


def restore_rng_state(state: Dict[str, Any]) -> None:
    python_state = state['python']
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = state['numpy']
    np.random.set_state((numpy_state['kind'], numpy_state['keys'].numpy().astype(np.uint32),
                         numpy_state['position'], numpy_state['has_gauss'], numpy_state['cached_gaussian']))
    torch.set_rng_state(state['torch'])
    augmentation = _augmentation_rng()
    if 'augmentation' in state and augmentation is not None:
        augmentation.bit_generator.state = state['augmentation']
    if 'cuda' in state and torch.cuda.is_available():
        cuda_states = state['cuda']
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


class PreservedRNG:
    """Context manager: code inside (validation, logging) leaves the training RNG streams untouched."""

    def __enter__(self) -> 'PreservedRNG':
        self.state = capture_rng_state()
        return self

    def __exit__(self, *exc: Any) -> None:
        restore_rng_state(self.state)


# ----------------------------------------------------------------------------------------------
# Files


def build_checkpoint(model_state: Dict[str, torch.Tensor], optimizer: Optional[torch.optim.Optimizer],
                     scaler: Any, epoch: int, epoch_iteration: int, iteration: int,
                     rng_states: List[Dict[str, Any]], best_fmeasure: Optional[float],
                     config: Optional[Dict[str, Any]], data_seed: int,
                     offset_compat: Optional[str] = None) -> Dict[str, Any]:
    """``offset_compat``: the offset mode the model ran with (``structure.model.offset_compat_of``), recorded so
    that evaluation, fine-tuning and resume run the weights the way they were trained."""
    return {
        'format': CHECKPOINT_FORMAT,
        'version': CHECKPOINT_VERSION,
        'model': model_state,
        'optimizer': optimizer.state_dict() if optimizer is not None else None,
        'scaler': scaler.state_dict() if scaler is not None else None,
        'epoch': int(epoch),
        'epoch_iteration': int(epoch_iteration),
        'iteration': int(iteration),
        'rng': rng_states,
        'best_fmeasure': None if best_fmeasure is None else float(best_fmeasure),
        'data_seed': int(data_seed),
        'config': config,
        'offset_compat': offset_compat,
    }


def is_full_checkpoint(content: Any) -> bool:
    return isinstance(content, dict) and content.get('format') == CHECKPOINT_FORMAT


def read_checkpoint_file(path: str) -> Dict[str, Any]:
    """Load a checkpoint or a state dict safely (weights_only) and check its shape."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path!r}')
    try:
        content = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one
        raise ValueError(f'{path}: not a loadable checkpoint (torch.load(weights_only=True) failed: {error})') from error
    if is_full_checkpoint(content):
        missing = [key for key in ('model', 'epoch', 'epoch_iteration', 'iteration') if key not in content]
        if missing:
            raise ValueError(f'{path}: full checkpoint lacks key(s) {missing}')
        return content
    if isinstance(content, dict) and content and all(isinstance(v, torch.Tensor) for v in content.values()):
        return content
    weights = content.get('model') if isinstance(content, dict) else None
    if isinstance(weights, dict) and weights and all(isinstance(v, torch.Tensor) for v in weights.values()):
        return content  # {'model': state dict} without this project's metadata: plain weights, as eval.py reads them
    kind = type(content).__name__
    keys = list(content)[:8] if isinstance(content, dict) else []
    raise ValueError(f'{path}: expected a full checkpoint (format {CHECKPOINT_FORMAT!r}) or a plain state dict '
                     f'of tensors, got a {kind} with keys {keys}')


def load_model_weights(model: torch.nn.Module, content: Dict[str, Any], source: Optional[str] = None
                       ) -> Optional[str]:
    """Strict key-by-key load of a full checkpoint or a plain state dict through
    ``structure.model.load_model_state`` (which also gives a ResNet backbone the offset mode of the weights).
    Returns the message saying which offset mode applies and why, when it changes the computation."""
    from structure.model import load_model_state, offset_compat_note
    return offset_compat_note(load_model_state(model, content, strict=True, source=source).offset_compat)


# ----------------------------------------------------------------------------------------------
# Where a run starts


@dataclass
class StartState:
    """Counters and states a run starts from. ``iteration`` None: derived from epoch and loader length."""
    epoch: int = 0
    epoch_iteration: int = 0
    iteration: Optional[int] = None
    full: bool = False
    rng_states: List[Dict[str, Any]] = field(default_factory=list)
    best_fmeasure: Optional[float] = None
    config: Optional[Dict[str, Any]] = None
    data_seed: Optional[int] = None
    offset_compat_note: Optional[str] = None


class Checkpoint:
    """Where training starts: from scratch (``start_epoch``/``start_iter``), or from ``resume``.

    A full checkpoint restores model, optimizer, scaler, counters and RNG states (exact continuation;
    ``start_epoch``/``start_iter`` are then ignored). A plain state dict (this code base's model part, or
    the original code base's ``model.module.backbone...`` files) only loads the weights: fine-tuning,
    counting from ``start_epoch``/``start_iter``.
    """

    def __init__(self, start_epoch: int = 0, start_iter: int = 0, resume: Optional[str] = None):
        self.start_epoch = int(start_epoch)
        self.start_iter = int(start_iter)
        if self.start_epoch < 0 or self.start_iter < 0:
            raise ValueError(f'start_epoch and start_iter must be >= 0, got {start_epoch}, {start_iter}')
        self.resume = resume

    def restore(self, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                scaler: Any = None) -> StartState:
        """Load ``resume`` (if any) into ``model`` (unwrapped), ``optimizer`` and ``scaler``."""
        if not self.resume:
            from structure.model import decide_offset_compat, offset_compat_note
            note = offset_compat_note(decide_offset_compat(model, None))
            return StartState(epoch=self.start_epoch, epoch_iteration=self.start_iter, offset_compat_note=note)
        content = read_checkpoint_file(self.resume)
        if not is_full_checkpoint(content):
            note = load_model_weights(model, content, self.resume)
            return StartState(epoch=self.start_epoch, epoch_iteration=self.start_iter, offset_compat_note=note)
        note = load_model_weights(model, content, self.resume)
        if optimizer is not None and content.get('optimizer') is not None:
            try:
                optimizer.load_state_dict(content['optimizer'])
            except (ValueError, KeyError) as error:
                raise ValueError(f'{self.resume}: optimizer state does not fit this optimizer '
                                 f'({type(optimizer).__name__}): {error}') from error
        if scaler is not None and content.get('scaler'):
            scaler.load_state_dict(content['scaler'])
        return StartState(epoch=content['epoch'], epoch_iteration=content['epoch_iteration'],
                          iteration=content['iteration'], full=True, rng_states=list(content.get('rng') or []),
                          best_fmeasure=content.get('best_fmeasure'), config=content.get('config'),
                          data_seed=content.get('data_seed'), offset_compat_note=note)

    def __repr__(self) -> str:
        return f'Checkpoint(start_epoch={self.start_epoch}, start_iter={self.start_iter}, resume={self.resume!r})'
