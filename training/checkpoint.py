"""Checkpoint files: what a full training checkpoint holds, and how a run starts from one.

A full checkpoint is a dict (``format: 'dbnet-checkpoint'``) with the model state dict under ``model``
(keys ``model.module.backbone.*``, loadable alone as a plain state dict), the optimizer and grad-scaler
states, the counters (``epoch`` in progress, ``epoch_iteration`` completed in it, ``iteration`` completed
overall), the RNG states of every rank, the seed of the data order, the best validation F-measure so far, the
compiled config and the offset mode of a ResNet backbone (``offset_compat``: how the weights were trained;
docs/model.md), and ``data_position``: where the run was in its epoch's order (``epoch_samples``, the positions
of the order consumed over all ranks; ``epoch_end``, where the pass would have ended; the ``global_batch``,
``world_size`` and ``dataset_length`` that read them), so that a resume with another batch or world size
continues at the next sample (``plan_resume``).
Everything is stored as tensors and plain Python values, so ``torch.load(weights_only=True)`` reads it
(``concern.checkpoint_io.read_weights_file``, the project's one reader). A checkpoint holding a non-finite
tensor is never built (``NonFiniteCheckpointError``).

A run starts (``Checkpoint.restore``) in one of two ways, and says which in ``StartState.how``: ``resume`` continues
a run from a full checkpoint (everything restored), or fine-tunes from a file that only holds weights; ``weights``
loads only the weights of any file, even of a full checkpoint: every tensor must fit (``weights_strict``), or only
those whose names and shapes fit are loaded and the rest named in the load report (fine-tuning another head).
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import torch

from concern.checkpoint_io import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, integrity_note, is_full_checkpoint, \
    read_weights_file, with_checksum
from data.sampler import epoch_span
from structure.weights import LoadReport, StateDictMismatch, decide_offset_compat, load_model_state, \
    offset_compat_note


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
                     offset_compat: Optional[str] = None,
                     data_position: Optional[Mapping[str, int]] = None,
                     early_stopping: Optional[Mapping[str, Any]] = None,
                     validated_iteration: Optional[int] = None) -> Dict[str, Any]:
    """``offset_compat``: the offset mode the model ran with (``structure.weights.offset_compat_of``), recorded so
    that evaluation, fine-tuning and resume run the weights the way they were trained. ``data_position``: where
    the run is in its epoch's order (``DATA_POSITION_KEYS``; None: not recorded). ``early_stopping``: the state of
    ``train.early_stopping`` (``EarlyStopping.state_dict``; None without one). ``validated_iteration``: the
    iteration of the last validation whose result ``best_fmeasure`` and ``early_stopping`` include (None: none
    yet); a validation runs after the checkpoint of its iteration, so a resume from that checkpoint runs it again.

    Raises ``NonFiniteCheckpointError`` naming the first entries when the model, optimizer or grad-scaler state
    holds NaN or infinity: such a file would poison every run resumed or fine-tuned from it. The content carries
    its integrity record (``concern.checkpoint_io.with_checksum``: SHA-256 of every tensor), which every read
    verifies."""
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
    return with_checksum({
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
        'data_position': None if data_position is None else {key: int(data_position[key])
                                                             for key in DATA_POSITION_KEYS},
        'early_stopping': None if early_stopping is None else dict(early_stopping),
        'validated_iteration': None if validated_iteration is None else int(validated_iteration),
    })


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


def load_model_weights(model: torch.nn.Module, content: Dict[str, Any], source: Optional[str] = None,
                       strict: bool = True) -> Tuple[Optional[str], LoadReport]:
    """Key-by-key load of a full checkpoint or a plain state dict through ``structure.weights.load_model_state``
    (which also gives a ResNet backbone the offset mode of the weights): ``strict``, every tensor must fit
    (``StateDictMismatch`` with the load report otherwise); else the tensors whose names and shapes fit are loaded.
    Returns the line saying which offset mode applies and why (when it changes the computation), and the load
    report (its ``text`` None when every key of the file and of the model loaded)."""
    report = load_model_state(model, content, strict=strict, source=source)
    return offset_compat_note(report.offset_compat), report


# ----------------------------------------------------------------------------------------------
# Where a run starts


@dataclass
class StartState:
    """Counters and states a run starts from. ``iteration`` None: derived from epoch and loader length.

    ``how``: one line for the run's log saying which path was taken (start, resume, weights) and why.
    ``report``: the load report when something was not loaded key for key (keys left out as harmless, ImageNet
    initialisation), else None. ``config``: the compiled config saved in the checkpoint (resume of a full
    checkpoint only; compare with ``config_differences``). ``data_position``: where the checkpoint's run was in its
    epoch's order (``DATA_POSITION_KEYS``; None for a checkpoint written before it was recorded, and for a start
    that is not a resume)."""
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
    data_position: Optional[Dict[str, int]] = None
    integrity: Optional[str] = None  # a note when the file carries no checksum (its integrity is not verified)
    early_stopping: Optional[Dict[str, Any]] = None  # EarlyStopping.state_dict of a full checkpoint
    validated_iteration: Optional[int] = None  # the last validation the checkpoint's state includes


# ``resume: auto``: this run's own newest checkpoint, or a fresh start (``resolve_auto_resume``)
AUTO_RESUME = 'auto'


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
      pre-training run), counting from ``start_epoch``/``start_iter``. ``weights_strict`` (default): every tensor
      of the model and of the file must fit by name and shape, else an error naming the misfits; false: the
      tensors that fit are loaded, the others keep their initialisation, and the load report (``StartState.report``)
      names them (fine-tuning DBNet++ from a DBNet checkpoint: another head).

    ``resume: auto`` (``--resume auto``): the newest checkpoint of this run, ``<workspace>/<model folder>/latest``,
    when there is one, else a fresh start (``resolve_auto_resume``, which the trainer calls once the workspace is
    known; never a checkpoint of another run name). With ``weights`` too, the first run of a fine-tuning starts from
    those weights and every later one continues its own newest checkpoint: one command for both, as detectron2's
    ``resume_or_load``.

    ``accept_skipped_samples``: a resume with another global batch or world size that cannot train every sample
    of the interrupted epoch not yet trained (``plan_resume``) is refused unless this is set.

    Whichever path is taken, ``StartState.how`` says it, and why, in one line for the run's log.
    """

    def __init__(self, start_epoch: int = 0, start_iter: int = 0, resume: Optional[str] = None,
                 weights: Optional[str] = None, weights_strict: bool = True, accept_skipped_samples: bool = False):
        self.start_epoch = int(start_epoch)
        self.start_iter = int(start_iter)
        if self.start_epoch < 0 or self.start_iter < 0:
            raise ValueError(f'start_epoch and start_iter must be >= 0, got {start_epoch}, {start_iter}')
        if resume and weights and resume != AUTO_RESUME:
            raise ValueError(f'train.checkpoint: resume ({resume}) and weights ({weights}) both set; resume continues '
                             'a run from a full checkpoint, weights fine-tunes from the weights of a file: give one '
                             '(or resume: auto, which continues this run where it has a checkpoint and else starts '
                             'from weights)')
        if not weights_strict and not weights:
            raise ValueError('train.checkpoint.weights_strict: false (--weights_non_strict) loads the tensors that '
                             'fit from train.checkpoint.weights (--weights FILE), which is not set'
                             + (f'; resume ({resume}) restores a run of this model and loads every tensor'
                                if resume else ''))
        self.resume = resume or None
        self.weights = weights or None
        self.weights_strict = bool(weights_strict)
        self.accept_skipped_samples = bool(accept_skipped_samples)

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
        strict = self.weights_strict or not self.weights
        try:
            note, loaded = load_model_weights(model, content, path, strict=strict)
        except StateDictMismatch as error:
            hint = ('\nto fine-tune from the tensors that fit (another head, say), pass --weights_non_strict '
                    '(train.checkpoint.weights_strict: false)' if self.weights else '')
            raise StateDictMismatch(f'{path}: {error}{hint}') from error
        report = loaded.text
        if self.weights:
            which = 'the model weights'
            if not strict:
                total = len(model.state_dict())
                fitted = total - len(loaded.missing) - len(loaded.mismatched)
                if fitted == 0:
                    raise StateDictMismatch(f'{path}: no tensor fits {type(model).__name__} by name and shape, even '
                                            f'with train.checkpoint.weights_strict: false\n{report}')
                which = (f'the {fitted} of the model\'s {total} tensors that fit by name and shape '
                         '(train.checkpoint.weights_strict: false; the load report names the others, which keep '
                         'their initialisation)')
            if full:
                how = (f'weights: {path} is a full checkpoint (iteration {content["iteration"]}, epoch '
                       f'{content["epoch"]}) of which only {which} are loaded (train.checkpoint.weights); '
                       f'optimizer, grad scaler, counters and RNG start afresh: fine-tuning, {counting}')
            elif strict:
                how = f'weights: {path} is a plain state dict: fine-tuning from its weights, {counting}'
            else:
                how = f'weights: {path} is a plain state dict: fine-tuning from {which}, {counting}'
            return StartState(epoch=self.start_epoch, epoch_iteration=self.start_iter, offset_compat_note=note,
                              how=how, report=report, integrity=integrity_note(content, path))
        if not full:
            how = (f'weights: {path} is a plain state dict (no optimizer state or counters): fine-tuning from its '
                   f'weights, {counting} (to continue a run, resume a full checkpoint of this project)')
            return StartState(epoch=self.start_epoch, epoch_iteration=self.start_iter, offset_compat_note=note,
                              how=how, report=report, integrity=integrity_note(content, path))
        restored = ['model']
        if optimizer is not None and content.get('optimizer') is not None:
            try:
                kept = load_optimizer_state(optimizer, content['optimizer'])
            except (ValueError, KeyError) as error:
                raise ValueError(f'{path}: optimizer state does not fit this optimizer '
                                 f'({type(optimizer).__name__}): {error}') from error
            restored.append('optimizer' + (f" (with this experiment's {', '.join(kept)})" if kept else ''))
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
                          data_seed=content.get('data_seed'), offset_compat_note=note, how=how, report=report,
                          data_position=_data_position(content.get('data_position'), path),
                          integrity=integrity_note(content, path), early_stopping=content.get('early_stopping'),
                          validated_iteration=content.get('validated_iteration'))

    def __repr__(self) -> str:
        return (f'Checkpoint(start_epoch={self.start_epoch}, start_iter={self.start_iter}, resume={self.resume!r}, '
                f'weights={self.weights!r}, weights_strict={self.weights_strict}, '
                f'accept_skipped_samples={self.accept_skipped_samples})')



# Keys of an optimizer's parameter group that are not settings: the parameters themselves, and the learning rate, which
# the schedule sets before every step (OptimizerScheduler.apply)
_GROUP_KEYS_NOT_SETTINGS = ('params', 'param_names', 'lr')


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> List[str]:
    """Load ``state`` (an ``Optimizer.state_dict()`` from a checkpoint) into ``optimizer``, built from this run's
    experiment: each parameter's state (moments, momentum buffers, step counts) comes from the checkpoint, the
    settings of each parameter group (``optimizer_args``: weight decay, momentum, betas, eps, and the implementation:
    ``fused``, ``foreach``, ``capturable``) stay the experiment's. ``torch.optim.Optimizer.load_state_dict`` takes
    the groups' settings from the file too, so a resumed run would keep, in silence, the weight decay of the run it
    continues, or the single-tensor Adam of a checkpoint written before its experiment said ``fused: true`` (and
    then fail at its first fp16 AMP step, the optimizer having been built as fused). A step count is moved where
    the implementation keeps it (as torch's constructor places it): float32 on the parameter's device for a fused or
    capturable group, else on the CPU.

    Returns ``'key saved -> now'`` for each setting that differed from the checkpoint's (a resume reports them).
    Raises what ``load_state_dict`` raises for a state of another shape (``ValueError``, ``KeyError``)."""
    configured = [{key: value for key, value in group.items() if key not in _GROUP_KEYS_NOT_SETTINGS}
                  for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    kept: List[str] = []
    for group, settings in zip(optimizer.param_groups, configured):
        for key, value in settings.items():
            saved = group.get(key)
            if not isinstance(saved, torch.Tensor) and not isinstance(value, torch.Tensor) and saved != value:
                line = f'{key} {saved!r} -> {value!r}'
                if line not in kept:
                    kept.append(line)
        group.update(settings)
        on_device = bool(group.get('fused') or group.get('capturable'))
        for parameter in group['params']:
            parameter_state = optimizer.state.get(parameter)
            if group.get('amsgrad') and parameter_state and 'max_exp_avg_sq' not in parameter_state:
                # torch's Adam would fail at the first step with a bare KeyError
                raise ValueError('amsgrad: true in this experiment, but the checkpoint was written without it (no '
                                 'max_exp_avg_sq in its state); resume with amsgrad: false, or start from its '
                                 'weights (--weights)')
            if parameter_state and isinstance(parameter_state.get('step'), torch.Tensor):
                step = parameter_state['step']
                parameter_state['step'] = (step.to(dtype=torch.float32, device=parameter.device) if on_device
                                           else step.to('cpu'))
    return kept


def resolve_auto_resume(checkpoint: Checkpoint, model_directory: str) -> Optional[str]:
    """``resume: auto`` made concrete: ``model_directory/latest`` (the newest checkpoint of this run: periodic,
    signal or final) when it exists, else no resume (a fresh start). Returns the line for the run's log saying
    which (None when ``resume`` is not ``auto``)."""
    if checkpoint.resume != AUTO_RESUME:
        return None
    latest = os.path.join(model_directory, 'latest')
    if os.path.isfile(latest):
        checkpoint.resume = latest
        ignored = f' (weights {checkpoint.weights} are for the first run only)' if checkpoint.weights else ''
        checkpoint.weights = None
        if not checkpoint.weights_strict:
            checkpoint.weights_strict = True  # the run's own checkpoint fits its model: every tensor loads
        return f'resume auto: continuing from {latest}, the newest checkpoint of this run{ignored}'
    checkpoint.resume = None
    start = f'starting from the weights of {checkpoint.weights}' if checkpoint.weights else 'starting afresh'
    return f'resume auto: no checkpoint of this run yet ({latest} does not exist): {start}'


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
RESUME_KEYS = ('resume', 'weights', 'start_epoch', 'start_iter', 'weights_strict', 'accept_skipped_samples')


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


# ----------------------------------------------------------------------------------------------
# Where a resumed run continues in its epoch

# ``data_position`` of a checkpoint: ``epoch_samples``, the positions of the epoch's order consumed (all ranks
# together: steps times the global batch); ``epoch_end``, where the pass that consumed them would have ended
# (``data.sampler.epoch_span``); the ``global_batch``, ``world_size`` and ``dataset_length`` it ran with.
DATA_POSITION_KEYS = ('epoch_samples', 'epoch_end', 'global_batch', 'world_size', 'dataset_length')


def _data_position(value: Any, path: str) -> Optional[Dict[str, int]]:
    if value is None:
        return None
    if not isinstance(value, Mapping) or any(not isinstance(value.get(key), int) for key in DATA_POSITION_KEYS):
        raise ValueError(f'{path}: entry data_position is {value!r}, expected integers {list(DATA_POSITION_KEYS)}')
    return {key: int(value[key]) for key in DATA_POSITION_KEYS}


class ResumeWouldSkipError(ValueError):
    """A resume would leave samples of the interrupted epoch untrained, or cannot tell which: refused unless
    ``train.checkpoint.accept_skipped_samples`` (``--accept_skipped_samples``) is set."""


@dataclass
class ResumePlan:
    """Where a resumed run continues: epoch ``epoch`` from position ``epoch_samples`` of its order (the next
    epoch from its beginning when the interrupted one was complete), and the line for the run's log."""
    epoch: int
    epoch_samples: int
    line: str


ACCEPT = '--accept_skipped_samples (train.checkpoint.accept_skipped_samples: true)'


def recorded_global_batch(config: Optional[Mapping[str, Any]]) -> Optional[int]:
    """``train.data_loader.batch_size`` (the global batch) of a compiled config saved in a checkpoint
    (``{define: tree}``), None when it names none."""
    for tree in (config or {}).values():
        value: Any = tree
        for key in ('train', 'data_loader', 'batch_size'):
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def plan_resume(start: StartState, length: int, global_batch: int, world_size: int, drop_last: bool = True,
                pad: bool = True, accept: bool = False, source: str = 'the checkpoint',
                order: Optional[List[int]] = None) -> ResumePlan:
    """Where a run resumed from the full checkpoint ``start`` continues, now with ``global_batch`` over
    ``world_size`` ranks on a training set of ``length`` samples (``drop_last``, ``pad``: the loader's).

    The epoch's order depends on (seed, epoch, length) only, so the run continues at the position of the order
    after the ``epoch_samples`` the checkpoint's run consumed, whatever batch and world size consumed them: with
    the same ones, the batches a straight run would have drawn; with others, every sample of the epoch not yet
    trained once (``data.sampler.epoch_span``). ``iteration`` keeps counting steps (of whichever size) and
    ``epoch_iteration`` the steps of the epoch; the learning rate follows them as in any run.

    Refused with ``ResumeWouldSkipError`` naming what would be skipped, unless ``accept``:
    - the new global batch leaves an incomplete last step before the end the interrupted pass would have reached,
      which ``drop_last`` drops (``order``, the epoch's order, lets the message name those samples);
    - the training set's length changed in the middle of an epoch (its order is another permutation);
    - a checkpoint written before ``data_position`` was recorded, in the middle of an epoch, whose config names no
      global batch (``train.data_loader.batch_size``): which samples its steps read cannot be told (accepted: as
      many steps of the new global batch are taken as done).
    """
    epoch, done = start.epoch, start.epoch_iteration
    now = f'global batch {global_batch}, world size {world_size}'
    position = start.data_position
    note = ''
    if position is None:  # written before checkpoints recorded their place in the epoch
        saved_batch, saved_world = recorded_global_batch(start.config), max(len(start.rng_states), 1)
        if saved_batch is None and done:
            if not accept:
                raise ResumeWouldSkipError(
                    f'{source}: epoch {epoch}: {done} step(s) done, of a global batch the checkpoint does not record '
                    f'(it predates the sample count, and its config names no train.data_loader.batch_size): which of '
                    f'the {length} samples of the epoch are not yet trained cannot be told; resume with the global '
                    f'batch it was trained with and pass {ACCEPT} to continue after {done} step(s) of '
                    f'{global_batch} samples ({done * global_batch} samples)')
            note = f'; the checkpoint records no batch: {done} step(s) of {global_batch} assumed, as accepted'
        saved_batch = saved_batch or global_batch
        if saved_batch % saved_world:
            saved_world = 1
        old = epoch_span(length, 0, saved_batch // saved_world, saved_world, drop_last, pad)
        position = {'epoch_samples': min(done * saved_batch, old.total), 'epoch_end': old.end,
                    'global_batch': saved_batch, 'world_size': saved_world, 'dataset_length': length}
        if done and not note:
            note = (f"; position from its config's global batch {saved_batch} (the checkpoint predates the sample "
                    'count)')
    consumed, planned_end = position['epoch_samples'], position['epoch_end']
    saved = f'global batch {position["global_batch"]}, world size {position["world_size"]}'
    changed = f' (saved with {saved})' if saved != now else ''
    if consumed == 0:
        return ResumePlan(epoch, 0, f'resume: epoch {epoch} starts at its first sample with {now}{changed}{note}')
    if consumed >= planned_end:
        return ResumePlan(epoch + 1, 0, f'resume: epoch {epoch} was complete ({consumed} samples of its order read '
                                        f'with {saved}); epoch {epoch + 1} starts at its first sample with {now}')
    if position['dataset_length'] != length:
        if not accept:
            raise ResumeWouldSkipError(
                f'{source}: epoch {epoch}: the training set had {position["dataset_length"]} samples when the '
                f'checkpoint was written and has {length} now: the epoch\'s order is another permutation, so which '
                f'of its samples are not yet trained cannot be told ({consumed} of the old order were); resume with '
                f'the training set it was written with, or pass {ACCEPT} to continue after {consumed} samples of '
                'the new order (some then trained twice in this epoch, others not at all)')
        note += (f'; the training set had {position["dataset_length"]} samples, has {length}: continuing after '
                 f'{consumed} samples of the new order, as accepted')
        planned_end = 0  # nothing to compare with: another order
    span = epoch_span(length, consumed, global_batch // world_size, world_size, drop_last, pad)
    wanted_end = min(planned_end, length)
    if span.end < wanted_end:
        skipped = range(max(span.end, consumed), wanted_end)
        left = wanted_end - consumed
        if not accept:
            names = ''
            if order is not None:
                shown = [str(order[p]) for p in skipped[:8]]
                names = f'sample(s) {", ".join(shown)}{" ..." if len(skipped) > 8 else ""} at '
            fits = _batches_that_fit(length, consumed, wanted_end, position['global_batch'], global_batch,
                                     world_size, drop_last, pad)
            raise ResumeWouldSkipError(
                f'{source}: epoch {epoch}: {len(skipped)} of the {left} samples not yet trained would be skipped '
                f'({names}positions {skipped[0]}..{skipped[-1]} of its order): with {now} the {left} left make '
                f'{span.steps} full step(s) and drop_last drops the rest; resume with --batch_size '
                f'{" or ".join(str(size) for size in fits)} (train.data_loader.batch_size), or pass {ACCEPT} to '
                'skip them')
        note += f'; {len(skipped)} of the {left} samples not yet trained skipped (drop_last), as accepted'
    if span.steps == 0:
        return ResumePlan(epoch + 1, 0, f'resume: epoch {epoch} has no full step left after sample {consumed} with '
                                        f'{now}{changed}{note}; epoch {epoch + 1} starts at its first sample')
    return ResumePlan(epoch, consumed,
                      f'resume: epoch {epoch} continues at sample {consumed} of {length} of its order ({consumed} '
                      f'trained) with {now}{changed}: {span.steps} step(s) left in the epoch{note}')


def _batches_that_fit(length: int, consumed: int, wanted_end: int, saved_batch: int, requested: int,
                      world_size: int, drop_last: bool, pad: bool, limit: int = 4) -> List[int]:
    """Up to ``limit`` global batches (multiples of the world size; the saved one first when it fits) with which
    a pass from ``consumed`` reaches ``wanted_end``, the others nearest to ``requested``."""
    def fits(size: int) -> bool:
        return (size % world_size == 0
                and epoch_span(length, consumed, size // world_size, world_size, drop_last, pad).end >= wanted_end)
    first = [saved_batch] if fits(saved_batch) else []
    others = sorted((size for size in range(world_size, max(wanted_end - consumed, world_size) + 1, world_size)
                     if size != saved_batch and fits(size)), key=lambda size: (abs(size - requested), size))
    return first + others[:limit - len(first)]
