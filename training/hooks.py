"""The hooks around the training step: one per concern (detectron2's train_loop / hooks pattern).

The trainer calls every hook's ``before_train``, then per epoch ``before_epoch``, per batch ``before_step``, the
step, ``after_step``, then ``after_epoch``; at the end ``after_train`` (a run that was stopped skips it) and, in
every case, ``close``. Hooks run in the order of ``default_hooks`` (``Trainer.hooks``), which is the one place the
order is written down:

0. ``ThreadControl``: torch's CPU thread count, timed over the step (first in, first out, so that the other
   hooks' after-step work, such as checkpoints, is not counted);
1. ``LRSchedule``: the learning rate of this iteration, before the step;
2. ``StopConditions``: SIGINT / SIGTERM, the signal file asking for a checkpoint, the streak of skipped steps;
3. ``PreciseBN`` (only with ``train.precise_bn``): after the last step, the BatchNorm statistics of the final
   weights recomputed, before 4. and 5. save and validate them;
4. ``PeriodicCheckpoint``: the periodic checkpoint, or one asked for by 2.; the final checkpoint;
5. ``Validation``: after the checkpoint, so that a crash in validation leaves one; marks ``best``; early stopping
   (``train.early_stopping``) decides on its result;
6. ``Writers``: progress bar, text log, TensorBoard, skipped-step warnings;
7. ``MetricsFile``: ``metrics.jsonl`` (rank 0), after 5. and 6., whose figures it writes;
8. ``BadSamples``: the data set's bad samples into the run's log, and a per-epoch summary of distinct files.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Mapping, Optional

import torch

from concern.threads import ThreadGovernor, parse_threads, thread_governor
from training.batches import describe_batch
from training.metrics_file import METRICS_FILE, MetricsWriter
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


class PreciseBN(HookBase):
    """``train.precise_bn`` (training/precise_bn.py): the BatchNorm statistics of the final weights averaged over
    ``batches`` training batches (``Trainer.recompute_batchnorm_statistics``). After the run's last step, before
    its periodic checkpoint and its validation, which therefore see them too; or at the end of a run whose loop
    ended otherwise: early stopping (``best`` keeps the statistics of its own checkpoint), a resumed run whose
    checkpoint was the last step's, a rerun of a finished run (the same figures again). Not in a run a signal
    stopped (its resume does it), nor in one early stopping had already ended."""

    def __init__(self, batches: int):
        self.batches = int(batches)
        self.done = False

    def after_step(self, trainer: Any) -> None:
        if trainer.is_last_step():
            self._recompute(trainer)

    def after_train(self, trainer: Any) -> None:
        if not self.done:
            self._recompute(trainer)

    def _recompute(self, trainer: Any) -> None:
        trainer.recompute_batchnorm_statistics(self.batches)
        self.done = True


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
    chooses ``best``; ``train.early_stopping`` (``trainer.early_stopping``) counts its loader's F-measure and
    ends the run normally (``trainer.finish_reason``: the final checkpoint is written) when it stops improving.

    The state a validation changes (best F-measure, early stopping, ``trainer.validated_iteration``) is updated
    before ``best`` is saved, so every checkpoint holds a consistent state. A validation runs after the checkpoint
    of its iteration, whose state therefore lacks it: a run resumed from such a checkpoint validates again before
    its first step (the same weights, so the same figures), and decides as the uninterrupted run did."""

    def __init__(self, validator: Any):
        self.validator = validator
        self.last_validated: Optional[int] = None

    def before_train(self, trainer: Any) -> None:
        start = trainer.start_state
        if getattr(trainer, 'already_stopped', False):  # early stopping ended the run resumed from: nothing to do
            return
        if start.full and self.validator.due(trainer.iteration) and trainer.validated_iteration != trainer.iteration:
            trainer.logger.info(f'resume: the validation of iteration {trainer.iteration} ran after its checkpoint was '
                                'written, so the checkpoint lacks its result: validating again before the first step, '
                                'so that best and early stopping decide as in the uninterrupted run')
            self._validate(trainer)

    def after_step(self, trainer: Any) -> None:
        if self.validator.due(trainer.iteration):
            self._validate(trainer)

    def after_train(self, trainer: Any) -> None:
        if self.last_validated != trainer.iteration and trainer.validated_iteration != trainer.iteration:
            self._validate(trainer)

    def _validate(self, trainer: Any) -> None:
        self.last_validated = iteration = trainer.iteration
        results = self.validator.validate(trainer.model, iteration)
        trainer.last_validation = results
        trainer.validated_iteration = iteration
        fmeasure = results.get(self.validator.first_loader, {}).get('fmeasure')
        improved = fmeasure is not None and (trainer.best_fmeasure is None or fmeasure > trainer.best_fmeasure)
        if improved:
            trainer.best_fmeasure = fmeasure
        stop = self._early_stopping(trainer, results, iteration)
        if improved:
            trainer.save(best=True)
        if stop:
            stopping = trainer.early_stopping
            directory = getattr(trainer.saver, 'directory', None) or 'model'
            best = os.path.join(directory, 'best')
            which = (f'the best checkpoint is {best} (fmeasure {trainer.best_fmeasure:.4f})'
                     if trainer.best_fmeasure is not None else 'no best checkpoint (no validation result)')
            if stopping.loader != self.validator.first_loader:
                which += f', chosen on the first loader {self.validator.first_loader!r}'
            trainer.finish_reason = stopping.reason(iteration)
            trainer.logger.info(f'{trainer.finish_reason}; {which}; the run ends with its final checkpoint')

    @staticmethod
    def _early_stopping(trainer: Any, results: Mapping[str, Any], iteration: int) -> bool:
        """Feed ``trainer.early_stopping`` (if any) this validation's F-measure of its loader; whether to stop.
        A validation without a result for that loader (it failed) does not count."""
        stopping = getattr(trainer, 'early_stopping', None)
        if stopping is None:
            return False
        fmeasure = results.get(stopping.loader, {}).get('fmeasure')
        if fmeasure is None:
            trainer.logger.warning(f'early stopping: no fmeasure of loader {stopping.loader!r} at iteration '
                                   f'{iteration} (the validation failed); not counted')
            return False
        return bool(stopping.observe(float(fmeasure), iteration))


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
        trainer.samples_per_second = samples_per_second
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


class MetricsFile(HookBase):
    """``<workspace>/metrics.jsonl`` (training/metrics_file.py), rank 0: a ``train`` line every ``log_interval``
    iterations (epoch, iteration, lr, loss, each named loss term, samples per second, time) and a ``validation`` line
    per loader and validation. At the start the lines after the start's iteration are dropped (the rule of resume),
    so that a plot never draws an iteration twice."""

    def __init__(self) -> None:
        self.writer: Optional[MetricsWriter] = None
        self.written_validation: Optional[int] = None

    def before_train(self, trainer: Any) -> None:
        if not trainer.context.is_main:
            return
        self.writer = MetricsWriter(os.path.join(trainer.options.workspace, METRICS_FILE))
        resumed_from = trainer.checkpoint.resume if trainer.start_state.full else None
        dropped = self.writer.start(trainer.iteration, trainer.epoch, resumed_from)
        if dropped:
            trainer.logger.info(f'{self.writer.path}: {dropped} line(s) of iterations after {trainer.iteration} (or '
                                'torn) dropped: this run writes them again from its start')
        self._validation(trainer)  # a resumed run's validation before its first step

    def after_step(self, trainer: Any) -> None:
        if self.writer is None:
            return
        step = trainer.step
        if trainer.logger.should_log(trainer.iteration):
            record: Dict[str, Any] = {'type': 'train', 'epoch': trainer.epoch, 'iteration': trainer.iteration,
                                      'lr': trainer.lr}
            if step.loss is not None:
                record['loss'] = step.loss
            if isinstance(step.metrics, Mapping):
                for name, value in step.metrics.items():
                    record.setdefault(str(name), _as_scalar(value))
            record['samples_per_second'] = trainer.samples_per_second
            if step.skipped:
                record['skipped'] = True
            self.writer.write(record)
        self._validation(trainer)

    def after_train(self, trainer: Any) -> None:
        self._validation(trainer)

    def _validation(self, trainer: Any) -> None:
        iteration = trainer.validated_iteration
        if self.writer is None or iteration is None or iteration != trainer.iteration \
                or self.written_validation == iteration:
            return
        self.written_validation = iteration
        for loader, metrics in trainer.last_validation.items():
            self.writer.write({'type': 'validation', 'epoch': trainer.epoch, 'iteration': iteration, 'loader': loader,
                               **{key: metrics.get(key) for key in ('precision', 'recall', 'fmeasure')}})

    def close(self, trainer: Any) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


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

    def after_train(self, trainer: Any) -> None:
        self._collect(trainer)  # met by PreciseBN at the end

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
                             StopConditions(trainer.options.max_nan_steps)]
    precise_bn = getattr(getattr(trainer, 'settings', None), 'precise_bn', None)
    if precise_bn is not None:
        hooks.append(PreciseBN(precise_bn.batches))
    hooks.append(PeriodicCheckpoint())
    if trainer.validator is not None:
        hooks.append(Validation(trainer.validator))
    hooks += [Writers(), MetricsFile(), BadSamples()]
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


__all__ = ['NonFiniteStop', 'HookBase', 'LRSchedule', 'StopConditions', 'PreciseBN', 'PeriodicCheckpoint',
           'Validation', 'Writers', 'MetricsFile', 'BadSamples', 'default_hooks']
