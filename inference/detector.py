"""The Python API for detecting text in your own code; demo.py is a command line over it.

    from inference.detector import TextDetector
    detector = TextDetector('experiments/seg_detector/ic15_resnet18_deform_thre.yaml', 'model.pth')
    result = detector('photo.jpg')          # Detections: polygons, scores, input_size, ...

Every image goes the one way: ``data.image_io.read_image`` (a path; EXIF orientation applied by default, as a
person sees the photo) or ``data.image_io.to_bgr_uint8`` (a NumPy image), the one size rule
(``data.input_size.InputSize``, short side 736 by default as the original's demo.py), the network (PyTorch or
onnxruntime) and the experiment's ``SegDetectorRepresenter``. Coordinates are pixels of the image as read.
"""
from __future__ import annotations

import collections
import collections.abc
import copy
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from concern.config import CompiledConfig, apply_overrides, load_config, set_representer_thresholds
from concern.device import select_device
from data.image_io import DEFAULT_MAX_PIXELS, DataError, read_image, to_bgr_uint8
from data.input_size import DEFAULT_MAX_LONG_SIDE, DEFAULT_MAX_TILED_PIXELS, DEFAULT_SHORT_SIDE, InputSize
from experiment import Experiment
from inference.engine import InferenceEngine, StageTimer
from data.normalization import check_resize_dtype
from inference.preprocess import prepare_image, stack_inputs
from inference.runners import OnnxRunner, TorchRunner
from inference.tiling import DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE, TILE_MODES, TiledRunner, check_tiling
from structure.measurers import result_lines

Source = Union[str, 'os.PathLike[str]', bytes, np.ndarray]


@dataclass
class Detections:
    """The text found in one image.

    polygons: per detection an int32 (N, 2) array of (x, y) points in pixels of the image as read (box mode:
    4 corners, top-left first, clockwise on screen; polygon mode: N >= 4 points), within [0, W] x [0, H].
    scores: per detection the mean probability inside it, in [0, 1]. image_size / input_size: (height, width)
    of the image as read and of the network input. capped: the long-side cap (or, tiled, the pixel limit)
    reduced the input size. tiles: how many tiles the network ran on (1: the input went through whole).
    image: the (H, W, 3) uint8 BGR image as read; probability: the (input H, input W) float32 probability map.
    """
    source: str
    polygons: List[np.ndarray]
    scores: List[float]
    image_size: Tuple[int, int]
    input_size: Tuple[int, int]
    capped: bool = False
    tiles: int = 1
    image: Optional[np.ndarray] = field(default=None, repr=False)
    probability: Optional[np.ndarray] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.polygons)

    @property
    def scale(self) -> float:
        """Network input size over image size (the long sides' ratio)."""
        return max(self.input_size) / max(self.image_size)

    def lines(self, with_score: bool = True) -> List[str]:
        """``x1,y1,...,xn,yn[,score]`` per detection (the result-file format of demo.py and eval.py)."""
        return result_lines(self.polygons, self.scores, with_score)


def source_name(image: Any, index: int) -> str:
    """How results and errors name an image: its path, or ``<array N>`` for the N-th image of a call."""
    return os.fsdecode(image) if isinstance(image, (str, bytes, os.PathLike)) else f'<array {index}>'


class TextDetector:
    """A trained DBNet as ``image(s) -> Detections``.

    experiment: an experiment YAML file (or a compiled one, ``concern.config.load_config``); it gives the model
    and the post-processing settings. checkpoint: weights of that model (``load_trained_model``: every key must
    fit, never random weights), or ``onnx``: an exported model run by onnxruntime (no checkpoint needed).
    device / precision ('fp32', 'fp16', 'bf16', or 'auto': bf16 on a CPU running it natively, else fp32; fp16 on
    CUDA; the choice and its reason are in ``runner.describe()``) / channels_last: PyTorch only.
    image_short_side / max_long_side: the input size (``InputSize('short_side', ...)``); image_scale: a factor
    instead (``InputSize('scale', ...)``, 1.0: the image's own pixels, for scanned pages whose text the short-side
    rule would shrink). tiling (``inference.tiling``): 'auto' (default) runs an input that the long-side cap would
    shrink at its uncapped size in overlapping tiles of ``tile_size`` px (``tile_overlap`` shared), so that long
    receipts and large pages keep their text and memory stays bounded; 'on' tiles every input larger than a
    tile, uncapped; 'off' applies the cap (the original's demo.py behaviour). Tiled inputs are limited to
    ``max_input_pixels`` (scaled down beyond it, ``capped``); ``tile_batch`` tiles go through the network at once.
    resize_dtype: 'float32' (the original's
    preprocessing, default) or 'uint8' (faster resize of large photos, other inputs; ``data.normalization``).
    polygon: polygons instead of boxes. thresh / box_thresh: the representer's thresholds; precedence: these
    arguments > ``opts`` (``'key.path=value'`` overrides) > the file. orientation: 'displayed' (EXIF orientation
    applied, default) or 'stored' for paths. max_pixels: images larger than this are refused (``read_image``).
    log: where one-off notes go (default standard error).
    cuda_graphs: PyTorch on CUDA only: each input shape's forward is captured once in a CUDA graph and replayed
    (``inference.runners.TorchRunner``), which saves the kernel launch time of small batches.
    threads: None (default: torch's count as it is), a whole number (fixed) or 'auto' (a
    ``concern.threads.ThreadGovernor`` on the PyTorch CPU path: fewer threads while another process holds a core;
    for an ONNX model 'auto' is onnxruntime's own choice).

    Raises FileNotFoundError / ValueError (a checkpoint that does not fit, a bad setting), ConfigError (a bad
    experiment file) and ImportError (onnxruntime missing) at construction; DataError for an unreadable image.
    """

    def __init__(self, experiment: Union[str, CompiledConfig], checkpoint: Optional[str] = None, *,
                 onnx: Optional[str] = None, device: Optional[str] = None, precision: str = 'fp32',
                 channels_last: bool = False, image_short_side: int = DEFAULT_SHORT_SIDE,
                 max_long_side: Optional[int] = DEFAULT_MAX_LONG_SIDE, polygon: bool = False,
                 thresh: Optional[float] = None, box_thresh: Optional[float] = None, orientation: str = 'displayed',
                 opts: Sequence[str] = (), max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
                 log: Optional[Callable[[str], None]] = None, cuda_graphs: bool = False,
                 image_scale: Optional[float] = None, tiling: str = 'auto', tile_size: int = DEFAULT_TILE_SIZE,
                 tile_overlap: int = DEFAULT_TILE_OVERLAP, max_input_pixels: int = DEFAULT_MAX_TILED_PIXELS,
                 tile_batch: int = 4,
                 resize_dtype: str = 'float32', threads: Any = None):
        from structure.weights import load_trained_model  # torch: not needed by the ONNX path
        if (checkpoint is None) == (onnx is None):
            raise ValueError('TextDetector: give exactly one of checkpoint (PyTorch weights) and onnx (an exported '
                             'model)')
        if orientation not in ('stored', 'displayed'):
            raise ValueError(f"orientation: expected 'stored' or 'displayed', got {orientation!r}")
        if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                       or max_pixels < 1):
            raise ValueError(f'max_pixels: expected a positive number of pixels or None (no limit), got {max_pixels!r}')
        # a compiled config handed in is copied: the overrides below must not reach the caller's object
        config = load_config(experiment) if isinstance(experiment, str) else copy.deepcopy(experiment)
        apply_overrides(config, list(opts))
        set_representer_thresholds(config, thresh, box_thresh, prefix='')
        self.config = config
        structure = Experiment.build(config, ('structure',)).structure
        assert structure is not None  # built: 'structure' is among the parts
        if structure.representer is None:
            raise ValueError(f'{config.source}: structure.representer is required to detect text')
        self.representer = structure.representer
        if tiling not in TILE_MODES:
            raise ValueError(f'tiling: expected one of {TILE_MODES}, got {tiling!r}')
        check_tiling(tile_size, tile_overlap)
        mode, size = ('scale', image_scale) if image_scale is not None else ('short_side', image_short_side)
        self.input_size = InputSize(mode, size, max_long_side)
        # the size of a tiled input: the same rule, uncapped, within the pixel limit
        self.tiled_size = InputSize(mode, size, None, max_pixels=max_input_pixels)
        self.tiling = tiling  # the tile size and overlap live in self.tiled (TiledRunner)
        self.resize_dtype = check_resize_dtype(resize_dtype)
        self.polygon = bool(polygon)
        self.orientation = orientation
        self.max_pixels = max_pixels
        self.runner: Union[OnnxRunner, TorchRunner]
        if onnx is not None:
            if cuda_graphs:
                raise ValueError('cuda_graphs: CUDA graphs are for PyTorch on a CUDA device, not for onnx')
            from concern.threads import parse_threads
            self.runner = OnnxRunner(onnx, threads=parse_threads(threads))  # 'auto': onnxruntime's own choice
        else:
            self.device = select_device(device)
            if cuda_graphs and self.device.type != 'cuda':
                raise ValueError(f'cuda_graphs: CUDA graphs need a CUDA device, got device {self.device}')
            model = load_trained_model(structure.builder, checkpoint, self.device, log)
            self.runner = TorchRunner(model, self.device, precision, channels_last, cuda_graphs=cuda_graphs,
                                      threads=threads)
        self.tiled: Optional[TiledRunner] = None
        if tiling == 'on' or (tiling == 'auto' and max_long_side is not None):  # auto: what the cap would shrink
            self.tiled = TiledRunner(self.runner, tile_size, tile_overlap, batch_size=tile_batch,
                                     whole_up_to=None if tiling == 'on' else max_long_side)
        self.engine = InferenceEngine(self.tiled or self.runner, self.representer, is_output_polygon=self.polygon)

    # ------------------------------------------------------------------ calls
    def __call__(self, images: Union[Source, Sequence[Source]]) -> Union[Detections, List[Detections]]:
        """One path (str, bytes or path-like) or (H, W[, C]) NumPy image -> ``Detections``; a list of them -> a
        list, in order. TypeError for anything else (None, a number, a PIL image, ...), naming what is accepted."""
        if isinstance(images, (str, bytes, os.PathLike, np.ndarray)):
            return self.detect(images)
        _check_iterable(images)
        return list(self.detect_many(images))

    def detect(self, image: Source) -> Detections:
        """One image; DataError naming the file when it cannot be read."""
        return next(self.detect_many([image]))

    def detect_many(self, images: Iterable[Source], pipelined: bool = False,
                    on_error: Optional[Callable[[str, Exception], None]] = None, batch_size: int = 1,
                    workers: int = 0, timer: Optional['StageTimer'] = None) -> Iterator[Detections]:
        """``Detections`` per image, in input order.

        pipelined: read and resize the next images and post-process the previous ones in threads while the
        network runs (same results). on_error: None raises the DataError of an unreadable image; a callable
        gets ``(source, error)`` and the image is left out (demo.py reports and goes on).
        batch_size: consecutive images whose network input has the same size (the same image size, for
        photos of one camera) go through the network together, up to ``batch_size`` at a time; an image of
        another size starts a new batch. workers: threads that read and resize images (in input order),
        and that post-process the images of a batch in parallel (0: the calling thread or, pipelined, one
        thread each). timer: a ``inference.engine.StageTimer`` to fill (seconds per stage).

        Post-processing is per image and the same with any ``workers``. The network's output for an image
        does not depend on the other images of its batch, but the kernels the backend picks may depend on
        the batch size: on the CPU (oneDNN) a batch of 4 gave maps within 4e-6 of those of single images,
        not bit for bit; on CUDA cuDNN may pick other algorithms for other batch sizes. So batch_size > 1
        gives the batch-1 detections up to that rounding (a pixel or a score exactly at a threshold can
        tip), and any one ``batch_size`` gives the same detections whether pipelined or not, with any
        ``workers``.
        """
        _check_iterable(images)
        batch_size = _count('batch_size', batch_size, 1)
        workers = _count('workers', workers, 0)
        batches = self.batches(images, on_error, batch_size=batch_size, workers=workers)
        for result in self.engine.run(batches, pipelined=pipelined, timer=timer, post_workers=max(1, workers)):
            batch = result.batch
            for index, name in enumerate(batch['filename']):
                yield Detections(source=name, polygons=list(result.boxes[index]),
                                 scores=list(result.scores[index]), image_size=tuple(batch['shape'][index]),
                                 input_size=tuple(result.prob.shape[-2:]), capped=batch['capped'][index],
                                 tiles=self.tiles(*result.prob.shape[-2:]), image=batch['original'][index],
                                 probability=result.prob[index, 0])

    def tiles(self, height: int, width: int) -> int:
        """How many tiles a (height, width) network input runs in (1: whole)."""
        return 1 if self.tiled is None else self.tiled.count(height, width)

    def network_size(self, height: int, width: int) -> Tuple[int, int, bool]:
        """(input height, input width, capped) of a (height, width) image: the size rule; with tiling the long-side
        cap is lifted ('on': always; 'auto': where it bound) and the input limited to ``max_input_pixels``."""
        new_height, new_width, capped = self.input_size.resolve(height, width)
        if self.tiled is None or (self.tiling == 'auto' and not capped):
            return new_height, new_width, capped
        return self.tiled_size.resolve(height, width)

    def read(self, image: Source, index: int = 0) -> Tuple[str, np.ndarray]:
        """(name, (H, W, 3) uint8 BGR image) as this detector sees it: a path through the one reader, an array
        through ``to_bgr_uint8`` (``<array N>`` is its name)."""
        name = source_name(image, index)
        if isinstance(image, (str, bytes, os.PathLike)):
            return name, read_image(name, orientation=self.orientation, max_pixels=self.max_pixels)
        if isinstance(image, np.ndarray):
            if image.ndim >= 2 and min(image.shape[:2]) == 0:
                raise DataError(f'{name}: empty image of shape {image.shape}')
            return name, to_bgr_uint8(image, name)
        raise TypeError(f'image {index}: expected a path or a NumPy array, got {type(image).__name__}')

    def batches(self, images: Iterable[Source], on_error: Optional[Callable[[str, Exception], None]] = None,
                batch_size: int = 1, workers: int = 0) -> Iterator[Dict[str, Any]]:
        """The engine's input: per batch of readable images of one input size (up to ``batch_size``
        consecutive ones) ``{'image': (B, 3, h, w) float32 (the runner's ``stack``), 'shape': [(H, W)] * B,
        'filename': [name] * B, 'original': [image] * B, 'capped': [bool] * B}``. workers > 0: images are read
        and resized by that many threads, a few images ahead, in input order."""
        batch_size = _count('batch_size', batch_size, 1)
        group: List[Tuple[str, np.ndarray, np.ndarray, bool]] = []
        for item in self._prepared(images, on_error, _count('workers', workers, 0), batch_size):
            if group and group[0][2].shape != item[2].shape:
                yield self._batch(group)
                group = []
            group.append(item)
            if len(group) == batch_size:
                yield self._batch(group)
                group = []
        if group:
            yield self._batch(group)

    def _batch(self, group: List[Tuple[str, np.ndarray, np.ndarray, bool]]) -> Dict[str, Any]:
        # stacked by the runner the engine calls: a tiled input is not copied whole into page-locked memory
        return {'image': stack_inputs(self.engine.runner, [item[2] for item in group]),
                'shape': [item[1].shape[:2] for item in group], 'filename': [item[0] for item in group],
                'original': [item[1] for item in group], 'capped': [item[3] for item in group]}

    def prepare(self, image: Source, index: int = 0) -> Tuple[str, np.ndarray, np.ndarray, bool]:
        """(name, image as read, (1, 3, h, w) float32 network input, long side capped) of one image."""
        name, bgr = self.read(image, index)
        height, width = bgr.shape[:2]
        new_height, new_width, capped = self.network_size(height, width)
        return name, bgr, prepare_image(bgr, (new_height, new_width), self.resize_dtype), capped

    def _prepared(self, images: Iterable[Source], on_error: Optional[Callable[[str, Exception], None]],
                  workers: int, batch_size: int) -> Iterator[Tuple[str, np.ndarray, np.ndarray, bool]]:
        """``prepare`` of each readable image, in input order; unreadable ones go to ``on_error`` (or raise)."""
        def failed(image: Source, index: int, error: DataError) -> None:
            if on_error is None:
                raise error
            on_error(source_name(image, index), error)

        if workers == 0:
            for index, image in enumerate(images):
                try:
                    item = self.prepare(image, index)
                except DataError as error:
                    failed(image, index, error)
                    continue
                yield item
            return
        ahead = batch_size + workers  # images in flight: a batch to hand over while the next is prepared
        window: 'collections.deque[Tuple[int, Source, Any]]' = collections.deque()
        source = enumerate(images)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix='detector-data')
        try:
            exhausted = False
            while True:
                while not exhausted and len(window) < ahead:
                    entry = next(source, None)
                    if entry is None:
                        exhausted = True
                    else:
                        window.append((entry[0], entry[1], pool.submit(self.prepare, entry[1], entry[0])))
                if not window:
                    return
                index, image, future = window.popleft()
                try:
                    item = future.result()
                except DataError as error:
                    failed(image, index, error)
                    continue
                yield item
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _check_iterable(images: Any) -> None:
    """TypeError unless ``images`` is an iterable of images (a str / bytes is one path, not a list of them)."""
    if isinstance(images, (str, bytes)) or not isinstance(images, collections.abc.Iterable):
        raise TypeError(f'TextDetector: expected an image (a path as str, bytes or os.PathLike, or an (H, W[, C]) '
                        f'NumPy array) or a list of them, got {type(images).__name__}')


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f'{name}: expected an integer >= {minimum}, got {value!r}')
    return int(value)
