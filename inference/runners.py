"""Runners: a (B, 3, H, W) float32 input -> (B, 1, H, W) float32 probability maps.

``TorchRunner`` (precision, channels-last, CUDA graphs) runs a PyTorch model; ``OnnxRunner`` an exported model with
onnxruntime on the CPU (no torch needed: torch is imported lazily here). ``resolve_precision`` is what
``precision='auto'`` means on a device.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from concern.device import cpu_bf16_is_native
from inference.onnx_quantize import is_quantized

PRECISIONS = ('fp32', 'fp16', 'bf16')


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
    threads: None (default) leaves torch's thread count as it is; a whole number sets it; 'auto' (CPU only) hands
    it to a ``concern.threads.ThreadGovernor`` timed on each forward, which drops to fewer threads while another
    process holds a core. Only forwards of one input shape are compared: a new shape restarts its measurements
    (a fixed cost per call would make small inputs look slow per pixel).
    fold_batchnorm: run a copy of the model with each BatchNorm that follows a convolution folded into it
    (``structure.batchnorm_folding``; eval-mode arithmetic, done in float64 before any precision conversion): one
    pass over the activations less per BN (docs/benchmarks.md measures it). The caller's model keeps its BNs (it is
    still moved to the device and put in eval mode, as without folding), so a model that trains on (validation
    during training) is not changed; ``self.model`` is the folded copy. False runs the model itself.
    """

    def __init__(self, model: Any, device: Any = 'cpu', precision: str = 'fp32', channels_last: bool = False,
                 cuda_graphs: bool = False, graph_cache: int = 8, threads: Any = None, fold_batchnorm: bool = True):
        import torch
        from concern.threads import ThreadGovernor, thread_governor
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
        if fold_batchnorm:
            from structure.batchnorm_folding import fold_batchnorm as folded
            model = folded(model)  # a copy (the caller's model unchanged), or the model itself with no BN to fold
        self.deformable_dtype = self.dtype
        if self.dtype != torch.float32:
            model = model.to(self.dtype)
            if not _reduced_precision_deformable(self.device, self.dtype):
                _keep_deformable_in_float32(model, self.dtype)
                self.deformable_dtype = torch.float32
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.governor: Optional[ThreadGovernor] = None
        self._governed_shape: Optional[Tuple[int, ...]] = None
        if threads is not None and (self.device.type == 'cpu' or threads != 'auto'):
            self.governor = thread_governor(threads)  # None for a fixed count (set here)

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
            start = time.perf_counter()
            with torch.inference_mode():
                pred = self.forward(tensor)
            if self.governor is not None:
                shape = tuple(tensor.shape)
                if shape != self._governed_shape:
                    self._governed_shape = shape
                    self.governor.restart()
                self.governor.observe(time.perf_counter() - start)
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


def check_network_input(shape: Sequence[int]) -> None:
    """ValueError naming the size unless ``shape`` is (B, 3, H, W) with H and W positive multiples of 32: the FPN
    adds feature maps of strides 4 to 32, which only line up then (``data.input_size.InputSize`` gives such sizes;
    a raw call with another size would fail inside the decoder, or in onnxruntime with a broadcast error)."""
    if len(shape) != 4 or int(shape[1]) != 3:
        raise ValueError(f'network input: expected (batch, 3, height, width), got shape {tuple(shape)}')
    height, width = int(shape[2]), int(shape[3])
    if height < 32 or width < 32 or height % 32 or width % 32:
        raise ValueError(f'network input: height and width must be positive multiples of 32, got {height}x{width}; '
                         f'resize to e.g. {max(32, -(-height // 32) * 32)}x{max(32, -(-width // 32) * 32)} '
                         '(data.input_size.InputSize) or pad')


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
    """'int8' for a quantized export (``inference.onnx_quantize.is_quantized``: convert_to_onnx.py --int8), else
    'fp32'; 'fp32 or int8' when the onnx package is not there to read the graph."""
    try:
        quantized = is_quantized(path)
    except Exception:  # onnx missing or an unreadable file (onnxruntime loaded it, so the model itself is fine)
        return 'fp32 or int8'
    return 'int8' if quantized else 'fp32'


class OnnxRunner:
    """An exported model (convert_to_onnx.py) run by onnxruntime on the CPU; NumPy in, NumPy out, no torch.

    Deformable convolutions in either form of the export run as they are: standard ``DeformConv`` nodes
    (``--deform_conv onnx``, onnxruntime's own kernel) or the portable formulation; a runtime without a
    ``DeformConv`` kernel is named when the file is loaded, with the way out (``--deform_conv portable``).
    ``metadata``: the file's ``metadata_props`` (key -> string), where convert_to_onnx.py writes the model's
    description (``inference.detector.read_model_metadata`` reads it).
    """

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
            hint = ''
            if 'DeformConv' in str(error):
                hint = (f' (onnxruntime {onnxruntime.__version__} has no DeformConv kernel: export again with '
                        '`convert_to_onnx.py --deform_conv portable`)')
            raise ValueError(f'{path}: onnxruntime cannot load it: {error}{hint}') from error
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f'{path}: expected one (B, 3, H, W) input, got '
                             f'{[(item.name, item.shape) for item in inputs]}')
        self.input_name = inputs[0].name
        self.metadata: Dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.version = onnxruntime.__version__
        self.threads = threads
        self.path = path

    def describe(self) -> str:
        # the graph is read again only here (its node types say whether it is an int8 export), not at construction
        return (f'onnxruntime {self.version}, CPU, dtype {_onnx_weight_type(self.path)}, '
                f'{self.threads or "default"} threads')

    def __call__(self, images: Any) -> np.ndarray:
        check_network_input(images.shape)
        if not isinstance(images, np.ndarray):
            images = images.detach().cpu().numpy()  # a torch tensor from an evaluation loader
        prob = self.session.run(None, {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]
        return prob.astype(np.float32, copy=False)
