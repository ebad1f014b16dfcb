"""``Trainer``: set-up, the training step, and the loop that calls the hooks around it (training/hooks.py).

The step (``run_step``) is the whole of what one batch does to the weights; everything else that happens during a
run (learning-rate schedule, checkpoints, validation, logging, signals, bad samples) is a hook, in the order
``training.hooks.default_hooks`` gives. Non-finite numbers never reach the weights (training/nonfinite.py).
"""
from __future__ import annotations

import contextlib
import gc
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

import numpy as np
import torch
from torch import nn

from concern.device import cpu_bf16_is_native
from concern.log import Logger, LogWriteError
from decoders.seg_detector import InputSizeError
from training.batches import bind_loader, describe_batch, move_to_device
from training.checkpoint import Checkpoint, NonFiniteCheckpointError, PreservedRNG, StartState, build_checkpoint, \
    capture_rng_state, config_differences, plan_resume, resolve_auto_resume, restore_rng_state
from training.distributed import (DistributedContext, setup_distributed, teardown_distributed, unwrap_model,
                                  wrap_model)
from training.hooks import HookBase, NonFiniteStop, default_hooks
from training.learning_rate import bind_run_length
from training.model_saver import CheckpointWriteError, ModelSaver, OutputPathError
from training.nonfinite import NonFiniteGuard, all_finite, non_finite_inputs
from training.optimizer_scheduler import OptimizerScheduler
from training.precise_bn import batchnorm_layers, recompute_statistics, restore_statistics, running_statistics, \
    statistics_of
from training.run_options import RunOptions
from training.validation import Validator
from structure.weights import offset_compat_of


class TrainingStartError(ValueError):
    """The run cannot start (a checkpoint that is not one, or does not fit): nothing has been written."""


class TrainingInputError(ValueError):
    """A training batch the network cannot take (its height or width not a multiple of 32): a setting of the data
    pipeline, not a bug."""


# The failures a run is expected to meet, each with a message naming what failed, the path and the remedy: written
# once, as one line, to the run's log and the console, and ended without a traceback (train.py).
EXPECTED_FAILURES: Tuple[Type[BaseException], ...] = (
    TrainingStartError, CheckpointWriteError, NonFiniteCheckpointError, NonFiniteStop, LogWriteError, OutputPathError,
    TrainingInputError)


# ``F.binary_cross_entropy``'s refusal of an input outside [0, 1] (NaN included) on the CPU
_BCE_RANGE_ERROR = 'should be between 0 and 1'


def _input_size_message(batch: Any, error: InputSizeError) -> str:
    image = batch.get('image') if isinstance(batch, Mapping) else None
    size = f' of {image.shape[-2]}x{image.shape[-1]} pixels' if isinstance(image, torch.Tensor) else ''
    return (f'training batch{size}: {error}; set the training crop (RandomCropData\'s size in '
            'train.data_loader.dataset.processes, or the resize of a pipeline without a crop) to multiples of 32')


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch generators (model initialisation); the data order and augmentation are seeded by
    the loader (``data.DataLoader.bind`` / ``start_epoch``)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def config_as_dict(config: Any) -> Optional[Dict[str, Any]]:
    """The compiled config as a plain dict: ``{define: tree}`` for a CompiledConfig, a dict as is."""
    if config is None:
        return None
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, 'tree') and hasattr(config, 'define'):
        return {config.define: config.tree}
    raise TypeError(f'experiment.config: expected a compiled config or a dict, got {type(config).__name__}')


@dataclass
class StepResult:
    """What one step did. skipped: why its batch changed nothing (None: it stepped), naming the files when
    ``names_files``; bad: skipped for a non-finite number (counts towards the streak that stops training)."""
    batch: Any
    loss: Optional[float] = None
    metrics: Any = None
    pred: Any = None
    skipped: Optional[str] = None
    bad: bool = False
    names_files: bool = False
    rolled_back_previous: bool = False  # the previous step was undone too (the commit rule): two steps lost


class Trainer:
    def __init__(self, experiment: Any, options: RunOptions):
        if getattr(experiment, 'structure', None) is None or getattr(experiment.structure, 'builder', None) is None:
            raise ValueError('experiment: expected structure.builder (the model recipe), got none')
        if getattr(experiment, 'train', None) is None or getattr(experiment.train, 'data_loader', None) is None:
            raise ValueError('experiment: expected train.data_loader (a TrainSettings with a DataLoader), got none')
        self.experiment = experiment
        self.options = options
        self.structure = experiment.structure
        self.settings = experiment.train
        self.logger: Logger = experiment.logger if getattr(experiment, 'logger', None) is not None else Logger()
        self.validator: Optional[Validator] = None
        if options.validate:
            if experiment.validation is None:
                raise ValueError('--validate needs a validation section in the experiment, got none')
            self.validator = Validator(self.structure, experiment.validation, self.logger, options.visualize)
        self.config = config_as_dict(getattr(experiment, 'config', None))
        self.scheduler: OptimizerScheduler = self.settings.scheduler or OptimizerScheduler()
        self.saver: ModelSaver = self.settings.model_saver or ModelSaver()
        self.checkpoint: Checkpoint = self.settings.checkpoint or Checkpoint()
        self.loader = self.settings.data_loader
        # train.early_stopping: fed by the Validation hook; its state is in every checkpoint
        self.early_stopping: Any = getattr(self.settings, 'early_stopping', None)
        if self.early_stopping is not None and self.validator is not None:
            loaders = list(self.validator.settings.data_loaders)
            if self.early_stopping.loader is None:
                self.early_stopping.loader = loaders[0]
            elif self.early_stopping.loader not in loaders:
                raise TrainingStartError(f'train.early_stopping.loader: {self.early_stopping.loader!r} is not a '
                                         f'validation loader of the experiment (they are: {", ".join(loaders)})')
        self.context = DistributedContext()
        self.device = torch.device('cpu')
        self.model: Optional[nn.Module] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scaler: Any = None
        self.guard: Optional[NonFiniteGuard] = None
        self.autocast_dtype: Optional[torch.dtype] = None
        self.hooks: List[HookBase] = []
        self.best_fmeasure: Optional[float] = None
        self.data_seed = 0
        self.last_validation: Dict[str, Dict[str, float]] = {}
        self.validated_iteration: Optional[int] = None  # the last validation best / early stopping include
        self.start_state = StartState()
        self.finish_reason: Optional[str] = None  # the run ends early, normally (early stopping): final written
        # the resumed checkpoint's early-stopping state already says stop: the run ends before its first step
        self.already_stopped = False
        self.samples_per_second: Optional[float] = None  # the Writers hook's smoothed figure
        self.epoch = self.epoch_iteration = self.iteration = 0
        # positions of the epoch's order consumed (all ranks), where the current pass ends, the epoch's steps
        self.epoch_samples = self.epoch_end = self.epoch_steps = 0
        self.epochs = int(self.settings.epochs)
        self.steps_per_epoch = self.total_steps = self.global_batch = 0
        self.lr = 0.0
        self.step: Optional[StepResult] = None
        self.last_loss: Optional[float] = None
        self.save_requested = False
        self.stop_reason: Optional[str] = None
        self._last_saved: Optional[tuple] = None
        # the commit rule: the batch of the last committed step, and which state of the weights a save verified
        self._check_batch: Any = None
        self._weights_version = 0
        self._verified_version = 0

    @property
    def last_sweep(self) -> Dict[str, Dict[str, Any]]:
        return self.validator.last_sweep if self.validator is not None else {}

    def validate(self, model: Optional[nn.Module] = None, iteration: Optional[int] = None
                 ) -> Dict[str, Dict[str, float]]:
        """P/R/F per validation loader (``Validator.validate``) of ``model`` (default: the trained one)."""
        if self.validator is None:
            if self.experiment.validation is None:
                return {}
            self.validator = Validator(self.structure, self.experiment.validation, self.logger, self.options.visualize)
        self.validator.context, self.validator.device = self.context, self.device
        self.validator.channels_last = self.options.channels_last
        model = model if model is not None else self.model
        if model is None:
            raise RuntimeError('Trainer.validate: no model given and none trained yet (train() builds it)')
        return self.validator.validate(model, self.iteration if iteration is None else iteration)

    def _step_parts(self) -> Tuple[nn.Module, torch.optim.Optimizer, NonFiniteGuard]:
        """The model, optimizer and guard that ``train`` sets up; RuntimeError before that."""
        if self.model is None or self.optimizer is None or self.guard is None:
            raise RuntimeError('Trainer: the model, optimizer and guard are set up by train() first')
        return self.model, self.optimizer, self.guard

    # -- the step ---------------------------------------------------------------------------
    def run_step(self, batch: Any) -> StepResult:
        """One batch: forward, named losses summed, backward (AMP-scaled), optional clipping, optimizer step;
        skipped, with nothing changed, when an input, the loss, a statistic, a gradient or a weight is not finite.

        The commit rule (docs/training.md): a committed step is kept only if the model it leaves gives a finite
        forward. This step's forward verifies the previous step: when it is not finite (or the loss fails on
        non-finite values), the batch runs again with the weights from before the previous step; finite there,
        the previous step is rolled back (its weights were huge but finite, say after a huge learning rate), else
        the batch is to blame and only this step is skipped."""
        batch = move_to_device(batch, self.device, self.options.channels_last)
        bad_inputs = self._non_finite_inputs_of_every_rank(batch)
        if bad_inputs is not None:
            return StepResult(batch, skipped='non-finite input: ' + bad_inputs, bad=True, names_files=True)
        (model, optimizer, guard), scaler = self._step_parts(), self.scaler
        guard.snapshot()
        loss, pred, metrics, failure = self._training_forward(model, batch)
        if not guard.forward_ok(loss):
            guard.restore_buffers()
            what = failure or (f'non-finite loss ({float(loss.detach())}) or BatchNorm statistic'
                               if loss is not None else 'non-finite loss or BatchNorm statistic on another rank')
            if guard.can_undo_previous_step():  # the same on every rank: commits are decided together
                guard.undo_previous_step()
                if not self.context.any_flags([not self._loss_is_finite(batch)])[0]:
                    self._weights_version += 1
                    return StepResult(batch, skipped=f'{what}; the same batch is finite with the weights from before '
                                                     f'the previous step, so that step (iteration '
                                                     f'{self.iteration - 1}) is rolled back: its weights give a '
                                                     'non-finite forward', bad=True, rolled_back_previous=True)
                guard.redo_previous_step()
            return StepResult(batch, skipped=what, bad=True)
        assert loss is not None
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.options.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), self.options.grad_clip)
        if not scaler.is_enabled() and not guard.gradients_ok():  # a GradScaler skips such a step itself
            optimizer.zero_grad(set_to_none=True)
            guard.restore_buffers()
            return StepResult(batch, skipped='non-finite gradient', bad=True)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if not guard.state_ok():
            guard.restore_all()
            return StepResult(batch, skipped='non-finite weight or optimizer state after the step', bad=True)
        guard.commit()
        self._weights_version += 1
        self._check_batch = batch  # a batch the committed weights stepped on: finite inputs, not blamed
        if self._checkpoint_follows():  # the commit rule before a periodic or the final checkpoint, counted here
            if self.context.any_flags([not self._prediction_is_finite(batch)])[0]:
                guard.undo_step()
                self._weights_version += 1
                return StepResult(batch, skipped='the weights of this step give a non-finite probability map '
                                                 '(checked before its checkpoint): the step is rolled back', bad=True)
            self._verified_version = self._weights_version
        return StepResult(batch, loss=float(loss.detach()), metrics=metrics, pred=pred)

    def _checkpoint_follows(self) -> bool:
        """Whether a periodic checkpoint or the final one follows the step being taken (the same on every rank)."""
        return self.saver.due(self.iteration + 1) or self.is_last_step(taken=False)

    def _non_finite_inputs_of_every_rank(self, batch: Any) -> Optional[str]:
        """None when every rank's ``batch`` has finite inputs; else the files and keys that do not, each from the
        rank that read them (the flag is OR-ed, so under DDP every rank joins the gather and gets the same answer)."""
        bad_inputs = non_finite_inputs(batch)
        if not self.context.any_flags([bool(bad_inputs)])[0]:
            return None
        if not self.context.enabled or self.context.world_size == 1:
            return '; '.join(bad_inputs)
        gathered = self.context.gather_objects(list(bad_inputs))
        return '; '.join(f'rank {rank}: {"; ".join(names)}' for rank, names in enumerate(gathered) if names)

    def _training_forward(self, model: nn.Module, batch: Any) -> Tuple[Optional[torch.Tensor], Any, Any,
                                                                        Optional[str]]:
        """The step's forward: (loss, pred, metrics, None); (None, None, None, why) when the loss refused a
        probability map outside [0, 1] (``F.binary_cross_entropy`` on NaN, on the CPU: a model whose own loss calls
        it; the project's ``BalanceCrossEntropyLoss`` gives a NaN loss instead, as a CUDA device-side assert cannot
        be caught). That is a failed forward like a NaN loss, decided by ``NonFiniteGuard.forward_ok`` over every
        rank; no second forward runs here (under DDP with ``--sync_bn`` its collectives would wait for ranks that
        never join). Any other error propagates (a bug)."""
        try:
            with self._autocast():
                loss, pred, metrics = model(batch, training=True)
        except RuntimeError as error:
            if _BCE_RANGE_ERROR not in str(error):
                raise
            assert self.guard is not None
            self.guard.restore_buffers()
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return None, None, None, f'the loss failed on a non-finite probability map ({first})'
        return loss.float().mean(), pred, metrics, None

    def _loss_is_finite(self, batch: Any) -> bool:
        """Whether the model as it is gives a finite loss and BatchNorm statistics on ``batch`` (this rank), without
        changing anything: no gradient, buffers restored, random streams preserved."""
        model, _, guard = self._step_parts()
        try:
            with torch.no_grad(), PreservedRNG(), self._autocast():
                loss = unwrap_model(model)(batch, training=True)[0]
                finite = bool(torch.isfinite(loss.float()).all()) and all_finite(list(unwrap_model(model).buffers()))
        except RuntimeError:  # the loss refused a non-finite probability map
            finite = False
        guard.restore_buffers()
        return finite

    def _prediction_is_finite(self, batch: Any, training_mode: bool = False) -> bool:
        """Whether the probability map of the model as it is on ``batch`` (this rank) is finite: in eval mode (how
        a checkpoint is used) or in training mode (BatchNorm on the batch; buffers restored afterwards)."""
        model, _, guard = self._step_parts()
        model = unwrap_model(model)
        was_training = model.training
        try:
            with torch.no_grad(), PreservedRNG():
                model.train(training_mode)
                with self._autocast() if training_mode else contextlib.nullcontext():
                    prediction = model(batch, training=False)
                return bool(torch.isfinite(prediction.float()).all())
        finally:
            model.train(was_training)
            if training_mode:
                guard.restore_buffers()

    def _verify_before_save(self) -> None:
        """The commit rule at a save (every rank): the state about to be written must give a finite probability map
        on the batch of the last committed step (never one blamed for a skipped step). ``run_step`` checks it
        already before a periodic or the final checkpoint (a failure there is a skipped step, counted towards
        ``max_nan_steps``); this covers the other saves (a signal, ``best``). When it does not, the step just taken
        is undone (logged) and the state before it checked; when that fails too, or no step can be undone,
        ``NonFiniteCheckpointError``."""
        batch = self._check_batch
        if batch is None or self._verified_version == self._weights_version:
            return
        model, _, guard = self._step_parts()
        files = describe_batch(batch, self.epoch, self.epoch_iteration - 1)
        failed = self.context.any_flags([not self._prediction_is_finite(batch)])[0]
        if failed and guard.can_undo_step():
            guard.undo_step()
            self._weights_version += 1
            self.logger.warning(f'step of iteration {self.iteration - 1} rolled back before the checkpoint: its '
                                f'weights give a non-finite probability map ({files}); lower --lr or set --grad_clip')
            failed = self.context.any_flags([not self._prediction_is_finite(batch)])[0]
        if failed:
            raise NonFiniteCheckpointError(
                f'checkpoint at iteration {self.iteration} (epoch {self.epoch}) not written: the model gives a '
                f'non-finite probability map ({files}); the previous checkpoints are kept (resume from latest with a '
                'lower --lr or --grad_clip)')
        self._verified_version = self._weights_version

    def is_last_step(self, taken: bool = True) -> bool:
        """Whether the step is the last one of the run (the last of the last epoch): the step just taken (in
        ``after_step``, the counters already advanced) or, ``taken`` False, the one being taken."""
        position = self.epoch_iteration + (0 if taken else 1)
        return self.epoch == self.epochs - 1 and position >= self.epoch_steps

    def recompute_batchnorm_statistics(self, batches: int) -> None:
        """``train.precise_bn`` (training/precise_bn.py): every BatchNorm layer's running statistics become the
        average over ``batches`` global batches of the training data, taken from the epochs after the last one
        (their order and augmentation depend only on the seed, so a resumed run recomputes the same figures; the
        weights are not touched, so running it twice gives the same result). Batches with a non-finite input are
        passed over on every rank. Under ``--distributed`` each rank averages its share and the ranks' statistics
        are then averaged. The old statistics are put back, with a warning, when no batch was usable, when the new
        ones are not finite, or when the model with them gives a non-finite probability map on the first batch
        used (the same batch in a straight and in a resumed run)."""
        model = unwrap_model(self._step_parts()[0])
        layers = batchnorm_layers(model)
        if not layers:
            self.logger.info('train.precise_bn: the model has no BatchNorm layer; nothing to recompute')
            return
        saved = statistics_of(layers)
        passed_over: List[str] = []
        used: List[Any] = []  # the first batch used, for the check afterwards

        def training_batches() -> Any:
            produced, epoch = 0, self.epochs
            while produced < batches:
                self.loader.start_epoch(epoch)
                before = produced
                for batch in self.loader:
                    batch = move_to_device(batch, self.device, self.options.channels_last)
                    bad_inputs = self._non_finite_inputs_of_every_rank(batch)
                    if bad_inputs is not None:
                        passed_over.append(bad_inputs)
                        continue
                    if not used:
                        used.append(batch)
                    yield batch
                    produced += 1
                    if produced >= batches:
                        return
                if produced == before:  # an epoch without a usable batch: no later one has any either
                    return
                epoch += 1

        def forward(batch: Any) -> Any:
            with self._autocast():
                return model(batch, training=True)

        start = time.perf_counter()
        done = recompute_statistics(model, training_batches(), forward)
        statistics = [tensor for layer in layers for tensor in running_statistics(layer)[:2]]
        self.context.average_tensors(statistics)
        failed = not done['batches'] or not all_finite(statistics) or not self._prediction_is_finite(used[0])
        if self.context.any_flags([failed])[0]:
            restore_statistics(layers, saved)
            why = ('no usable training batch' if not done['batches'] else
                   'the recomputed ones are not finite or give a non-finite probability map')
            self.logger.warning(f'train.precise_bn: BatchNorm statistics kept as training left them: {why}')
            return
        # the state to be saved is checked (above): the commit rule's check before a save need not run again
        self._verified_version = self._weights_version
        note = f'; passed over {len(passed_over)} with a non-finite input ({passed_over[0]})' if passed_over else ''
        self.logger.info(f'train.precise_bn: BatchNorm statistics of {done["layers"]} layers recomputed over '
                         f'{done["batches"]} batches ({done["batches"] * self.global_batch} samples) of the training '
                         f'data in {time.perf_counter() - start:.1f} s{note}')

    # -- the loop ---------------------------------------------------------------------------
    def train(self) -> Dict[str, Any]:
        """Train to the end (or until SIGINT/SIGTERM); returns a summary of where it stopped.
        Raises TrainingStartError, before writing anything, when the run cannot start.

        An expected failure (``EXPECTED_FAILURES``: disk full, permission, non-finite stop, a log or TensorBoard
        write, a refused start) is written once to the run's log and the console as one line naming what failed,
        the path and the remedy, and re-raised marked as reported (train.py exits non-zero without a traceback);
        any other exception (a bug) is written with its traceback, and re-raised."""
        options = self.options
        self.context = setup_distributed(options.distributed, options.device, options.local_rank)
        self.device = self.context.device
        anomaly = torch.is_anomaly_enabled()
        failed = False
        try:
            torch.autograd.set_detect_anomaly(options.debug)
            summary = self._train()
            # every rank leaves the loop before any destroys the group (rank 0 still writes the last checkpoint when
            # the others are done): once in CI a two-rank Gloo run's rank 1 aborted at its end ('terminate called
            # without an active exception') while tearing down before rank 0
            self.context.barrier()
            return summary
        except EXPECTED_FAILURES as error:
            failed = True
            self.logger.fatal(error)
            raise
        except Exception:
            failed = True
            self.logger.exception(f'training failed at iteration {self.iteration} (epoch {self.epoch}) with an '
                                  'unexpected error (a bug; please report it with this traceback)')
            raise
        finally:
            torch.autograd.set_detect_anomaly(anomaly)
            try:
                self.logger.close()
            except LogWriteError:
                if not failed:  # already in the log; the error in flight, if any, is the one to report
                    raise
            finally:
                self._release_distributed()

    def _release_distributed(self) -> None:
        if self.model is not None and self.context.enabled:
            self.step = None  # its prediction tensors hold the wrapped model's graph
            # DistributedDataParallel's reducer holds the process group: dropped before the group is destroyed,
            # so that no Gloo thread outlives it into interpreter shutdown; later calls use the model itself
            self.model = unwrap_model(self.model)
            self._check_batch = None
            gc.collect()
        teardown_distributed(self.context)
        self.context = DistributedContext(device=self.device)  # later calls (validate) run single-process

    def _train(self) -> Dict[str, Any]:
        start = self._setup()
        self.hooks = default_hooks(self)
        self._call('before_train')
        try:
            while self.epoch < self.epochs and not self.stop_reason and not self.finish_reason:
                # from the sample after those already consumed (a resume, maybe with another batch or world size)
                self.loader.start_epoch(self.epoch, skip_samples=self.epoch_samples)
                span = self.loader.span()
                self.epoch_end, self.epoch_steps = span.end, self.epoch_iteration + span.steps
                self._call('before_epoch')
                for batch in self.loader:
                    self._call('before_step')
                    try:
                        self.step = self.run_step(batch)
                    except InputSizeError as error:
                        raise TrainingInputError(_input_size_message(batch, error)) from error
                    if self.step.loss is not None:
                        self.last_loss = self.step.loss
                    self.iteration += 1
                    self.epoch_iteration += 1
                    self.epoch_samples = min(self.epoch_samples + self.global_batch, self.epoch_end)
                    self._call('after_step')
                    if self.stop_reason or self.finish_reason:
                        break
                self._call('after_epoch')
                if not self.stop_reason and not self.finish_reason:
                    self.epoch, self.epoch_iteration, self.epoch_samples = self.epoch + 1, 0, 0
            if self.already_stopped:  # final, latest and best stay as the run that stopped wrote them
                pass
            elif not self.stop_reason:
                self._call('after_train')
                self.logger.info(f'training done at iteration {self.iteration}')
        finally:
            self._call('close')
        return {'epoch': self.epoch, 'epoch_iteration': self.epoch_iteration, 'iteration': self.iteration,
                'epoch_samples': self.epoch_samples, 'interrupted': bool(self.stop_reason), 'last_loss': self.last_loss,
                'best_fmeasure': self.best_fmeasure, 'validation': self.last_validation,
                'world_size': self.context.world_size, 'resumed': start.full, 'early_stopped': self.finish_reason}

    def _call(self, point: str) -> None:
        for hook in self.hooks:
            getattr(hook, point)(self)

    # -- set-up -----------------------------------------------------------------------------
    def _setup(self) -> StartState:
        options, context, logger = self.options, self.context, self.logger
        if self.device.type == 'cuda':
            torch.backends.cudnn.benchmark = options.benchmark
            if options.seed is not None and not options.benchmark:
                torch.backends.cudnn.deterministic = True
        if options.seed is not None:
            seed_everything(options.seed)
        assert options.workspace is not None  # RunOptions.__post_init__ fills it in
        logger.open(options.workspace, None, rank=context.rank, debug=options.debug)
        model = self._build_model()
        self.model = model
        self.optimizer = self.scheduler.create_optimizer(model.parameters())
        self._setup_precision()
        # --resume auto: this run's own newest checkpoint (its workspace's), or a fresh start
        auto_resume = resolve_auto_resume(self.checkpoint, os.path.join(options.workspace, self.saver.dir_path))
        try:
            start = self.checkpoint.restore(unwrap_model(model), self.optimizer, self.scaler)
        except (FileNotFoundError, ValueError) as error:
            raise TrainingStartError(str(error)) from error
        self.start_state = start
        self.best_fmeasure = start.best_fmeasure
        self.validated_iteration = start.validated_iteration if start.full else None
        early_note = self._restore_early_stopping(start)
        self.data_seed = self._choose_data_seed(start)
        bind_loader(self.loader, context, 'train.data_loader', self.data_seed)
        self.steps_per_epoch = steps = self.loader.steps_per_epoch
        if steps < 1:
            raise ValueError(f'train.data_loader: {len(self.loader.dataset)} samples give no full batch per process')
        self.global_batch = self.loader.batch_size * context.world_size
        resumed = self._start_position(start)  # may refuse (TrainingStartError) a resume that would skip samples
        # the run has really started: only now its config and checkpoint folder are written
        if self.config is not None and context.is_main:
            logger.save_config(self.config)
        if context.is_main:
            for message in self.saver.bind(options.workspace) or []:
                logger.warning(message)
        if auto_resume:
            logger.info(auto_resume)
        logger.info(start.how)
        if early_note:
            logger.info(early_note)
        if start.report:
            logger.info(start.report)
        if start.offset_compat_note:
            logger.info(start.offset_compat_note)
        if start.integrity:
            logger.info(start.integrity)
        if start.full:
            changed = config_differences(start.config, self.config)
            if changed:
                logger.warning(f'{self.checkpoint.resume}: saved with another config; continuing with this one '
                               f'(changed: {", ".join(changed[:8])}{" ..." if len(changed) > 8 else ""})')
        for level, line in resumed:
            getattr(logger, level)(line)
        self.guard = NonFiniteGuard(unwrap_model(model), self.optimizer, lambda flag: context.any_flags([flag])[0],
                                    self.scaler)
        # ETA: the steps left in this epoch from its position, then whole epochs
        left = self.loader.sampler.span(self.epoch_samples).steps if self.epoch < self.epochs else 0
        self.total_steps = self.iteration + left + max(self.epochs - self.epoch - 1, 0) * steps
        # a schedule that decays over the run's length (PolyIterationLearningRate(iterations=None)) learns it here
        schedule_lines = bind_run_length(self.scheduler.learning_rate, self.total_steps)
        for line in schedule_lines:
            logger.info(line)
        if self.already_stopped:
            logger.info(self._already_stopped_line())
        else:
            logger.info(f'training {type(unwrap_model(model)).__name__} on {self.device} '
                        f'(world size {context.world_size}, global batch {self.global_batch}, {steps} steps/epoch, '
                        f'epochs {self.epoch}..{self.epochs - 1}, from iteration {self.iteration})')
        if self.validator is not None:
            self.validator.context, self.validator.device = context, self.device
            self.validator.channels_last = options.channels_last
        self._restore_rng(start)
        model.train()
        return start

    def _restore_early_stopping(self, start: StartState) -> Optional[str]:
        """The early-stopping state of a resumed full checkpoint; a line for the log when there is something to say
        (validation off, or a checkpoint without that state).

        A state that already says stop (the final checkpoint of a run that early stopping ended, which ``--resume
        auto`` finds as ``latest``) ends this run before its first step, as a rerun of a finished run trains nothing:
        ``finish_reason`` is set and ``already_stopped`` keeps the end of the run from rewriting final, latest and
        best. A larger ``patience`` (or early stopping off) lets it train on."""
        stopping = self.early_stopping
        if stopping is None:
            return None
        if self.validator is None:
            return f'train.early_stopping ({stopping!r}) is set, but validation is off (--validate): no early stopping'
        if start.full:
            if start.early_stopping is not None:
                stopping.load_state_dict(start.early_stopping)
                if stopping.should_stop:
                    self.already_stopped = True
                    self.finish_reason = f'early stopping already ended this run at iteration {start.iteration}'
            else:
                return (f'{self.checkpoint.resume}: no early-stopping state in the checkpoint (written without '
                        'train.early_stopping): counting validations from this start')
        return None

    def _already_stopped_line(self) -> str:
        """The one log line of a rerun that early stopping had already ended: where, and the best checkpoint."""
        directory = self.saver.directory or os.path.join(self.options.workspace or '', self.saver.dir_path)
        best = (f'{os.path.join(directory, "best")} (fmeasure {self.best_fmeasure:.4f})'
                if self.best_fmeasure is not None else 'none (no validation result)')
        return (f'{self.finish_reason}; best: {best}; nothing to train (final, latest and best unchanged; a larger '
                'train.early_stopping.patience continues it)')

    def _start_position(self, start: StartState) -> List[Tuple[str, str]]:
        """Epoch, steps and samples of the epoch where training starts (``epoch``, ``epoch_iteration``,
        ``epoch_samples``, ``iteration``), and the lines to log about it.

        A resumed full checkpoint continues at the sample of its epoch's order after those it consumed, whatever
        the global batch and world size now (``training.checkpoint.plan_resume``); a resume that would skip samples
        of that epoch, or cannot tell which, is refused (``TrainingStartError`` naming them) unless
        ``train.checkpoint.accept_skipped_samples``. Another start counts ``start_iter`` steps of this run's batch.
        ``iteration`` counts steps over the whole run and ``epoch_iteration`` the steps of the epoch, of whichever
        size they were; ``epoch_samples`` the positions of the epoch's order consumed over all ranks. The lines
        come as (logger method, text)."""
        steps = self.steps_per_epoch
        self.epoch, self.epoch_iteration = start.epoch, start.epoch_iteration
        self.iteration = start.iteration if start.iteration is not None else self.epoch * steps + self.epoch_iteration
        if start.full:
            sampler = self.loader.sampler
            try:
                plan = plan_resume(start, len(self.loader.dataset), self.global_batch, self.context.world_size,
                                   sampler.drop_last, sampler.pad, self.checkpoint.accept_skipped_samples,
                                   self.checkpoint.resume or 'the checkpoint', order=sampler.epoch_order(start.epoch))
            except ValueError as error:
                raise TrainingStartError(str(error)) from error
            if plan.epoch != self.epoch:
                self.epoch_iteration = 0
            self.epoch, self.epoch_samples = plan.epoch, plan.epoch_samples
            return [('info', plan.line)]
        lines: List[Tuple[str, str]] = []
        if self.epoch_iteration >= steps:
            if self.epoch_iteration > steps:
                lines.append(('warning', f'start at iteration {self.epoch_iteration} of epoch {self.epoch}, but an '
                                         f'epoch has {steps} steps now; continuing with the next epoch'))
            self.epoch, self.epoch_iteration = self.epoch + 1, 0
        self.epoch_samples = self.epoch_iteration * self.global_batch
        return lines

    def _setup_precision(self) -> None:
        """fp32; or autocast in bf16 (no scaler needed) or fp16 (with a GradScaler): ``--amp`` alone picks bf16
        where the device supports it, else fp16; ``--amp bf16`` / ``--amp fp16`` choose."""
        amp = self.options.amp
        self.autocast_dtype = None
        use_scaler = False
        if amp:
            wanted = amp if amp in ('bf16', 'fp16') else (
                'fp16' if self.device.type == 'cuda' and not torch.cuda.is_bf16_supported() else 'bf16')
            if wanted == 'fp16':
                self.autocast_dtype, use_scaler = torch.float16, True
            else:
                self.autocast_dtype = torch.bfloat16
                if self.device.type == 'cpu' and not cpu_bf16_is_native():
                    self.logger.warning(
                        f'--amp: this CPU (torch capability {torch.backends.cpu.get_cpu_capability()}) has no native '
                        'bf16, so bf16 autocast is emulated and a training step is several times slower than fp32 '
                        '(9x on an AVX2 AMD EPYC); leave --amp out here')
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _build_model(self) -> nn.Module:
        model = self.structure.builder.build()
        if not isinstance(model, nn.Module):
            raise TypeError(f'structure.builder.build(): expected an nn.Module, got {type(model).__name__}')
        model.to(self.device)
        if self.options.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.context.enabled and self.options.seed is not None:
            seed_everything(self.options.seed + self.context.rank)  # same weights (built above), own dropout streams
        return wrap_model(model, self.context, self.device, self.options.num_gpus, self.options.sync_bn)

    def _choose_data_seed(self, start: StartState) -> int:
        if start.full and start.data_seed is not None:
            return int(start.data_seed)
        if self.options.seed is not None:
            return int(self.options.seed)
        return int(self.context.broadcast_object(random.SystemRandom().randrange(2 ** 31)))

    def _restore_rng(self, start: StartState) -> None:
        if not start.full:
            return
        if len(start.rng_states) == self.context.world_size:
            restore_rng_state(start.rng_states[self.context.rank])
        else:
            self.logger.warning(f'{self.checkpoint.resume}: RNG states of {len(start.rng_states)} process(es), this '
                                f'run has {self.context.world_size}; random streams restart (data order stays exact)')

    # -- checkpoints ------------------------------------------------------------------------
    def save(self, step: bool = False, best: bool = False, final: bool = False) -> None:
        """Write the current full state (rank 0; every rank contributes its RNG state): the periodic file
        (``step``), ``final``, or ``best`` (a link to this iteration's file when one was written, else a file)."""
        self._verify_before_save()
        rng_states = self.context.gather_objects(capture_rng_state())
        if self.context.is_main:
            self._write_checkpoint(rng_states, step, best, final)
        # the state written is final: no later failure rolls back a step a checkpoint holds (a resume from it must
        # go on exactly as this run does); every rank, so that the ranks keep taking the same decisions
        self._step_parts()[2].seal()

    def _write_checkpoint(self, rng_states: List[Any], step: bool, best: bool, final: bool) -> None:
        path = None
        if best and self._last_saved is not None and self._last_saved[0] == self.iteration and not (step or final):
            self.saver.mark_best(self._last_saved[1])
            self.logger.info(f'checkpoint {self._last_saved[1]} is the best so far')
            return
        model, optimizer, _ = self._step_parts()
        position = {'epoch_samples': self.epoch_samples, 'epoch_end': self.epoch_end,
                    'global_batch': self.global_batch, 'world_size': self.context.world_size,
                    'dataset_length': len(self.loader.dataset)}
        content = build_checkpoint(unwrap_model(model).state_dict(), optimizer, self.scaler,
                                   self.epoch, self.epoch_iteration, self.iteration, rng_states,
                                   self.best_fmeasure, self.config, self.data_seed,
                                   offset_compat_of(unwrap_model(model)), position,
                                   None if self.early_stopping is None else self.early_stopping.state_dict(),
                                   self.validated_iteration)
        if step:
            path = self.saver.save_step(content, self.epoch, self.iteration)
        if final:
            path = self.saver.save(content, 'final')
            self.saver.link_latest(path)
        if best:
            if path:
                self.saver.mark_best(path)
            else:
                path = self.saver.save(content, 'best')
        if path:
            self._last_saved = (self.iteration, path)
            self.logger.info(f'checkpoint {path}' + (' (best so far)' if best else ''))
