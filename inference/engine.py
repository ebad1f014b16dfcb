"""The inference engine: batches -> probability maps -> detections, sequential or pipelined, with per-stage timing
(``StageTimer``) for ``--speed`` reports (``inference.report``)."""
from __future__ import annotations

import enum
import inspect
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Final, Iterable, Iterator, List, Mapping, Optional, Tuple

import numpy as np


class StageTimer:
    """Seconds spent per stage and the number of images, for ms/image and FPS.

    Sequential runs: ``seconds`` are the three stages' wall times, which add up to ``total``. Pipelined runs
    (stages overlap): ``seconds['data']`` is the producer thread's time getting batches, ``seconds['forward']``
    the network's (the main thread), ``seconds['postprocess']`` the post-processing tasks' summed over their
    threads; ``waits`` says how long the main thread waited for the next batch ('data') and for finished
    post-processing ('postprocess'): where the pipeline is not limited by the network.
    """

    STAGES = ('data', 'forward', 'postprocess')

    def __init__(self):
        self.seconds: Dict[str, float] = {stage: 0.0 for stage in self.STAGES}
        self.waits: Dict[str, float] = {'data': 0.0, 'postprocess': 0.0}
        self.images = 0
        self.total = 0.0

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds


class InferenceResult:
    """One batch through the engine: the batch, its (B, 1, H, W) probability maps and ``output``, what the
    post-processing returned for it; ``boxes`` / ``scores`` read a (boxes_batch, scores_batch) output."""
    __slots__ = ('batch', 'prob', 'output')

    def __init__(self, batch: Mapping[str, Any], prob: np.ndarray, output: Any):
        self.batch, self.prob, self.output = batch, prob, output

    @property
    def boxes(self) -> List[Any]:
        return self.output[0]

    @property
    def scores(self) -> List[List[float]]:
        return self.output[1]


class _Marker(enum.Enum):
    END = enum.auto()


_END: Final = _Marker.END  # the end of the batches (an enum member, so that ``is _END`` narrows the type)


def image_of_batch(batch: Mapping[str, Any], index: int, count: int) -> Dict[str, Any]:
    """The one-image batch of image ``index`` of a batch of ``count``: every list, tuple, array or tensor of
    length ``count`` cut to its entry ``index`` (kept a sequence of one), every other value as it is."""
    single: Dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, (list, tuple)) and len(value) == count:
            single[key] = [value[index]]
        elif hasattr(value, 'shape') and len(getattr(value, 'shape', ())) > 0 and value.shape[0] == count:
            single[key] = value[index:index + 1]
        else:
            single[key] = value
    return single


class InferenceEngine:
    """Batches (dicts with ``image`` (B, 3, H, W) and ``shape``, the original (H, W) per image) -> probability
    maps -> detections in original image coordinates, in input order.

    runner: ``TorchRunner`` / ``OnnxRunner`` (any callable images -> (B, 1, H, W) float32 maps).
    representer: ``SegDetectorRepresenter`` (its ``represent``: (boxes_batch, scores_batch) per batch); or
    ``postprocess``, any callable ``(batch, maps) -> output`` (the evaluation loop, ``inference.evaluation``, gives
    the detections of each evaluator); the output is ``InferenceResult.output``. ``run(..., pipelined=True)``
    overlaps the three stages: a producer
    thread prepares batch i+1 and a consumer thread post-processes batch i-1 while the model runs batch i
    (PyTorch, onnxruntime and OpenCV release the GIL in their heavy parts). Results are the same objects
    computed by the same functions on the same inputs, so detections are identical to the sequential mode.
    post_workers > 1: the images of a batch are post-processed separately, in parallel on that many threads
    (``image_of_batch`` cuts the batch; post-processing is per image, so the results are the same); the
    post-processing must then give (boxes_batch, scores_batch), which are joined.
    """

    def __init__(self, runner: Callable[[Any], np.ndarray], representer: Any = None, is_output_polygon: bool = False,
                 queue_depth: int = 2, postprocess: Optional[Callable[[Mapping[str, Any], np.ndarray], Any]] = None,
                 post_workers: int = 1):
        if (representer is None) == (postprocess is None):
            raise ValueError('InferenceEngine: give exactly one of representer and postprocess')
        self.runner = runner
        self.representer = representer
        self.is_output_polygon = bool(is_output_polygon)
        self.queue_depth = max(1, int(queue_depth))
        self.post_workers = max(1, int(post_workers))
        self._postprocess = postprocess

    def postprocess(self, batch: Mapping[str, Any], prob: np.ndarray) -> Any:
        if self._postprocess is not None:
            return self._postprocess(batch, prob)
        return self.representer.represent(batch, prob, is_output_polygon=self.is_output_polygon)

    def run(self, batches: Iterable[Mapping[str, Any]], pipelined: bool = False,
            timer: Optional[StageTimer] = None, post_workers: Optional[int] = None) -> Iterator[InferenceResult]:
        workers = self.post_workers if post_workers is None else max(1, int(post_workers))
        if pipelined:
            return self._run_pipelined(batches, timer, workers)
        return self._run_sequential(batches, timer, workers)

    def _timed_postprocess(self, batch: Mapping[str, Any], prob: np.ndarray) -> Tuple[Any, float]:
        start = time.perf_counter()
        output = self.postprocess(batch, prob)
        return output, time.perf_counter() - start

    def _submit(self, pool: ThreadPoolExecutor, batch: Mapping[str, Any], prob: np.ndarray, workers: int
                ) -> List[Future]:
        """Post-processing tasks of one batch: one for the batch, or one per image with several workers."""
        count = len(prob)
        if workers <= 1 or count <= 1:
            return [pool.submit(self._timed_postprocess, batch, prob)]
        return [pool.submit(self._timed_postprocess, image_of_batch(batch, index, count), prob[index:index + 1])
                for index in range(count)]

    @staticmethod
    def _gather(futures: List[Future]) -> Tuple[Any, float]:
        """(post-processing output, seconds) of a batch's tasks: the one task's output, or the per-image
        (boxes_batch, scores_batch) outputs joined in order."""
        if len(futures) == 1:
            return futures[0].result()
        boxes: List[Any] = []
        scores: List[List[float]] = []
        seconds = 0.0
        for future in futures:
            (part_boxes, part_scores), part_seconds = future.result()
            boxes.extend(part_boxes)
            scores.extend(part_scores)
            seconds += part_seconds
        return (boxes, scores), seconds

    def _run_sequential(self, batches: Iterable[Mapping[str, Any]], timer: Optional[StageTimer], workers: int
                        ) -> Iterator[InferenceResult]:
        iterator = iter(batches)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix='inference-post') if workers > 1 else None
        try:
            while True:
                start = time.perf_counter()
                batch = next(iterator, _END)
                prepared = time.perf_counter()
                if batch is _END:
                    return
                prob = self.runner(batch['image'])
                forwarded = time.perf_counter()
                if pool is None:
                    output = self.postprocess(batch, prob)
                else:
                    output, _ = self._gather(self._submit(pool, batch, prob, workers))
                done = time.perf_counter()
                if timer is not None:
                    timer.add('data', prepared - start)
                    timer.add('forward', forwarded - prepared)
                    timer.add('postprocess', done - forwarded)
                    timer.images += len(prob)
                    timer.total += done - start
                yield InferenceResult(batch, prob, output)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            _close(iterator)

    def _run_pipelined(self, batches: Iterable[Mapping[str, Any]], timer: Optional[StageTimer], workers: int
                       ) -> Iterator[InferenceResult]:
        prepared: 'queue.Queue[Any]' = queue.Queue(maxsize=self.queue_depth)
        stop = threading.Event()
        producer_seconds = [0.0]

        def hand_over(item: Any) -> bool:
            """Queue ``item`` unless the consumer stopped; never blocks past a stop."""
            while not stop.is_set():
                try:
                    prepared.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            iterator = None
            try:
                iterator = iter(batches)
                while True:
                    begin = time.perf_counter()
                    batch = next(iterator, _END)
                    producer_seconds[0] += time.perf_counter() - begin
                    if batch is _END:
                        break
                    if not hand_over(batch):
                        return
                hand_over(_END)
            except BaseException as error:  # handed to the main thread, which raises it
                hand_over(_Failure(error))
            finally:
                _close(iterator)

        producer = threading.Thread(target=produce, name='inference-data', daemon=True)
        start = time.perf_counter()
        producer.start()
        pending: List[Tuple[Mapping[str, Any], np.ndarray, List[Future]]] = []
        images = 0
        forward_seconds = post_seconds = data_wait = post_wait = 0.0
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix='inference-post') as post:
                while True:
                    waiting = time.perf_counter()
                    batch = prepared.get()
                    begin = time.perf_counter()
                    data_wait += begin - waiting
                    if isinstance(batch, _Failure):
                        raise batch.error
                    if batch is _END:
                        break
                    prob = self.runner(batch['image'])
                    forward_seconds += time.perf_counter() - begin
                    images += len(prob)
                    pending.append((batch, prob, self._submit(post, batch, prob, workers)))
                    while len(pending) > self.queue_depth or (pending and all(f.done() for f in pending[0][2])):
                        waiting = time.perf_counter()
                        result, seconds = self._collect(pending.pop(0))
                        post_wait += time.perf_counter() - waiting
                        post_seconds += seconds
                        yield result
                while pending:
                    waiting = time.perf_counter()
                    result, seconds = self._collect(pending.pop(0))
                    post_wait += time.perf_counter() - waiting
                    post_seconds += seconds
                    yield result
        finally:
            stop.set()
            producer.join(timeout=5)
        if timer is not None:
            timer.images += images
            timer.total += time.perf_counter() - start
            timer.add('data', producer_seconds[0])
            timer.add('forward', forward_seconds)
            timer.add('postprocess', post_seconds)
            timer.waits['data'] += data_wait
            timer.waits['postprocess'] += post_wait

    def _collect(self, entry: Tuple[Mapping[str, Any], np.ndarray, List[Future]]) -> Tuple[InferenceResult, float]:
        batch, prob, futures = entry
        output, seconds = self._gather(futures)
        return InferenceResult(batch, prob, output), seconds


def _close(iterator: Any) -> None:
    """Close a generator the engine stopped reading (its ``finally`` blocks run: thread pools end)."""
    if inspect.isgenerator(iterator):
        iterator.close()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error
