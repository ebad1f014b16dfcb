"""The hooks around the training step: one per concern (detectron2's train_loop / hooks pattern).

The trainer calls every hook's ``before_train``, then per epoch ``before_epoch``, per batch ``before_step``, the
step, ``after_step``, then ``after_epoch``; at the end ``after_train`` (a run that was stopped skips it) and, in
every case, ``close``. Hooks run in the order of ``default_hooks`` (``Trainer.hooks``), which is the one place the
order is written down:

0. ``ThreadControl``: torch's CPU thread count, timed over the step (first in, first out, so that the other
   hooks' after-step work, such as checkpoints, is not counted);
1. ``LRSchedule``: the learning rate of this iteration, before the step;
2. ``StopConditions``: SIGINT / SIGTERM, the signal file asking for a checkpoint, the streak of skipped steps;
3. ``PeriodicCheckpoint``: the periodic checkpoint, or one asked for by 2.; the final checkpoint;
4. ``Validation``: after the checkpoint, so that a crash in validation leaves one; marks ``best``;
5. ``Writers``: progress bar, text log, TensorBoard, skipped-step warnings;
6. ``BadSamples``: the data set's bad samples into the run's log, and a per-epoch summary of distinct files.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Mapping, Optional

import torch

from concern.threads import ThreadGovernor, parse_threads, thread_governor
from training.batches import describe_batch
from training.signals import StopRequest
from training.visualization import training_images


class NonFiniteStop(FloatingPointError):
    """Training stopped after ``max_nan_steps`` skipped (or rolled back) steps in a row; the message names the last
    batch, the checkpoint to resume from and the remedy. An expected end of a run: one line, no traceback."""


class HookBase:
    """Does nothing at every point; a hook overrides the points it needs. ``trainer`` is the ``Trainer``."""

    def before_train(self, trainer: Any) -> None:
        pass

    def before_epoch(self, trainer: Any) -> None:
        pass

    def before_step(self, trainer: Any) -> None:
        pass

    def after_step(self, trainer: Any) -> None:
        pass

    def after_epoch(self, trainer: Any) -> None:
        pass

    def after_train(self, trainer: Any) -> None:
        pass

    def close(self, trainer: Any) -> None:
        pass


class ThreadControl(HookBase):
    """torch's CPU thread count for the run (``RunOptions.threads``): None leaves it alone; a fixed number is set
    before training; ``auto`` hands it to a ``ThreadGovernor`` timed on each step (the step itself and the other
    hooks' before-step work, which run after this one; not data loading, checkpoints or validation), which logs
    its decisions. The count found at the start is restored when the run ends. The governor is off on CUDA and
    under ``--distributed`` (there the ranks' step times are coupled through the gradient exchange; a fixed count
    still applies)."""

    def __init__(self, threads: Any = None):
        self.threads = threads
        self.governor: Optional[ThreadGovernor] = None
        self.tick = 0.0
        self.found: Optional[int] = None

    def before_train(self, trainer: Any) -> None:
        if self.threads is None:
            return
        self.found = torch.get_num_threads()
        if trainer.device.type != 'cpu' or trainer.context.world_size > 1:
            fixed = parse_threads(self.threads)
            if fixed is not None:
                torch.set_num_threads(fixed)
            return
        self.governor = thread_governor(self.threads, on_change=lambda reason: trainer.logger.info(
            f'threads: {reason} (iteration {trainer.iteration}; a fixed count: --threads N)'))

    def before_step(self, trainer: Any) -> None:
        self.tick = time.perf_counter()

    def after_step(self, trainer: Any) -> None:
        if self.governor is not None:
            self.governor.observe(time.perf_counter() - self.tick)

    def close(self, trainer: Any) -> None:
        if self.found is not None:
            torch.set_num_threads(self.found)
            self.found = None


class LRSchedule(HookBase):
    def before_step(self, trainer: Any) -> None:
        trainer.lr = trainer.scheduler.apply(trainer.optimizer, trainer.epoch, trainer.iteration)


class StopConditions(HookBase):
    """Sets ``trainer.save_requested`` / ``trainer.stop_reason`` (the same on every rank) and stops a run of
    ``max_bad_steps`` skipped steps with ``NonFiniteStop`` (the last checkpoint is from before them). A step
    that rolled the previous one back (the commit rule) counts that one too: a run whose every other step
    is undone is stopped as well."""

    def __init__(self, max_bad_steps: int):
        self.max_bad_steps = int(max_bad_steps)
        self.stop: Optional[StopRequest] = None
        self.bad_streak = 0
        self.streak_before_last_good = 0

    def before_train(self, trainer: Any) -> None:
        self.stop = StopRequest().__enter__()

    def after_step(self, trainer: Any) -> None:
        step = trainer.step
        if getattr(step, 'rolled_back_previous', False):
            self.bad_streak = self.streak_before_last_good + 2
        elif step.bad:
            self.bad_streak += 1
        else:
            self.streak_before_last_good, self.bad_streak = self.bad_streak, 0
        if self.bad_streak >= self.max_bad_steps:
            directory = getattr(trainer.saver, 'directory', None)
            where = (f'resume from {os.path.join(directory, "latest")} (its weights give a finite probability map)'
                     if directory and os.path.exists(os.path.join(directory, 'latest')) else
                     'no checkpoint has been written yet')
            raise NonFiniteStop(
                f'training stopped: {self.bad_streak} consecutive steps skipped or rolled back for a non-finite input, '
                f'loss, BatchNorm statistic, gradient or weight (last at iteration {trainer.iteration - 1}: '
                f'{skip_reason(trainer)}); {where}. Check those samples, lower --lr or set --grad_clip.')
        signal_file = trainer.context.is_main and trainer.saver.signal_requested()
        assert self.stop is not None  # set in before_train, which the trainer calls first
        stop, save = trainer.context.any_flags([self.stop.requested, signal_file])
        trainer.save_requested = save
        if stop:
            trainer.stop_reason = 'stop requested (signal)'

    def close(self, trainer: Any) -> None:
        if self.stop is not None:
            self.stop.__exit__(None, None, None)
            self.stop = None


class PeriodicCheckpoint(HookBase):
    def after_step(self, trainer: Any) -> None:
        iteration = trainer.iteration
        if trainer.saver.due(iteration) or trainer.save_requested or trainer.stop_reason:
            trainer.save(step=True)
            if trainer.save_requested and trainer.context.is_main:
                trainer.saver.clear_signal()
                trainer.logger.info(f'checkpoint saved at iteration {iteration} on request '
                                    f'({trainer.saver.signal_file})')
            if trainer.stop_reason:
                trainer.logger.warning(f'{trainer.stop_reason}; checkpoint saved at iteration {iteration}, stopping')

    def after_train(self, trainer: Any) -> None:
        trainer.save(final=True)


class Validation(HookBase):
    """Validates every ``interval`` iterations after ``exempt`` and at the end; the first loader's F-measure
    chooses ``best``."""

    def __init__(self, validator: Any):
        self.validator = validator
        self.last_validated: Optional[int] = None

    def after_step(self, trainer: Any) -> None:
        if self.validator.due(trainer.iteration):
            self._validate(trainer)

    def after_train(self, trainer: Any) -> None:
        if self.last_validated != trainer.iteration:
            self._validate(trainer)

    def _validate(self, trainer: Any) -> None:
        self.last_validated = trainer.iteration
        results = self.validator.validate(trainer.model, trainer.iteration)
        trainer.last_validation = results
        fmeasure = results.get(self.validator.first_loader, {}).get('fmeasure')
        if fmeasure is not None and (trainer.best_fmeasure is None or fmeasure > trainer.best_fmeasure):
            trainer.best_fmeasure = fmeasure
            trainer.save(best=True)


class Writers(HookBase):
    """Progress bar, the text log every ``log_interval`` iterations, TensorBoard, skipped-step warnings."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.tick = 0.0
        self.seconds_per_step: Optional[float] = None

    def before_epoch(self, trainer: Any) -> None:
        self.bar = trainer.logger.progress(trainer.epoch_steps, trainer.epoch_iteration,
                                           f'epoch {trainer.epoch + 1}/{trainer.epochs}')
        self.tick = time.perf_counter()

    def after_step(self, trainer: Any) -> None:
        step, logger = trainer.step, trainer.logger
        if step.skipped:
            logger.warning(f'step skipped at iteration {trainer.iteration - 1} (epoch {trainer.epoch}): '
                           f'{skip_reason(trainer)}')
        now = time.perf_counter()
        elapsed, self.tick = now - self.tick, now
        self.seconds_per_step = elapsed if self.seconds_per_step is None else \
            0.9 * self.seconds_per_step + 0.1 * elapsed
        samples_per_second = trainer.global_batch / max(self.seconds_per_step, 1e-9)
        loss = trainer.last_loss
        self.bar.update(1)
        self.bar.set_postfix_str(f'loss={loss if loss is None else round(loss, 4)} lr={trainer.lr:.3g} '
                                 f'samples/s={samples_per_second:.1f}', refresh=False)
        if trainer.context.is_main and logger.should_log(trainer.iteration):
            values: Dict[str, float] = {'lr': trainer.lr, 'samples_per_second': samples_per_second}
            if loss is not None:
                values['loss'] = loss
            if isinstance(step.metrics, Mapping):
                values.update({name: _as_scalar(value) for name, value in step.metrics.items()})
            eta = self.seconds_per_step * (trainer.total_steps - trainer.iteration)
            hours, rest = divmod(int(eta), 3600)
            logger.info(f'epoch {trainer.epoch} iteration {trainer.iteration} '
                        + ' '.join(f'{name}={value:.6g}' for name, value in values.items())
                        + f' eta {hours}h{rest // 60:02d}m')
            logger.scalars(trainer.iteration, values, prefix='train/')
            if step.pred is not None:
                with torch.no_grad():
                    logger.images(trainer.iteration, training_images(step.batch, step.pred), prefix='train/')

    def after_epoch(self, trainer: Any) -> None:
        self.close(trainer)

    def close(self, trainer: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class BadSamples(HookBase):
    """Each bad sample the loader met (``take_bad_samples``: file, message), in the run's log; per epoch, the
    number of distinct bad files and the first few."""

    SHOWN = 5

    def __init__(self) -> None:
        self.files: List[str] = []
        self.events = 0

    def before_epoch(self, trainer: Any) -> None:
        self.files, self.events = [], 0

    def after_step(self, trainer: Any) -> None:
        self._collect(trainer)

    def after_epoch(self, trainer: Any) -> None:
        self._collect(trainer)
        if self.files and trainer.context.is_main:
            shown = ', '.join(self.files[:self.SHOWN]) + (' ...' if len(self.files) > self.SHOWN else '')
            trainer.logger.warning(f'epoch {trainer.epoch + 1}: {len(self.files)} distinct bad file(s) skipped '
                                   f'({self.events} time(s); other samples were used in their place): {shown}')

    def _collect(self, trainer: Any) -> None:
        take = getattr(trainer.loader, 'take_bad_samples', None)
        if take is None:
            return
        for path, message in take():
            self.events += 1
            if path not in self.files:
                self.files.append(path)
            trainer.logger.warning(f'bad sample skipped: {message}')


def default_hooks(trainer: Any) -> List[HookBase]:
    """The hooks of a training run, in the order they run (see the module docstring)."""
    hooks: List[HookBase] = [ThreadControl(trainer.options.threads), LRSchedule(),
                             StopConditions(trainer.options.max_nan_steps), PeriodicCheckpoint()]
    if trainer.validator is not None:
        hooks.append(Validation(trainer.validator))
    hooks += [Writers(), BadSamples()]
    return hooks


def skip_reason(trainer: Any) -> str:
    """Why the last step was skipped, and its files when the reason does not already name them."""
    step = trainer.step
    if step.names_files:
        return step.skipped
    return f'{step.skipped}; {describe_batch(step.batch, trainer.epoch, trainer.epoch_iteration - 1)}'


def _as_scalar(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    return float(value)


__all__ = ['NonFiniteStop', 'HookBase', 'LRSchedule', 'StopConditions', 'PeriodicCheckpoint', 'Validation', 'Writers',
           'BadSamples', 'default_hooks']
