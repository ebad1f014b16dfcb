"""Validation during training: one ``DetectionEvaluator`` per loader, sharded over the ranks, never fatal."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from inference.evaluation import evaluate_on_dataset
from inference.runners import TorchRunner
from structure.measurers import DetectionEvaluator, format_sweep
from training.batches import bind_loader
from training.checkpoint import PreservedRNG
from training.distributed import DistributedContext, unwrap_model
from training.visualization import training_images


class Validator:
    """P/R/F of a model on the experiment's validation loaders.

    structure: ``experiment.Structure`` (representer, measurer); settings: ``ValidationSettings``; logger: the
    run's ``Logger``; ``context``, ``device``, ``channels_last``: where the model runs; visualize: send the first
    batch's maps to TensorBoard. Raises ValueError at construction when the structure cannot be evaluated.
    """

    def __init__(self, structure: Any, settings: Any, logger: Any, visualize: bool = False):
        DetectionEvaluator.from_settings(structure, settings)  # fails here, not mid-training
        self.structure = structure
        self.settings = settings
        self.logger = logger
        self.visualize = bool(visualize) or bool(getattr(settings, 'visualize', False))
        self.context = DistributedContext()
        self.device = torch.device('cpu')
        self.channels_last = False
        self.last_sweep: Dict[str, Dict[str, Any]] = {}

    def due(self, iteration: int) -> bool:
        return iteration % self.settings.interval == 0 and iteration > self.settings.exempt

    @property
    def first_loader(self) -> str:
        return next(iter(self.settings.data_loaders))

    def validate(self, model: nn.Module, iteration: int) -> Dict[str, Dict[str, float]]:
        """P/R/F per validation loader: ``{name: {'precision', 'recall', 'fmeasure'}}``.

        One ``DetectionEvaluator`` (box_thresh: the representer's) measures each loader: every rank its share
        of the images, the evaluators' states gathered and merged before ``evaluate``. A failing loader (a bad
        sample of a validation set among the causes: it raises by default) is logged with its traceback and left
        out, never raised: validation must not end a training run.
        """
        validation = self.settings
        module = unwrap_model(model)
        evaluator = DetectionEvaluator.from_settings(self.structure, validation)
        visualize = self.visualize
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
        logger, context = self.logger, self.context
        evaluator.reset()
        error = None
        try:
            shard = bind_loader(loader, context, f'validation.data_loaders.{name}')
            shown: List[bool] = []

            def show_first(result: Any, measured: List[Any]) -> None:
                if visualize and not shown and context.is_main:
                    logger.images(iteration, training_images(result.batch, torch.from_numpy(result.prob)),
                                  prefix=f'validation/{name}/')
                    shown.append(True)

            runner = TorchRunner(module, self.device, 'fp32', self.channels_last)
            evaluate_on_dataset(runner, shard, [evaluator], on_result=show_first)
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
            assert result is not None  # rank 0 broadcast metrics made of its result
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
