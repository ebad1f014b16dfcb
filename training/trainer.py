"""``Trainer``: the training loop, validation during training, checkpoints and their exact resume."""
from __future__ import annotations

import contextlib
import random
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from concern.cli import cpu_bf16_is_native
from concern.log import Logger
from training.checkpoint import (Checkpoint, PreservedRNG, StartState, build_checkpoint, capture_rng_state,
                                 restore_rng_state)
from training.distributed import (DistributedContext, prepare_train_loader, setup_distributed,
                                  shard_validation_loader, start_epoch, steps_per_epoch, teardown_distributed,
                                  unwrap_model, wrap_model)
from training.model_saver import ModelSaver
from training.optimizer_scheduler import OptimizerScheduler
from training.run_options import RunOptions
from training.signals import StopRequest
from training.visualization import training_images
from structure.measurers import DetectionEvaluator, format_sweep
from structure.model import offset_compat_of


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    try:
        from data.rng import reseed
    except ImportError:
        return
    reseed(seed, stream=(0x5EED,))  # augmentation in the main process (workers reseed from torch's seed)


def config_as_dict(config: Any) -> Optional[Dict[str, Any]]:
    """The compiled config as a plain dict: ``{define: tree}`` for a CompiledConfig, a dict as is."""
    if config is None:
        return None
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, 'tree') and hasattr(config, 'define'):
        return {config.define: config.tree}
    raise TypeError(f'experiment.config: expected a compiled config or a dict, got {type(config).__name__}')


def move_to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    if isinstance(batch, Mapping):
        moved = {key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
                 for key, value in batch.items()}
        if channels_last and isinstance(moved.get('image'), torch.Tensor) and moved['image'].dim() == 4:
            moved['image'] = moved['image'].contiguous(memory_format=torch.channels_last)
        return moved
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return batch


def _as_scalar(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    return float(value)


def describe_batch(batch: Any, epoch: int, epoch_iteration: int) -> str:
    files = batch.get('filename') if isinstance(batch, Mapping) else None
    if files:
        return 'files ' + ', '.join(str(name) for name in files)
    return f'batch {epoch_iteration} of epoch {epoch} (no filename key)'


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
        self.validation = experiment.validation if options.validate else None
        if self.validation is not None:
            for part in ('representer', 'measurer'):
                if getattr(self.structure, part, None) is None:
                    raise ValueError(f'--validate needs structure.{part} in the experiment, got none')
            DetectionEvaluator.from_settings(self.structure, self.validation)  # fails here, not mid-training
        self.logger: Logger = experiment.logger if getattr(experiment, 'logger', None) is not None else Logger()
        self.config = config_as_dict(getattr(experiment, 'config', None))
        self.scheduler: OptimizerScheduler = self.settings.scheduler or OptimizerScheduler()
        self.saver: ModelSaver = self.settings.model_saver or ModelSaver()
        self.checkpoint: Checkpoint = self.settings.checkpoint or Checkpoint()
        self.context = DistributedContext()
        self.device = torch.device('cpu')
        self.model: Optional[nn.Module] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scaler: Any = None
        self.autocast_dtype: Optional[torch.dtype] = None
        self.best_fmeasure: Optional[float] = None
        self.data_seed = 0
        self.train_loader: Any = None
        self._last_validated: Optional[int] = None
        self.last_validation: Dict[str, Dict[str, float]] = {}
        self.last_sweep: Dict[str, Dict[str, Any]] = {}
        self.epoch = 0
        self.epoch_iteration = 0
        self.iteration = 0

    # -- set-up -----------------------------------------------------------------------------
    def _setup_precision(self) -> None:
        self.autocast_dtype = None
        use_scaler = False
        if self.options.amp:
            if self.device.type == 'cuda' and not torch.cuda.is_bf16_supported():
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
            seed_everything(self.options.seed + self.context.rank)  # same weights, different augmentation
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

    # -- the loop ---------------------------------------------------------------------------
    def train(self) -> Dict[str, Any]:
        """Train to the end (or until SIGINT/SIGTERM); returns a summary of where it stopped."""
        options = self.options
        self.context = setup_distributed(options.distributed, options.device, options.local_rank)
        self.device = self.context.device
        anomaly = torch.is_anomaly_enabled()
        try:
            torch.autograd.set_detect_anomaly(options.debug)
            return self._train()
        finally:
            torch.autograd.set_detect_anomaly(anomaly)
            self.logger.close()
            teardown_distributed(self.context)
            self.context = DistributedContext(device=self.device)  # later calls (validate) run single-process

    def _train(self) -> Dict[str, Any]:
        options, context, logger = self.options, self.context, self.logger
        if self.device.type == 'cuda':
            torch.backends.cudnn.benchmark = options.benchmark
            if options.seed is not None and not options.benchmark:
                torch.backends.cudnn.deterministic = True
        if options.seed is not None:
            seed_everything(options.seed)
        logger.open(options.workspace, self.config, rank=context.rank, debug=options.debug)
        self.saver.bind(options.workspace)

        model = self._build_model()
        self.model = model
        self.optimizer = self.scheduler.create_optimizer(model.parameters())
        self._setup_precision()
        start = self.checkpoint.restore(unwrap_model(model), self.optimizer, self.scaler)
        if start.offset_compat_note:
            logger.info(start.offset_compat_note)
        if start.full and self.config is not None and start.config is not None and start.config != self.config:
            logger.warning(f'{self.checkpoint.resume}: saved with a different config; continuing with this one')
        self.best_fmeasure = start.best_fmeasure
        self.data_seed = self._choose_data_seed(start)
        loader, sampler = prepare_train_loader(self.settings.data_loader, context, self.data_seed)
        self.train_loader = loader
        steps = steps_per_epoch(sampler, loader.batch_size, loader.drop_last)
        if steps < 1:
            raise ValueError(f'train.data_loader: {len(loader.dataset)} samples give no full batch of '
                             f'{loader.batch_size} per process (drop_last)')
        epoch, epoch_iteration = start.epoch, start.epoch_iteration
        iteration = start.iteration if start.iteration is not None else epoch * steps + epoch_iteration
        if epoch_iteration >= steps:
            if epoch_iteration > steps:
                logger.warning(f'resume at iteration {epoch_iteration} of epoch {epoch}, but an epoch has {steps} '
                               f'steps now; continuing with the next epoch')
            epoch, epoch_iteration = epoch + 1, 0
        epochs = self.settings.epochs
        global_batch = loader.batch_size * context.world_size
        logger.info(f'training {type(unwrap_model(model)).__name__} on {self.device} '
                    f'(world size {context.world_size}, global batch {global_batch}, {steps} steps/epoch, '
                    f'epochs {epoch}..{epochs - 1}, from iteration {iteration}'
                    + (f', resumed from {self.checkpoint.resume}' if self.checkpoint.resume else '') + ')')
        self._restore_rng(start)

        nan_streak = 0
        interrupted = False
        last_loss: Optional[float] = None
        seconds_per_step: Optional[float] = None
        total_steps = epochs * steps
        model.train()
        with StopRequest() as stop:
            while epoch < epochs and not interrupted:
                start_epoch(loader, sampler, epoch, epoch_iteration, context)
                bar = logger.progress(steps, epoch_iteration, f'epoch {epoch + 1}/{epochs}')
                tick = time.perf_counter()
                for batch in loader:
                    self.epoch, self.epoch_iteration, self.iteration = epoch, epoch_iteration, iteration
                    lr = self.scheduler.apply(self.optimizer, epoch, iteration)
                    batch = move_to_device(batch, self.device, options.channels_last)
                    with self._autocast():
                        loss, pred, metrics = model(batch, training=True)
                    loss = loss.float().mean()
                    local_bad = not bool(torch.isfinite(loss.detach()))
                    signal_file = context.is_main and self.saver.signal_requested()
                    any_bad, stop_flag, save_flag = context.any_flags([local_bad, stop.requested, signal_file])
                    stepped = False
                    if any_bad:
                        self.optimizer.zero_grad(set_to_none=True)
                        where = describe_batch(batch, epoch, epoch_iteration)
                        logger.warning(f'non-finite loss {float(loss.detach())} at iteration {iteration} (epoch {epoch}), '
                                       f'step skipped; {where}' if local_bad else
                                       f'non-finite loss on another rank at iteration {iteration}, step skipped')
                    else:
                        stepped = self._backward_step(loss)
                        if not stepped:
                            logger.warning(f'non-finite gradient norm at iteration {iteration} (epoch {epoch}), step '
                                           f'skipped; {describe_batch(batch, epoch, epoch_iteration)}')
                    nan_streak = 0 if stepped else nan_streak + 1
                    if nan_streak >= options.max_nan_steps:
                        raise FloatingPointError(
                            f'{nan_streak} consecutive steps with a non-finite loss or gradient (last at iteration '
                            f'{iteration}, {describe_batch(batch, epoch, epoch_iteration)}); stopping before the weights '
                            f'are damaged. Check those samples, lower --lr or set --grad_clip.')
                    iteration += 1
                    epoch_iteration += 1
                    self.epoch, self.epoch_iteration, self.iteration = epoch, epoch_iteration, iteration
                    now = time.perf_counter()
                    elapsed, tick = now - tick, now
                    seconds_per_step = elapsed if seconds_per_step is None else 0.9 * seconds_per_step + 0.1 * elapsed
                    if stepped:
                        last_loss = float(loss.detach())
                    bar.update(1)
                    bar.set_postfix_str(f'loss={last_loss if last_loss is None else round(last_loss, 4)} lr={lr:.3g} '
                                        f'samples/s={global_batch / max(seconds_per_step, 1e-9):.1f}', refresh=False)
                    if context.is_main and logger.should_log(iteration):
                        eta = seconds_per_step * (total_steps - iteration)
                        self._log_step(iteration, epoch, last_loss, lr, metrics, batch, pred,
                                       global_batch / max(seconds_per_step, 1e-9), eta)
                    improved = False
                    if self._validation_due(iteration):
                        improved = self._validate_and_track(iteration)
                    if self.saver.due(iteration) or save_flag or stop_flag or improved:
                        self._save(step=self.saver.due(iteration) or save_flag or stop_flag, best=improved)
                        if save_flag and context.is_main:
                            self.saver.clear_signal()
                            logger.info(f'checkpoint saved at iteration {iteration} on request ({self.saver.signal_file})')
                    if stop_flag:
                        interrupted = True
                        logger.warning(f'stop requested (signal); checkpoint saved at iteration {iteration}, stopping')
                        break
                bar.close()
                # data.DataLoader counts the samples its data set skipped; other loaders report nothing
                skipped = int(getattr(self.settings.data_loader, 'take_skipped_count', lambda: 0)())
                if skipped and context.is_main:
                    logger.warning(f'epoch {epoch + 1}: {skipped} unreadable or malformed sample(s) skipped '
                                   '(each named in a warning above); other samples were used in their place')
                if not interrupted:
                    epoch, epoch_iteration = epoch + 1, 0
                    self.epoch, self.epoch_iteration = epoch, epoch_iteration

            if not interrupted:
                improved = False
                if self.validation is not None and self._last_validated != iteration:
                    improved = self._validate_and_track(iteration)
                self._save(final=True, best=improved)
                logger.info(f'training done at iteration {iteration}')
        return {'epoch': epoch, 'epoch_iteration': epoch_iteration, 'iteration': iteration,
                'interrupted': interrupted, 'last_loss': last_loss, 'best_fmeasure': self.best_fmeasure,
                'validation': self.last_validation, 'world_size': self.context.world_size}

    def _backward_step(self, loss: torch.Tensor) -> bool:
        """Backward, optional clipping and the optimizer step; False when the gradient is not finite."""
        optimizer, scaler = self.optimizer, self.scaler
        scaler.scale(loss).backward()
        if self.options.grad_clip is not None:
            scaler.unscale_(optimizer)
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.options.grad_clip)
            if not scaler.is_enabled() and not bool(torch.isfinite(norm)):
                optimizer.zero_grad(set_to_none=True)
                return False
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return True

    def _log_step(self, iteration: int, epoch: int, loss: Optional[float], lr: float, metrics: Any, batch: Any,
                  pred: Any, samples_per_second: float, eta_seconds: float) -> None:
        values = {'lr': lr, 'samples_per_second': samples_per_second}
        if loss is not None:
            values['loss'] = loss
        if isinstance(metrics, Mapping):
            values.update({name: _as_scalar(value) for name, value in metrics.items()})
        text = ' '.join(f'{name}={value:.6g}' for name, value in values.items())
        hours, rest = divmod(int(eta_seconds), 3600)
        self.logger.info(f'epoch {epoch} iteration {iteration} {text} eta {hours}h{rest // 60:02d}m')
        self.logger.scalars(iteration, values, prefix='train/')
        with torch.no_grad():
            self.logger.images(iteration, training_images(batch, pred), prefix='train/')

    # -- checkpoints ------------------------------------------------------------------------
    def _save(self, step: bool = False, best: bool = False, final: bool = False) -> None:
        """Write the current full state (rank 0; every rank contributes its RNG state)."""
        rng_states = self.context.gather_objects(capture_rng_state())
        if not self.context.is_main:
            return
        content = build_checkpoint(unwrap_model(self.model).state_dict(), self.optimizer, self.scaler,
                                   self.epoch, self.epoch_iteration, self.iteration, rng_states,
                                   self.best_fmeasure, self.config, self.data_seed,
                                   offset_compat_of(unwrap_model(self.model)))
        path = None
        if step:
            path = self.saver.save_step(content, self.epoch, self.iteration)
        if final:
            path = self.saver.save(content, 'final')
            self.saver.link_latest(path)
        if best:
            self.saver.mark_best(path) if path else self.saver.save(content, 'best')
        if path:
            self.logger.info(f'checkpoint {path}' + (' (best so far)' if best else ''))

    # -- validation -------------------------------------------------------------------------
    def _validation_due(self, iteration: int) -> bool:
        validation = self.validation
        return (validation is not None and iteration % validation.interval == 0
                and iteration > validation.exempt)

    def _validate_and_track(self, iteration: int) -> bool:
        self._last_validated = iteration
        results = self.validate(self.model, iteration)
        self.last_validation = results
        if not results:
            return False
        first = next(iter(self.validation.data_loaders))
        if first not in results:
            return False
        fmeasure = results[first]['fmeasure']
        if self.best_fmeasure is None or fmeasure > self.best_fmeasure:
            self.best_fmeasure = fmeasure
            return True
        return False

    def validate(self, model: Optional[nn.Module] = None, iteration: Optional[int] = None
                 ) -> Dict[str, Dict[str, float]]:
        """P/R/F per validation loader: ``{name: {'precision', 'recall', 'fmeasure'}}``.

        One ``DetectionEvaluator`` (box_thresh: the representer's) measures each loader: every rank its share
        of the images, the evaluators' states gathered and merged before ``evaluate``. A failing loader (a bad
        sample of a validation set among the causes: it raises by default) is logged with its traceback and left
        out, never raised: validation must not end a training run.
        """
        validation = self.experiment.validation
        if validation is None:
            return {}
        module = unwrap_model(model if model is not None else self.model)
        iteration = self.iteration if iteration is None else iteration
        evaluator = DetectionEvaluator.from_settings(self.structure, validation)
        visualize = self.options.visualize or bool(getattr(validation, 'visualize', False))
        was_training = module.training
        module.eval()
        results: Dict[str, Dict[str, float]] = {}
        try:
            with PreservedRNG(), torch.no_grad():
                for name, loader in validation.data_loaders.items():
                    metrics = self._validate_loader(name, loader, module, evaluator, visualize, iteration)
                    if metrics is not None:
                        results[name] = metrics
        finally:
            module.train(was_training)
        return results

    def _validate_loader(self, name: str, loader: Any, module: nn.Module, evaluator: DetectionEvaluator,
                         visualize: bool, iteration: int) -> Optional[Dict[str, float]]:
        from data.processes.collect_fn import split_bad_samples
        logger, context = self.logger, self.context
        evaluator.reset()
        error = None
        try:
            shard = shard_validation_loader(loader, context, f'validation.data_loaders.{name}')
            shown = False
            for batch in shard:
                batch, bad = split_bad_samples(batch) if isinstance(batch, Mapping) else (batch, [])
                evaluator.skip(bad)
                if batch is None:
                    continue
                batch = move_to_device(batch, self.device, self.options.channels_last)
                pred = module(batch, training=False)
                if isinstance(pred, torch.Tensor):
                    pred = pred.float()
                evaluator.process_prediction(batch, pred)
                if visualize and not shown and context.is_main:
                    logger.images(iteration, training_images(batch, pred), prefix=f'validation/{name}/')
                    shown = True
        except Exception as exception:
            logger.exception(f'validation on {name!r} failed at iteration {iteration}; training goes on')
            error = f'{type(exception).__name__}: {exception}'
        gathered: List[Tuple[Optional[str], Any]] = context.gather_objects((error, evaluator.state()))
        if any(rank_error for rank_error, _ in gathered):
            if error is None:
                logger.error(f'validation on {name!r} failed on another rank; no result this time')
            return None
        result = None
        if context.is_main:  # rank 0 evaluates the union of the shards and hands the figures to the others
            evaluator.merge([state for _, state in gathered])
            try:
                result = evaluator.evaluate()
            except Exception:
                logger.exception(f'validation on {name!r}: evaluation failed at iteration {iteration}')
        metrics = context.broadcast_object(
            None if result is None else {key: result[key] for key in ('precision', 'recall', 'fmeasure')})
        if metrics is not None and context.is_main:
            skipped = result['skipped']
            logger.info(f'validation {name} iteration {iteration}: ' +
                        ' '.join(f'{key}={value:.4f}' for key, value in metrics.items()) +
                        f" ({result['images']} images" + (f', {len(skipped)} skipped' if skipped else '') + ')')
            for message in skipped:
                logger.warning(f'validation on {name!r}: skipped {message}')
            logger.scalars(iteration, metrics, prefix=f'validation/{name}/')
            if result['sweep'] is not None:
                self._report_sweep(name, iteration, result['sweep'])
        return metrics

    def _report_sweep(self, name: str, iteration: int, table: Dict[str, Any]) -> None:
        self.last_sweep[name] = table
        best = table['best']
        self.logger.info(f'validation {name} iteration {iteration}: box_thresh sweep, best '
                         f"box_thresh={best['box_thresh']:.2f} fmeasure={best['fmeasure']:.4f}\n" + format_sweep(table))
        self.logger.scalars(iteration, {'sweep_best_fmeasure': best['fmeasure'],
                                        'sweep_best_box_thresh': best['box_thresh']}, prefix=f'validation/{name}/')
