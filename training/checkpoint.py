"""Checkpoint files: what a full training checkpoint holds, and how a run starts from one.

A full checkpoint is a dict (``format: 'dbnet-checkpoint'``) with the model state dict under ``model``
(keys ``model.module.backbone.*``, loadable alone as a plain state dict), the optimizer and grad-scaler
states, the counters (``epoch`` in progress, ``epoch_iteration`` completed in it, ``iteration`` completed
overall), the RNG states of every rank, the seed of the data order, the best validation F-measure so far, the
compiled config and the offset mode of a ResNet backbone (``offset_compat``: how the weights were trained;
docs/model.md).
Everything is stored as tensors and plain Python values, so ``torch.load(weights_only=True)`` reads it
(``concern.checkpoint_io.read_weights_file``, the project's one reader). A checkpoint holding a non-finite
tensor is never built (``NonFiniteCheckpointError``).

A run starts (``Checkpoint.restore``) in one of two ways, and says which in ``StartState.how``: ``resume`` continues
a run from a full checkpoint (everything restored), or fine-tunes from a file that only holds weights; ``weights``
loads only the weights of any file, even of a full checkpoint.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import torch

from concern.checkpoint_io import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, is_full_checkpoint, read_weights_file
from structure.weights import decide_offset_compat, load_model_state, offset_compat_note


# ----------------------------------------------------------------------------------------------
# RNG states


def capture_rng_state() -> Dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states as tensors and plain values."""
    numpy_state = np.random.get_state(legacy=True)
    assert isinstance(numpy_state, tuple)  # the legacy form: NumPy's global RandomState is an MT19937
    kind, keys, position, has_gauss, cached_gaussian = numpy_state
    state = {
        'python': random.getstate(),
        'numpy': {'kind': kind, 'keys': torch.from_numpy(keys.astype(np.int64)), 'position': int(position),
                  'has_gauss': int(has_gauss), 'cached_gaussian': float(cached_gaussian)},
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    python_state = state['python']
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = state['numpy']
    np.random.set_state((numpy_state['kind'], numpy_state['keys'].numpy().astype(np.uint32),
                         numpy_state['position'], numpy_state['has_gauss'], numpy_state['cached_gaussian']))
    torch.set_rng_state(state['torch'])
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


class NonFiniteCheckpointError(ValueError):
    """A checkpoint would hold NaN or infinite values: it is not written (the previous files stay)."""


def non_finite_entries(groups: Iterable[Tuple[str, Any]], limit: int = 5) -> List[str]:
    """The names (``model/<key>``, ``optimizer/state/3/exp_avg``...) of up to ``limit`` floating-point tensors
    under ``groups`` (name, nested dicts / lists) that hold NaN or infinity.

    ``training.nonfinite.non_finite_indices``'s one vectorised pass (about 30 ms for a ResNet-18 DBNet with Adam
    state, 146 MB, on a 2-core CPU: a few percent of writing it, ``torch.save`` 0.4-1.5 s).
    """
    from training.nonfinite import non_finite_indices
    named = [(name, item) for prefix, value in groups for name, item in _leaves(value, prefix)
             if isinstance(item, torch.Tensor) and item.is_floating_point() and item.numel() > 0]
    return [named[i][0] for i in non_finite_indices([tensor for _, tensor in named])[:limit]]


def _leaves(value: Any, prefix: str) -> Iterable[Tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, f'{prefix}/{key}')
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _leaves(item, f'{prefix}/{index}')
    else:
        yield prefix, value


def build_checkpoint(model_state: Dict[str, torch.Tensor], optimizer: Optional[torch.optim.Optimizer],
                     scaler: Any, epoch: int, epoch_iteration: int, iteration: int,
                     rng_states: List[Dict[str, Any]], best_fmeasure: Optional[float],
                     config: Optional[Dict[str, Any]], data_seed: int,
                     offset_compat: Optional[str] = None) -> Dict[str, Any]:
    """``offset_compat``: the offset mode the model ran with (``structure.weights.offset_compat_of``), recorded so
    that evaluation, fine-tuning and resume run the weights the way they were trained.

    Raises ``NonFiniteCheckpointError`` naming the first entries when the model, optimizer or grad-scaler state
    holds NaN or infinity: such a file would poison every run resumed or fine-tuned from it."""
    optimizer_state = optimizer.state_dict() if optimizer is not None else None
    scaler_state = scaler.state_dict() if scaler is not None else None
    bad = non_finite_entries((('model', model_state), ('optimizer', optimizer_state), ('scaler', scaler_state)))
    scale = (scaler_state or {}).get('scale')
    if isinstance(scale, float) and not math.isfinite(scale):  # GradScaler keeps its scale as a Python float
        bad.append('scaler/scale')
    if bad:
        raise NonFiniteCheckpointError(
            f'checkpoint at iteration {iteration} (epoch {epoch}) not written: non-finite values in '
            f'{", ".join(bad)}; the previous checkpoints are kept (resume from latest, lower the learning rate)')
    return {
        'format': CHECKPOINT_FORMAT,
        'version': CHECKPOINT_VERSION,
        'model': model_state,
        'optimizer': optimizer_state,
        'scaler': scaler_state,
        'epoch': int(epoch),
        'epoch_iteration': int(epoch_iteration),
        'iteration': int(iteration),
        'rng': rng_states,
        'best_fmeasure': None if best_fmeasure is None else float(best_fmeasure),
        'data_seed': int(data_seed),
        'config': config,
        'offset_compat': offset_compat,
    }


def read_checkpoint_file(path: str) -> Dict[str, Any]:
    """A full checkpoint or a state dict (plain, or ``{'model': state dict}``), read by the project's one reader
    (``concern.checkpoint_io.read_weights_file``: FileNotFoundError / ValueError naming the file), its shape
    checked."""
    content = read_weights_file(path)
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
                       ) -> Tuple[Optional[str], Optional[str]]:
    """Strict key-by-key load of a full checkpoint or a plain state dict through
    ``structure.weights.load_model_state`` (which also gives a ResNet backbone the offset mode of the weights).
    Returns the line saying which offset mode applies and why (when it changes the computation), and the load
    report when keys were left out as harmless (else None)."""
    report = load_model_state(model, content, strict=True, source=source)
    return offset_compat_note(report.offset_compat), report.text


# ----------------------------------------------------------------------------------------------
# Where a run starts


@dataclass
class StartState:
    """Counters and states a run starts from. ``iteration`` None: derived from epoch and loader length.

    ``how``: one line for the run's log saying which path was taken (start, resume, weights) and why.
    ``report``: the load report when something was not loaded key for key (keys left out as harmless, ImageNet
    initialisation), else None. ``config``: the compiled config saved in the checkpoint (resume of a full
    checkpoint only; compare with ``config_differences``)."""
    epoch: int = 0
    epoch_iteration: int = 0
    iteration: Optional[int] = None
    full: bool = False
    rng_states: List[Dict[str, Any]] = field(default_factory=list)
    best_fmeasure: Optional[float] = None
    config: Optional[Dict[str, Any]] = None
    data_seed: Optional[int] = None
    offset_compat_note: Optional[str] = None
    how: str = ''
    report: Optional[str] = None


class Checkpoint:
    """Where training starts (``train.checkpoint`` in experiment files).

    - neither ``resume`` nor ``weights``: from the model's initial weights (random, or ImageNet for the backbone),
      counting from ``start_epoch``/``start_iter``;
    - ``resume``: a full checkpoint of this project restores model, optimizer, grad scaler, counters, RNG states,
      best F-measure and data seed (exact continuation; ``start_epoch``/``start_iter`` are ignored). A file
      holding only weights (this project's model part, the original code base's ``model.module.backbone...``
      files, ``{'model': state dict}``) loads them and fine-tunes, counting from ``start_epoch``/``start_iter``,
      as the original's users use ``--resume``;
    - ``weights``: only the weights of any file, even of a full checkpoint (fine-tuning from a SynthText
      pre-training run), counting from ``start_epoch``/``start_iter``.

    Whichever path is taken, ``StartState.how`` says it, and why, in one line for the run's log.
    """

    def __init__(self, start_epoch: int = 0, start_iter: int = 0, resume: Optional[str] = None,
                 weights: Optional[str] = None):
        self.start_epoch = int(start_epoch)
        self.start_iter = int(start_iter)
        if self.start_epoch < 0 or self.start_iter < 0:
            raise ValueError(f'start_epoch and start_iter must be >= 0, got {start_epoch}, {start_iter}')
        if resume and weights:
            raise ValueError(f'train.checkpoint: resume ({resume}) and weights ({weights}) both set; resume continues '
                             'a run from a full checkpoint, weights fine-tunes from the weights of a file: give one')
        self.resume = resume or None
        self.weights = weights or None

    def restore(self, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                scaler: Any = None) -> StartState:
        """Load ``resume`` or ``weights`` (if any) into ``model`` (unwrapped), ``optimizer`` and ``scaler``."""
        counting = f'counting from epoch {self.start_epoch} iteration {self.start_iter}'
        if not self.resume and not self.weights:
            note = offset_compat_note(decide_offset_compat(model, None))
            files, reports = _pretrained_reports(model)
            initial = f'ImageNet weights from {", ".join(files)} for the backbone' if files else 'random weights'
            return StartState(epoch=self.start_epoch, epoch_iteration=self.start_iter, offset_compat_note=note,
                              how=f'start: no checkpoint (train.checkpoint resume and weights unset): {initial}, '
                                  f'{counting}',
                              report='\n'.join(reports) or None)
        path = self.resume or self.weights
        assert path is not None  # one of them is set: returned above otherwise
        content = read_checkpoint_file(path)
        full = is_full_checkpoint(content)
        note, report = load_model_weights(model, content, path)
        if self.weights:
            if full:
                how = (f'weights: {path} is a full checkpoint (iteration {content["iteration"]}, epoch '
                       f'{content["epoch"]}) of which only the model weights are loaded (train.checkpoint.weights); '
                       f'optimizer, grad scaler, counters and RNG start afresh: fine-tuning, {counting}')
            else:
                how = f'weights: {path} is a plain state dict: fine-tuning from its weights, {counting}'
            return StartState(epoch=self.start_epoch, epoch_iteration=self.start_iter, offset_compat_note=note,
                              how=how, report=report)
        if not full:
            how = (f'weights: {path} is a plain state dict (no optimizer state or counters): fine-tuning from its '
                   f'weights, {counting} (to continue a run, resume a full checkpoint of this project)')
            return StartState(epoch=self.start_epoch, epoch_iteration=self.start_iter, offset_compat_note=note,
                              how=how, report=report)
        restored = ['model']
        if optimizer is not None and content.get('optimizer') is not None:
            try:
                optimizer.load_state_dict(content['optimizer'])
            except (ValueError, KeyError) as error:
                raise ValueError(f'{path}: optimizer state does not fit this optimizer '
                                 f'({type(optimizer).__name__}): {error}') from error
            restored.append('optimizer')
        if scaler is not None and content.get('scaler'):
            scaler.load_state_dict(content['scaler'])
            restored.append('grad scaler')
        restored.append('counters and RNG')
        how = (f'resume: {path} is a full checkpoint (iteration {content["iteration"]}, epoch {content["epoch"]}): '
               f'{", ".join(restored)} restored')
        if self.start_epoch or self.start_iter:
            how += f' (start_epoch {self.start_epoch} / start_iter {self.start_iter} ignored)'
        return StartState(epoch=content['epoch'], epoch_iteration=content['epoch_iteration'],
                          iteration=content['iteration'], full=True, rng_states=list(content.get('rng') or []),
                          best_fmeasure=content.get('best_fmeasure'), config=content.get('config'),
                          data_seed=content.get('data_seed'), offset_compat_note=note, how=how, report=report)

    def __repr__(self) -> str:
        return (f'Checkpoint(start_epoch={self.start_epoch}, start_iter={self.start_iter}, resume={self.resume!r}, '
                f'weights={self.weights!r})')


def _pretrained_reports(model: torch.nn.Module) -> Tuple[List[str], List[str]]:
    """The ImageNet files the model's backbone(s) were initialised from and their load reports
    (``backbones.pretrained.load_pretrained`` keeps them on the module)."""
    files: List[str] = []
    reports: List[str] = []
    for module in model.modules():
        file = getattr(module, 'pretrained_file', None)
        if file:
            files.append(file)
            report = getattr(module, 'pretrained_report', None)
            if report:
                reports.append(report)
    return files, reports


# Entries of ``train.checkpoint`` that say where a run starts: they differ between a run and its resume.
RESUME_KEYS = ('resume', 'weights', 'start_epoch', 'start_iter')


def config_differences(saved: Optional[Dict[str, Any]], current: Optional[Dict[str, Any]]) -> List[str]:
    """The dotted keys whose values differ between the config saved in a checkpoint and the current one,
    ignoring the entries that legitimately change on a resume (``train.checkpoint.{resume, weights, start_epoch,
    start_iter}``). A key present on one side only counts as a difference. Empty when either is None."""
    if saved is None or current is None:
        return []
    differences: List[str] = []
    _compare(saved, current, (), differences)
    return differences


def _compare(saved: Any, current: Any, path: Tuple[str, ...], out: List[str]) -> None:
    if len(path) >= 3 and path[-3:-1] == ('train', 'checkpoint') and path[-1] in RESUME_KEYS:
        return
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        for key in list(saved) + [key for key in current if key not in saved]:
            if key not in saved or key not in current:
                if not (len(path) >= 2 and path[-2:] == ('train', 'checkpoint') and key in RESUME_KEYS):
                    out.append('.'.join(path + (str(key),)))
                continue
            _compare(saved[key], current[key], path + (str(key),), out)
    elif (isinstance(saved, (list, tuple)) and isinstance(current, (list, tuple))
          and len(saved) == len(current)):
        for index, (left, right) in enumerate(zip(saved, current)):
            _compare(left, right, path + (str(index),), out)
    elif type(saved) is not type(current) or saved != current:
        out.append('.'.join(path) or '<root>')
