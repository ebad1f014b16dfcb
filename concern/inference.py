"""What eval.py, demo.py, convert_to_onnx.py and the inference benchmark share.

* preprocessing (NumPy / OpenCV only): resizing to the input size (``data.input_size.InputSize``, the one rule)
  and normalisation (images are read by ``data.image_io.read_image``, the one reader);
* runners that turn a (B, 3, H, W) float32 input into (B, 1, H, W) float32 probability maps: ``TorchRunner``
  (precision, channels-last) and ``OnnxRunner`` (onnxruntime, no torch needed);
* ``InferenceEngine``: batches -> probability maps -> detections, sequential or pipelined (data preparation in a
  producer thread and post-processing in a consumer thread, or per image on a thread pool, while the model runs
  the next batch), with per-stage timing for ``--speed``;
* ``CudaGraphForward``: a forward captured in a CUDA graph for one input shape and replayed.

torch is imported lazily so that the ONNX path runs without it.
"""
from __future__ import annotations

import inspect
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


def stack_inputs(runner: Any, arrays: Sequence[np.ndarray]) -> Any:
    """(1, 3, H, W) float32 inputs of one size -> a batch for ``runner``: its ``stack`` when it has one
    (``TorchRunner``: page-locked memory for CUDA), else the one array or their concatenation."""
    stack = getattr(runner, 'stack', None)
    if stack is not None:
        return stack(arrays)
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)


# ---------------------------------------------------------------------------------------------- runners
class TorchRunner:
    """A PyTorch model as ``images -> (B, 1, H, W) float32 NumPy maps``.

    precision: 'fp32', 'fp16' or 'bf16' (weights and activations converted), or 'auto' (``resolve_precision``:
    on the CPU bf16 where oneDNN runs it natively, else fp32; fp16 on CUDA). Deformable convolutions stay in
    float32 where their kernels need it (the compiled CPU kernels take float16 nowhere and bfloat16 for inference
    only; torchvision's op, the fallback, has no bfloat16): their inputs are cast up and their output back. With
    the extension (CUDA kernels in float16/bfloat16 with float32 accumulation; the CPU bfloat16 inference path)
    they run in the network's dtype; their offsets then come from the offset convolution in that dtype (bf16
    offsets are rounded to 8 significant bits: 1/64 pixel at 4 pixels), and only the sampling arithmetic after
    that is float32.
    channels_last: NHWC memory format.
    cuda_graphs: CUDA only; the forward of each input shape is captured once in a CUDA graph
    (``CudaGraphForward``) and replayed, which removes the per-kernel launch cost of small batches. Each
    captured shape keeps its own activation memory; the ``graph_cache`` most recent shapes are kept.
    The returned map is on the CPU, so a CUDA forward is complete (synchronised) when the call returns.
    On CUDA the input goes to the GPU in float32 and is converted there (the same rounding as on the CPU);
    ``stack`` puts a batch into page-locked memory so that the copy is a fast DMA.
    """

    def __init__(self, model: Any, device: Any = 'cpu', precision: str = 'fp32', channels_last: bool = False,
                 cuda_graphs: bool = False, graph_cache: int = 8):
        import torch
        if precision not in PRECISIONS + ('auto',):
            raise ValueError(f'precision: expected one of {PRECISIONS + ("auto",)}, got {precision!r}')
        self.device = torch.device(device)
        self.precision_reason = f'{precision} as asked'
        if precision == 'auto':
            precision, self.precision_reason = resolve_precision(self.device)
        if cuda_graphs and self.device.type != 'cuda':
            raise ValueError(f'cuda_graphs: CUDA graphs need a CUDA device, got device {self.device}')
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.cuda_graphs = bool(cuda_graphs)
        self.graph_cache = max(1, int(graph_cache))
        self._graphs: 'Dict[Tuple[Any, ...], CudaGraphForward]' = {}
        self.dtype = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}[precision]
        model = model.to(self.device).eval()
        self.deformable_dtype = self.dtype
        if self.dtype != torch.float32:
            model = model.to(self.dtype)
            if not _reduced_precision_deformable(self.device, self.dtype):
                _keep_deformable_in_float32(model, self.dtype)
                self.deformable_dtype = torch.float32
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model

    def describe(self) -> str:
        import torch
        text = (f'PyTorch {torch.__version__}, device {self.device}, dtype {self.precision} ({self.precision_reason}), '
                f'{"channels-last" if self.channels_last else "contiguous NCHW"}, {torch.get_num_threads()} threads')
        if self.deformable_dtype != self.dtype:
            text += ', deformable convolutions in float32'
        if self.cuda_graphs:
            text += ', CUDA graphs'
        return text

    def stack(self, arrays: Sequence[np.ndarray]) -> Any:
        """(1, 3, H, W) float32 inputs of the same size -> this runner's batch input: an array on the CPU (the
        one array itself for a batch of one), a page-locked float32 CPU tensor for a CUDA device."""
        if self.device.type != 'cuda':
            return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
        import torch
        first = arrays[0]
        pinned = torch.empty((sum(len(array) for array in arrays),) + tuple(first.shape[1:]), dtype=torch.float32,
                             pin_memory=True)
        np.concatenate(arrays, axis=0, out=pinned.numpy())
        return pinned

    def __call__(self, images: Any) -> np.ndarray:
        import torch
        tensor = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
        if self.device.type == 'cuda':
            # float32 over the bus (page-locked: asynchronous), then converted on the GPU
            tensor = tensor.to(self.device, non_blocking=True).to(self.dtype)
        else:
            tensor = tensor.to(self.device, dtype=self.dtype, non_blocking=True)
        if self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        if self.cuda_graphs:
            pred = self._graphed(tensor)
        else:
            with torch.inference_mode():
                pred = self.forward(tensor)
        return pred.float().cpu().numpy()

    def forward(self, tensor: Any) -> Any:
        """The network's probability map of a prepared (device, dtype, layout) input tensor."""
        pred = self.model(tensor, training=False)
        if isinstance(pred, Mapping):
            pred = pred['binary']
        return pred

    def _graphed(self, tensor: Any) -> Any:
        key = (tuple(tensor.shape), tensor.dtype, tuple(tensor.stride()))
        graph = self._graphs.get(key)
        if graph is None:
            while len(self._graphs) >= self.graph_cache:
                self._graphs.pop(next(iter(self._graphs)))  # the oldest shape; its memory goes with it
            graph = self._graphs[key] = CudaGraphForward(self.forward, tensor)
        return graph(tensor)


class CudaGraphForward:
    """``forward`` (tensor -> tensor) captured in a CUDA graph for the shape, dtype and layout of ``example``
    and replayed: ``graph(x)`` copies ``x`` into the captured input and returns the captured output tensor,
    which the next call overwrites (copy it out first). Warm-up runs (``warmup``, on a side stream, as the
    CUDA-graph documentation asks; cuDNN's autotuning happens there) precede the capture, which is done in
    thread-local error mode so that other threads (data preparation, post-processing) may use CUDA meanwhile.
    Replay runs the captured kernels on the same data, so its output is the eager forward's."""

    def __init__(self, forward: Callable[[Any], Any], example: Any, warmup: int = 2):
        import torch
        if example.device.type != 'cuda':
            raise ValueError(f'CudaGraphForward: a CUDA tensor is needed, got one on {example.device}')
        self.forward = forward
        self.static_input = torch.empty_like(example)
        self.static_input.copy_(example)
        current = torch.cuda.current_stream(example.device)
        side = torch.cuda.Stream(device=example.device)
        side.wait_stream(current)
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(max(1, int(warmup))):
                forward(self.static_input)
        current.wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph, capture_error_mode='thread_local'):
            self.static_output = forward(self.static_input)

    def __call__(self, tensor: Any) -> Any:
        if tensor.shape != self.static_input.shape or tensor.dtype != self.static_input.dtype:
            raise ValueError(f'CudaGraphForward: captured for {tuple(self.static_input.shape)} '
                             f'{self.static_input.dtype}, got {tuple(tensor.shape)} {tensor.dtype}')
        if tensor.data_ptr() != self.static_input.data_ptr():
            self.static_input.copy_(tensor)
        self.graph.replay()
        return self.static_output


def cpu_bf16_is_native() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX). Without them bf16 is emulated: on an AVX2-only
    CPU a training step of the synthetic demo took 27 s instead of 3.0 s in fp32 (ResNet-18 DCN, batch 8, 256x256,
    channels-last, AMD EPYC, 2 cores). oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is not
    used: it also accepts AVX-512 CPUs without AVX512-BF16 (Skylake to Ice Lake Xeons), where bf16 is emulated."""
    import torch
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older torch without these helpers
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False


def resolve_precision(device: Any) -> Tuple[str, str]:
    """The inference precision ``'auto'`` stands for on ``device``, and why: on the CPU bf16 where the CPU has bf16
    instructions (AVX512-BF16, AMX; ``cpu_bf16_is_native``), else fp32 (emulated bf16 is several times slower); on
    CUDA fp16. benchmarks/bench_inference.py times the choice beside fp32 on the CPU."""
    import torch
    device = torch.device(device)
    if device.type == 'cuda':
        return 'fp16', 'auto: fp16 on CUDA'
    capability = torch.backends.cpu.get_cpu_capability()
    if cpu_bf16_is_native():
        return 'bf16', f'auto: this CPU runs bf16 natively ({capability})'
    return 'fp32', f'auto: this CPU has no native bf16 ({capability})'


def _reduced_precision_deformable(device: Any, dtype: Any) -> bool:
    """Whether deformable convolutions can run in ``dtype`` (float16/bfloat16) on ``device`` under the backend
    selection in force: CUDA with the extension's CUDA kernels, or bfloat16 on the CPU with the extension's bfloat16
    inference path (bfloat16 image, columns and product, float32 sampling positions)."""
    import torch
    from assets.ops.dcn import active_backend, extension_has_cpu_bf16, extension_has_cuda
    if device.type == 'cuda':
        return extension_has_cuda() and active_backend(device) == 'extension'
    if device.type == 'cpu' and dtype == torch.bfloat16:
        return extension_has_cpu_bf16() and active_backend(device) == 'extension'
    return False


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


def _onnx_weight_type(path: str) -> str:
    """'int8' for a quantized export (QuantizeLinear / DequantizeLinear nodes, convert_to_onnx.py --int8), else
    'fp32'; 'fp32 or int8' when the onnx package is not there to read the graph."""
    try:
        import onnx
        graph = onnx.load(path, load_external_data=False).graph
    except Exception:  # onnx missing or an unreadable file (onnxruntime loaded it, so the model itself is fine)
        return 'fp32 or int8'
    quantized = any(node.op_type in ('QuantizeLinear', 'DequantizeLinear', 'QLinearConv') for node in graph.node)
    return 'int8' if quantized else 'fp32'


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
        self.path = path

    def describe(self) -> str:
        # the graph is read again only here (its node types say whether it is an int8 export), not at construction
        return (f'onnxruntime {self.version}, CPU, dtype {_onnx_weight_type(self.path)}, '
                f'{self.threads or "default"} threads')

    def __call__(self, images: Any) -> np.ndarray:
        if not isinstance(images, np.ndarray):
            images = images.detach().cpu().numpy()  # a torch tensor from an evaluation loader
        prob = self.session.run(None, {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]
        return prob.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------- engine
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
    __slots__ = ('batch', 'prob', 'boxes', 'scores')

    def __init__(self, batch: Mapping[str, Any], prob: np.ndarray, boxes: List[Any], scores: List[List[float]]):
        self.batch, self.prob, self.boxes, self.scores = batch, prob, boxes, scores


_END = object()


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
    representer: ``SegDetectorRepresenter``; or ``postprocess``, any callable ``(batch, maps) -> (boxes_batch,
    scores_batch)`` (eval.py passes ``DetectionEvaluator.detect``). ``run(..., pipelined=True)`` overlaps the three stages: a producer
    thread prepares batch i+1 and a consumer thread post-processes batch i-1 while the model runs batch i
    (PyTorch, onnxruntime and OpenCV release the GIL in their heavy parts). Results are the same objects
    computed by the same functions on the same inputs, so detections are identical to the sequential mode.
    post_workers > 1: the images of a batch are post-processed separately, in parallel on that many threads
    (``image_of_batch`` cuts the batch; post-processing is per image, so the results are the same).
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

    def postprocess(self, batch: Mapping[str, Any], prob: np.ndarray) -> Tuple[List[Any], List[List[float]]]:
        if self._postprocess is not None:
            return self._postprocess(batch, prob)
        return self.representer.represent(batch, prob, is_output_polygon=self.is_output_polygon)

    def run(self, batches: Iterable[Mapping[str, Any]], pipelined: bool = False,
            timer: Optional[StageTimer] = None, post_workers: Optional[int] = None) -> Iterator[InferenceResult]:
        workers = self.post_workers if post_workers is None else max(1, int(post_workers))
        if pipelined:
            return self._run_pipelined(batches, timer, workers)
        return self._run_sequential(batches, timer, workers)

    def _timed_postprocess(self, batch: Mapping[str, Any], prob: np.ndarray) -> Tuple[Any, Any, float]:
        start = time.perf_counter()
        boxes, scores = self.postprocess(batch, prob)
        return boxes, scores, time.perf_counter() - start

    def _submit(self, pool: ThreadPoolExecutor, batch: Mapping[str, Any], prob: np.ndarray, workers: int
                ) -> List[Future]:
        """Post-processing tasks of one batch: one for the batch, or one per image with several workers."""
        count = len(prob)
        if workers <= 1 or count <= 1:
            return [pool.submit(self._timed_postprocess, batch, prob)]
        return [pool.submit(self._timed_postprocess, image_of_batch(batch, index, count), prob[index:index + 1])
                for index in range(count)]

    @staticmethod
    def _gather(futures: List[Future]) -> Tuple[List[Any], List[List[float]], float]:
        """(boxes per image, scores per image, post-processing seconds) of a batch's tasks, in order."""
        boxes: List[Any] = []
        scores: List[List[float]] = []
        seconds = 0.0
        for future in futures:
            part_boxes, part_scores, part_seconds = future.result()
            boxes.extend(part_boxes)
            scores.extend(part_scores)
            seconds += part_seconds
        return boxes, scores, seconds

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
                    boxes, scores = self.postprocess(batch, prob)
                else:
                    boxes, scores, _ = self._gather(self._submit(pool, batch, prob, workers))
                done = time.perf_counter()
                if timer is not None:
                    timer.add('data', prepared - start)
                    timer.add('forward', forwarded - prepared)
                    timer.add('postprocess', done - forwarded)
                    timer.images += len(prob)
                    timer.total += done - start
                yield InferenceResult(batch, prob, boxes, scores)
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
        boxes, scores, seconds = self._gather(futures)
        return InferenceResult(batch, prob, boxes, scores), seconds


def _close(iterator: Any) -> None:
    """Close a generator the engine stopped reading (its ``finally`` blocks run: thread pools end)."""
    if inspect.isgenerator(iterator):
        iterator.close()


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


