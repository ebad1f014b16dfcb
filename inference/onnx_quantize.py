"""Static int8 quantization of an exported DBNet for the CPU: ``convert_to_onnx.py ... --int8``.

onnxruntime's static quantization (``onnxruntime.quantization.quantize_static``) in the QDQ format: every
quantizable operator gets QuantizeLinear / DequantizeLinear pairs around it, which onnxruntime fuses into integer
kernels (QLinearConv, QLinearAdd, ...) when it loads the model; whatever it cannot fuse runs in float between a
DequantizeLinear and a QuantizeLinear. Weights are int8, per output channel by default; activations uint8 (the
U8S8 pairing that onnxruntime's x86 kernels are built around) with ranges measured by MinMax calibration.
Weights use 7 bits by default (``reduce_range``): without VNNI (AVX2, AVX-512 before VNNI) the U8S8 kernels add
two uint8 x int8 products into an int16, which saturates with full-range weights; on the synthetic test split the
MobileNetV3 DBNet lost 0.017 box F-measure with 8-bit weights and 0.004 with 7-bit ones (AVX2 machine).

Speed depends on the CPU. On the 2-core AMD EPYC with AVX2 only, the int8 MobileNetV3 DBNet ran end to end as fast
as the float one (0.99-1.02x, benchmarks/bench_deploy.py): its large convolutions were up to about 30 % faster in int8
than onnxruntime's float NCHWc kernels, and the uint8 Resize of the FPN, the float HardSigmoid of h-swish between
DequantizeLinear / QuantizeLinear pairs and the layout transposes took that back. CPUs with VNNI (AVX-512 VNNI,
AVX-VNNI) run the integer products in one instruction, which is where int8 pays.

Calibration images go the project's one way: ``data.image_io.read_image`` (stored orientation, as every data set
is read), the one size rule (``data.input_size.InputSize('short_side', ...)``, the export's size rule) and the
one normalisation (``inference.preprocess.prepare_image``), so the ranges are those of the inputs the deployed model
sees. The int8 model is written to its own file (``model.onnx`` -> ``model_int8.onnx``), never over the float
model, and keeps the float signature (``image`` float32 in, ``probability`` float32 out), so ``demo.py --onnx``,
``TextDetector(onnx=...)`` and ``inference.runners.OnnxRunner`` run it unchanged.

``onnxruntime.quantization`` (part of the onnxruntime wheel) is imported only here, when quantizing.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import BinaryIO, Dict, List, Optional, Sequence

import numpy as np

from concern.files import atomic_write
from data.image_io import IMAGE_EXTENSIONS
from data.input_size import DEFAULT_MAX_LONG_SIDE, DEFAULT_SHORT_SIDE, InputSize

DEFAULT_CALIBRATION_IMAGES = 64
QUANTIZED_OPS = ('QuantizeLinear', 'DequantizeLinear')


def int8_path(float_path: str) -> str:
    """Where the int8 model of ``float_path`` goes: ``model.onnx`` -> ``model_int8.onnx``."""
    root, extension = os.path.splitext(float_path)
    return f'{root}_int8{extension or ".onnx"}'


def calibration_paths(directory: str, count: int = DEFAULT_CALIBRATION_IMAGES) -> List[str]:
    """``count`` images of ``directory`` (its image files, sorted by name), spread evenly over the sorted list so
    that a folder ordered by scene or source is sampled throughout; all of them when there are fewer.
    ValueError for a missing folder, a folder without images or a count below 1."""
    if count < 1:
        raise ValueError(f'calibration images: expected at least 1, got {count}')
    if not os.path.isdir(directory):
        raise ValueError(f'calibration directory {directory!r}: not a folder')
    names = sorted(name for name in os.listdir(directory) if name.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise ValueError(f'calibration directory {directory!r}: no images ({", ".join(IMAGE_EXTENSIONS)})')
    if len(names) > count:
        picks = np.unique(np.linspace(0, len(names) - 1, count).round().astype(int))
        names = [names[index] for index in picks]
    return [os.path.join(directory, name) for name in names]


class CalibrationImages:
    """The network inputs of calibration images, one image per call of ``get_next`` (onnxruntime's
    ``CalibrationDataReader`` protocol, which it recognises by ``get_next``: ``{input name: (1, 3, H, W)
    float32}``, None when done; ``rewind``).

    paths: image files, read with ``read_image(orientation='stored')``. input_size: the size rule (default: short
    side 736, demo.py's, the deployment size). Inputs are prepared when asked for, so a large set costs no memory.
    """

    def __init__(self, paths: Sequence[str], input_name: str = 'image', input_size: Optional[InputSize] = None):
        if not paths:
            raise ValueError('calibration images: none given')
        self.paths = list(paths)
        self.input_name = input_name
        self.input_size = input_size or InputSize('short_side', DEFAULT_SHORT_SIDE, DEFAULT_MAX_LONG_SIDE)
        self._next = 0

    def __len__(self) -> int:
        return len(self.paths)

    def inputs(self, path: str) -> np.ndarray:
        """(1, 3, H, W) float32: the image as every entry point prepares it (DataError if unreadable)."""
        from inference.preprocess import prepare_image
        from data.image_io import read_image
        image = read_image(path, orientation='stored')
        return prepare_image(image, self.input_size(*image.shape[:2]))

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self._next >= len(self.paths):
            return None
        path = self.paths[self._next]
        self._next += 1
        return {self.input_name: self.inputs(path)}

    def rewind(self) -> None:
        self._next = 0


@dataclass
class QuantizationSummary:
    """What ``quantize`` wrote: the file, how many calibration images set the ranges, and the operators of the
    int8 graph (``op_counts``) and those of the float graph left in float (``float_nodes``)."""
    path: str
    calibration_images: int
    op_counts: Dict[str, int]
    float_nodes: List[str]

    def describe(self) -> str:
        pairs = self.op_counts.get('QuantizeLinear', 0)
        return (f'{self.path}: int8 QDQ model, {pairs} QuantizeLinear nodes, ranges from {self.calibration_images} '
                f'calibration image(s)' + (f', {len(self.float_nodes)} node(s) kept in float' if self.float_nodes
                                           else ''))


def nodes_with_prefix(model_path: str, prefixes: Sequence[str]) -> List[str]:
    """Names of the nodes of ``model_path`` whose name starts with one of ``prefixes`` (e.g.
    ``/model/model/module/decoder/binarize/`` for the probability head). ValueError when a prefix matches none."""
    import onnx
    names = [node.name for node in onnx.load(model_path, load_external_data=False).graph.node]
    selected: List[str] = []
    for prefix in prefixes:
        matched = [name for name in names if name.startswith(prefix)]
        if not matched:
            raise ValueError(f'no node of {model_path} has a name starting with {prefix!r}')
        selected.extend(name for name in matched if name not in selected)
    return selected


def _same_file(first: str, second: str) -> bool:
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    return os.path.exists(first) and os.path.exists(second) and os.path.samefile(first, second)


def quantize(float_path: str, output_path: str, calibration: CalibrationImages, per_channel: bool = True,
             reduce_range: bool = True, float_nodes: Sequence[str] = ()) -> QuantizationSummary:
    """Write the int8 QDQ model of ``float_path`` to ``output_path`` and return what was written.

    calibration: the inputs whose activation ranges set the scales (MinMax). per_channel: one weight scale per
    output channel (better for depthwise convolutions, whose channels differ in range). reduce_range: 7-bit
    weights (default), for AVX2 / AVX-512 CPUs without VNNI, where onnxruntime's U8S8 kernels can saturate an
    int16 sum of two products; False for 8-bit weights (CPUs with VNNI). float_nodes: names of nodes to leave in
    float (``nodes_with_prefix``).
    ValueError when ``output_path`` is the float model itself; the float file is only ever read. The model is
    written whole (``concern.files.atomic_write``: a temporary file beside it, flushed and renamed, keeping the
    replaced file's mode), so a failure leaves no partial file and an earlier int8 model as it was.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static
    import onnx
    if not os.path.isfile(float_path):
        raise FileNotFoundError(f'ONNX model not found: {float_path}')
    if _same_file(float_path, output_path):
        raise ValueError(f'{output_path}: the int8 model must not overwrite the float model {float_path}; '
                         f'choose another path (default {int8_path(float_path)})')
    directory = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='dbnet-int8-') as work:
        prepared = os.path.join(work, 'prepared.onnx')
        # onnxruntime's recommended pre-processing (ONNX shape inference and graph optimisations such as folding
        # the BatchNormalization after a ConvTranspose); its symbolic shape inference does not complete on this
        # graph's dynamic Resize shapes and is not needed for static quantization, so it is skipped.
        quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
        excluded = list(float_nodes)
        calibration.rewind()
        written = os.path.join(work, 'int8.onnx')
        quantize_static(prepared, written, calibration, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=excluded or None)
        counts = Counter(node.op_type for node in onnx.load(written).graph.node)

        def copy(stream: BinaryIO) -> None:
            with open(written, 'rb') as source:
                shutil.copyfileobj(source, stream)
        atomic_write(output_path, copy)
    return QuantizationSummary(output_path, len(calibration), dict(counts), excluded)


def is_quantized(path: str) -> bool:
    """Whether the ONNX model at ``path`` holds quantization nodes (a QDQ or QOperator int8 model)."""
    import onnx
    return any(node.op_type in QUANTIZED_OPS or node.op_type.startswith('QLinear')
               for node in onnx.load(path, load_external_data=False).graph.node)
