"""What eval.py, demo.py, convert_to_onnx.py and the inference benchmark share.

* preprocessing (NumPy / OpenCV only): resizing to the input size (``data.input_size.InputSize``, the one rule)
  and normalisation (images are read by ``data.image_io.read_image``, the one reader);
* runners that turn a (B, 3, H, W) float32 input into (B, 1, H, W) float32 probability maps: ``TorchRunner``
  (precision, channels-last) and ``OnnxRunner`` (onnxruntime, no torch needed);
* ``InferenceEngine``: batches -> probability maps -> detections, sequential or pipelined (data preparation in a
  producer thread and post-processing in a consumer thread while the model runs the next batch), with
  per-stage timing for ``--speed``.

torch is imported lazily so that the ONNX path runs without it.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from concern.normalization import normalize

# BGR means of the training images (NormalizeImage); released checkpoints were trained with exactly these.
PRECISIONS = ('fp32', 'fp16', 'bf16')


# ---------------------------------------------------------------------------------------------- checkpoints
def load_trained_model(builder: Any, checkpoint_path: Optional[str], device: Any = 'cpu',
                       log: Optional[Callable[[str], None]] = None) -> Any:
    """A model from ``builder`` with the weights of ``checkpoint_path``, in eval mode on ``device``.

    Every key and shape must fit: a checkpoint of another architecture, or a file that is not a checkpoint,
    is a ``ValueError`` naming the file; a missing file a ``FileNotFoundError``. Never random weights.
    A ResNet backbone runs with the offset mode of the weights (``structure.model.decide_offset_compat``); where
    the mode changes the computation, ``log`` (default: standard error) gets one line saying which and why, and
    the keys left out as harmless (the original's unused ``backbone.fc`` / ``smooth``) are reported there too.
    """
    import torch
    from structure.checkpoint_io import read_weights_file
    from structure.model import OffsetCompatConflict, load_model_state, offset_compat_note
    if not checkpoint_path:
        raise ValueError('a checkpoint is required (--resume PATH)')
    content = read_weights_file(checkpoint_path)  # FileNotFoundError / ValueError naming the file
    # The checkpoint supplies every weight: never load (or download) ImageNet initialisation here.
    backbone_args = dict(getattr(builder, 'model_args', {}).get('backbone_args') or {})
    if backbone_args.get('pretrained'):
        backbone_args.update(pretrained=False, allow_download=False)
        model = builder.build(backbone_args=backbone_args)
    else:
        model = builder.build()
    try:
        report = load_model_state(model, content, strict=True, source=checkpoint_path)
    except OffsetCompatConflict:
        raise
    except TypeError as error:  # a torch file holding something other than a dict
        raise ValueError(f'{checkpoint_path}: not a state dict or checkpoint: {error}') from error
    except ValueError as error:
        raise ValueError(f"{checkpoint_path}: does not fit this experiment's model ({builder.model}, "
                         f"{builder.model_args.get('backbone')}): {error}") from error
    for line in (offset_compat_note(report.offset_compat), report.text):
        if line:
            (log or _print_to_stderr)(line)
    return model.to(torch.device(device)).eval()


def _print_to_stderr(message: str) -> None:
    import sys
    print(message, file=sys.stderr)


# ---------------------------------------------------------------------------------------------- preprocessing
def prepare_image(image_bgr: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resize to ``size`` (height, width) and normalise: float32 (1, 3, H, W)."""
    import cv2
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f'image: expected (H, W, 3) BGR, got shape {image_bgr.shape}')
    resized = cv2.resize(image_bgr, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    return normalize(resized)[None]


# ---------------------------------------------------------------------------------------------- runners
class TorchRunner:
    """A PyTorch model as ``images -> (B, 1, H, W) float32 NumPy maps``.

    precision: 'fp32', 'fp16' or 'bf16' (weights and activations converted; deformable convolutions stay in
    float32 because the compiled CPU kernels only take float32/float64). channels_last: NHWC memory format.
    The returned map is on the CPU, so a CUDA forward is complete (synchronised) when the call returns.
    """

    def __init__(self, model: Any, device: Any = 'cpu', precision: str = 'fp32', channels_last: bool = False):
        import torch
        if precision not in PRECISIONS:
            raise ValueError(f'precision: expected one of {PRECISIONS}, got {precision!r}')
        self.device = torch.device(device)
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.dtype = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}[precision]
        model = model.to(self.device).eval()
        if self.dtype != torch.float32:
            model = model.to(self.dtype)
            _keep_deformable_in_float32(model, self.dtype)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model

    def describe(self) -> str:
        import torch
        return (f'PyTorch {torch.__version__}, device {self.device}, dtype {self.precision}, '
                f'{"channels-last" if self.channels_last else "contiguous NCHW"}, {torch.get_num_threads()} threads')

    def __call__(self, images: Any) -> np.ndarray:
        import torch
        tensor = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
        tensor = tensor.to(self.device, dtype=self.dtype, non_blocking=True)
        if self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            pred = self.model(tensor, training=False)
        if isinstance(pred, Mapping):
            pred = pred['binary']
        return pred.float().cpu().numpy()


def _keep_deformable_in_float32(model: Any, dtype: Any) -> None:
    """Deformable convolutions back to float32, their inputs cast up and their output cast back to ``dtype``."""
    import torch
    from assets.ops.dcn import DeformConv, ModulatedDeformConv

    def cast_inputs(module: Any, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
        return tuple(arg.float() if torch.is_tensor(arg) and arg.is_floating_point() else arg for arg in args)

    def cast_output(module: Any, args: Tuple[Any, ...], output: Any) -> Any:
        return output.to(dtype)

    for module in model.modules():
        if isinstance(module, (DeformConv, ModulatedDeformConv)):
            module.float()
            module.register_forward_pre_hook(cast_inputs)
            module.register_forward_hook(cast_output)


class OnnxRunner:
    """An exported model (convert_to_onnx.py) run by onnxruntime on the CPU; NumPy in, NumPy out, no torch."""

    def __init__(self, path: str, threads: Optional[int] = None):
        if not os.path.isfile(path):
            raise FileNotFoundError(f'ONNX model not found: {path}')
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError('running an ONNX model needs onnxruntime: pip install onnxruntime '
                              "(or pip install '.[onnx]')") from error
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        except Exception as error:  # onnxruntime raises its own exception types for invalid models
            raise ValueError(f'{path}: onnxruntime cannot load it: {error}') from error
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f'{path}: expected one (B, 3, H, W) input, got '
                             f'{[(item.name, item.shape) for item in inputs]}')
        self.input_name = inputs[0].name
        self.version = onnxruntime.__version__
        self.threads = threads

    def describe(self) -> str:
        return f'onnxruntime {self.version}, CPU, dtype fp32, {self.threads or "default"} threads'

    def __call__(self, images: Any) -> np.ndarray:
        if not isinstance(images, np.ndarray):
            images = images.detach().cpu().numpy()  # a torch tensor from an evaluation loader
        prob = self.session.run(None, {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]
        return prob.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------- engine
class StageTimer:
    """Seconds spent per stage and the number of images, for ms/image and FPS."""

    STAGES = ('data', 'forward', 'postprocess')

    def __init__(self):
        self.seconds: Dict[str, float] = {stage: 0.0 for stage in self.STAGES}
        self.images = 0
        self.total = 0.0

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds


class InferenceResult:
    __slots__ = ('batch', 'prob', 'boxes', 'scores')

    def __init__(self, batch: Mapping[str, Any], prob: np.ndarray, boxes: List[Any], scores: List[List[float]]):
        self.batch, self.prob, self.boxes, self.scores = batch, prob, boxes, scores


_END = object()


class InferenceEngine:
    """Batches (dicts with ``image`` (B, 3, H, W) and ``shape``, the original (H, W) per image) -> probability
    maps -> detections in original image coordinates, in input order.

    runner: ``TorchRunner`` / ``OnnxRunner`` (any callable images -> (B, 1, H, W) float32 maps).
    representer: ``SegDetectorRepresenter``; or ``postprocess``, any callable ``(batch, maps) -> (boxes_batch,
    scores_batch)`` (eval.py passes ``DetectionEvaluator.detect``). ``run(..., pipelined=True)`` overlaps the three stages: a producer
    thread prepares batch i+1 and a consumer thread post-processes batch i-1 while the model runs batch i
    (PyTorch, onnxruntime and OpenCV release the GIL in their heavy parts). Results are the same objects
    computed by the same functions on the same inputs, so detections are identical to the sequential mode.
    """

    def __init__(self, runner: Callable[[Any], np.ndarray], representer: Any = None, is_output_polygon: bool = False,
                 queue_depth: int = 2, postprocess: Optional[Callable[[Mapping[str, Any], np.ndarray], Any]] = None):
        if (representer is None) == (postprocess is None):
            raise ValueError('InferenceEngine: give exactly one of representer and postprocess')
        self.runner = runner
        self.representer = representer
        self.is_output_polygon = bool(is_output_polygon)
        self.queue_depth = max(1, int(queue_depth))
        self._postprocess = postprocess

    def postprocess(self, batch: Mapping[str, Any], prob: np.ndarray) -> Tuple[List[Any], List[List[float]]]:
        if self._postprocess is not None:
            return self._postprocess(batch, prob)
        return self.representer.represent(batch, prob, is_output_polygon=self.is_output_polygon)

    def run(self, batches: Iterable[Mapping[str, Any]], pipelined: bool = False,
            timer: Optional[StageTimer] = None) -> Iterator[InferenceResult]:
        if pipelined:
            return self._run_pipelined(batches, timer)
        return self._run_sequential(batches, timer)

    def _run_sequential(self, batches: Iterable[Mapping[str, Any]], timer: Optional[StageTimer]
                        ) -> Iterator[InferenceResult]:
        iterator = iter(batches)
        while True:
            start = time.perf_counter()
            batch = next(iterator, _END)
            prepared = time.perf_counter()
            if batch is _END:
                return
            prob = self.runner(batch['image'])
            forwarded = time.perf_counter()
            boxes, scores = self.postprocess(batch, prob)
            done = time.perf_counter()
            if timer is not None:
                timer.add('data', prepared - start)
                timer.add('forward', forwarded - prepared)
                timer.add('postprocess', done - forwarded)
                timer.images += len(prob)
                timer.total += done - start
            yield InferenceResult(batch, prob, boxes, scores)

    def _run_pipelined(self, batches: Iterable[Mapping[str, Any]], timer: Optional[StageTimer]
                       ) -> Iterator[InferenceResult]:
        prepared: 'queue.Queue[Any]' = queue.Queue(maxsize=self.queue_depth)
        stop = threading.Event()

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
            try:
                for batch in batches:
                    if not hand_over(batch):
                        return
                hand_over(_END)
            except BaseException as error:  # handed to the main thread, which raises it
                hand_over(_Failure(error))

        producer = threading.Thread(target=produce, name='inference-data', daemon=True)
        start = time.perf_counter()
        producer.start()
        pending: List[Tuple[Mapping[str, Any], np.ndarray, Future]] = []
        images = 0
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix='inference-post') as post:
                while True:
                    batch = prepared.get()
                    if isinstance(batch, _Failure):
                        raise batch.error
                    if batch is _END:
                        break
                    prob = self.runner(batch['image'])
                    images += len(prob)
                    pending.append((batch, prob, post.submit(self.postprocess, batch, prob)))
                    while len(pending) > self.queue_depth or (pending and pending[0][2].done()):
                        yield self._collect(pending.pop(0))
                while pending:
                    yield self._collect(pending.pop(0))
        finally:
            stop.set()
            producer.join(timeout=5)
        if timer is not None:
            timer.images += images
            timer.total += time.perf_counter() - start

    @staticmethod
    def _collect(entry: Tuple[Mapping[str, Any], np.ndarray, Future]) -> InferenceResult:
        batch, prob, future = entry
        boxes, scores = future.result()
        return InferenceResult(batch, prob, boxes, scores)


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


# ---------------------------------------------------------------------------------------------- reports
def stage_rows(timer: StageTimer) -> List[Tuple[str, float, float]]:
    """(stage, ms per image, images per second) for each timed stage and end to end."""
    rows = []
    count = max(timer.images, 1)
    for stage in StageTimer.STAGES:
        seconds = timer.seconds[stage]
        rows.append((stage, 1e3 * seconds / count, count / seconds if seconds > 0 else float('inf')))
    rows.append(('end-to-end', 1e3 * timer.total / count, count / timer.total if timer.total > 0 else float('inf')))
    return rows


def format_speed(sequential: StageTimer, pipelined: Optional[StageTimer], header: Mapping[str, Any]) -> str:
    """The --speed report: context lines, then a Markdown table of stages."""
    lines = [f'{key}: {value}' for key, value in header.items()]
    lines += ['', '| stage | ms / image | images / s |', '|---|---|---|']
    for stage, milliseconds, fps in stage_rows(sequential):
        lines.append(f'| {stage} (sequential) | {milliseconds:.2f} | {fps:.2f} |')
    if pipelined is not None:
        _, milliseconds, fps = stage_rows(pipelined)[-1]
        lines.append(f'| end-to-end (pipelined) | {milliseconds:.2f} | {fps:.2f} |')
    return '\n'.join(lines)


def same_detections(first: Sequence[InferenceResult], second: Sequence[InferenceResult]) -> bool:
    """Whether two runs gave the same boxes (exact integer coordinates) and scores (exact floats) per image."""
    if len(first) != len(second):
        return False
    for a, b in zip(first, second):
        if len(a.boxes) != len(b.boxes) or [list(s) for s in a.scores] != [list(s) for s in b.scores]:
            return False
        for boxes_a, boxes_b in zip(a.boxes, b.boxes):
            if len(boxes_a) != len(boxes_b) or not all(np.array_equal(x, y) for x, y in zip(boxes_a, boxes_b)):
                return False
    return True


def thread_count() -> int:
    try:
        import torch
        return torch.get_num_threads()
    except ImportError:
        return os.cpu_count() or 1


