"""The one evaluation loop: a loader's batches through a runner into evaluators (detectron2's
``inference_on_dataset`` is the model). eval.py, validation during training, ``make demo`` and
``convert_to_onnx.py --evaluate`` all measure with ``evaluate_on_dataset``; timing (``StageTimer``) and the
progress bar live here and nowhere else.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

from data.processes.collect_fn import split_bad_samples
from inference.engine import InferenceEngine, InferenceResult, StageTimer


def usable_batches(loader: Iterable[Any], evaluators: Union[Any, Iterable[Any]]) -> Iterator[Any]:
    """The loader's batches without their bad samples, each bad sample recorded as skipped by the evaluator, or by
    every evaluator of an iterable (their ``skip``); a batch left without an image is not yielded. Batches that
    are not mappings (no ``bad_samples`` key possible) pass through unchanged."""
    targets = [evaluators] if hasattr(evaluators, 'skip') else list(evaluators)
    for batch in loader:
        batch, bad = split_bad_samples(batch) if isinstance(batch, Mapping) else (batch, [])
        if bad:
            for evaluator in targets:
                evaluator.skip(bad)
        if batch is not None:
            yield batch


@dataclass
class EvaluationPass:
    """What one pass measured: ``images`` fed to the runner and the wall-clock ``seconds`` of the pass."""
    images: int
    seconds: float


def evaluate_on_dataset(runner: Callable[[Any], Any], loader: Iterable[Any], evaluators: Sequence[Any], *,
                        pipelined: bool = False, timer: Optional[StageTimer] = None,
                        on_result: Optional[Callable[[InferenceResult, List[Any]], None]] = None,
                        progress: Optional[str] = None, reset: bool = True) -> EvaluationPass:
    """Run every usable batch of ``loader`` through ``runner`` once and feed each evaluator.

    runner: images (B, 3, H, W) -> (B, 1, H, W) probability maps (``TorchRunner``, ``OnnxRunner``, any callable).
    evaluators: ``DetectionEvaluator`` objects (``reset`` / ``skip`` / ``detect`` / ``process``), e.g. one per
    mode (box, polygon), all fed from the same forward pass; each is reset first unless ``reset`` is False.
    Bad samples of the loader (``ICDARCollectFN`` with ``on_bad_sample: skip``) are recorded in every evaluator
    and never measured (``usable_batches``). pipelined: data, network and post-processing overlap in threads
    (``InferenceEngine``; the same detections). timer: filled with seconds per stage. on_result: called per
    batch with the engine's result and each evaluator's measured (boxes_batch, scores_batch), in evaluator
    order (pictures, result files). progress: a description for a tqdm progress bar on standard error (None: no
    bar). The evaluators' ``evaluate()`` (or ``state()`` / ``merge`` across processes first) gives the figures.
    """
    evaluators = list(evaluators)
    if not evaluators:
        raise ValueError('evaluate_on_dataset: expected at least one evaluator')
    if reset:
        for evaluator in evaluators:
            evaluator.reset()

    def detect_all(batch: Mapping[str, Any], prob: Any) -> List[Any]:
        return [evaluator.detect(batch, prob) for evaluator in evaluators]

    engine = InferenceEngine(runner, postprocess=detect_all)
    bar = None
    if progress is not None:
        from tqdm import tqdm
        bar = tqdm(desc=progress, unit='image', leave=False)
    images = 0
    start = time.perf_counter()
    try:
        for result in engine.run(usable_batches(loader, evaluators), pipelined=pipelined, timer=timer):
            measured = [evaluator.process(result.batch, detections)
                        for evaluator, detections in zip(evaluators, result.output)]
            count = len(result.prob)
            images += count
            if bar is not None:
                bar.update(count)
            if on_result is not None:
                on_result(result, measured)
    finally:
        if bar is not None:
            bar.close()
    return EvaluationPass(images, time.perf_counter() - start)
