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
import inspect
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from concern.config import (CompiledConfig, ConfigError, apply_overrides, constructor_parameters, load_config,
                            project_module, resolve_class, set_representer_thresholds,
                            threshold_settings)
from concern.config import _describe_types as describe_types
from concern.config import _has_plain_type as has_plain_type
from concern.config import _plain_argument_types as plain_argument_types
from concern.device import select_device
from data.image_io import DEFAULT_MAX_PIXELS, DataError, read_image, to_bgr_uint8
from data.input_size import DEFAULT_MAX_LONG_SIDE, DEFAULT_MAX_TILED_PIXELS, DEFAULT_SHORT_SIDE, InputSize
from experiment import Experiment
from inference.engine import InferenceEngine, StageTimer
from data.normalization import check_resize_dtype
from inference.preprocess import check_normalization, normalization_settings, prepare_image, stack_inputs
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

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict (plain Python types only): ``source``, ``image_size`` / ``input_size`` as
        [height, width], ``scale``, ``capped``, ``tiles`` and ``detections``, per detection ``{'points':
        [[x, y], ...] (ints, rounded as ``lines()`` rounds them), 'score': float}``."""
        return {'source': self.source, 'image_size': [int(value) for value in self.image_size],
                'input_size': [int(value) for value in self.input_size], 'scale': float(self.scale),
                'capped': bool(self.capped), 'tiles': int(self.tiles),
                'detections': [{'points': [[int(round(float(x))), int(round(float(y)))]
                                           for x, y in np.asarray(polygon).reshape(-1, 2).tolist()],
                                'score': float(score)} for polygon, score in zip(self.polygons, self.scores)]}


# ------------------------------------------------------------------ the exported model's description
# convert_to_onnx.py writes METADATA_KEY into the ONNX file's metadata_props: a JSON object, versioned by 'format'.
METADATA_KEY = 'dbnet'
METADATA_FORMAT = 1
SIZE_MULTIPLE = 32  # InputSize's sizes are multiples of 32 (the FPN's stride)
REPRESENTER_MODULE = 'structure.representers'  # the only place a representer class named in a file may come from


class MetadataError(ValueError):
    """An exported model without a readable description: absent, not JSON, of another format version, malformed."""


def experiment_representer(experiment: Any) -> Any:
    """The representer of a built experiment (``Experiment.build``; its ``structure.representer``), ValueError
    when it has none. TextDetector with an experiment and convert_to_onnx.py (the description it writes into the
    model) both take it from here, so the two cannot disagree."""
    structure = experiment.structure
    if structure is None or structure.representer is None:
        raise ValueError(f'{experiment.config.source if experiment.config else "experiment"}: structure.representer '
                         'is required to detect text')
    return structure.representer


def representer_settings(representer: Any) -> Dict[str, Any]:
    """``{'class': name, argument: value, ...}``: the representer's class and every constructor argument as the
    built object holds it (a ``class:`` node of an experiment file, which ``build_representer`` builds back), except
    an optional argument left at its default None (``polygon_box_thresh`` unset): leaving it out rebuilds the same
    object and keeps the description readable by a reader that predates the argument (metadata format 1).
    ValueError for an argument the object does not hold as a plain value under its name."""
    cls = type(representer)
    parameters, _ = constructor_parameters(cls)
    settings: Dict[str, Any] = {'class': cls.__name__}
    for name in parameters:
        if not hasattr(representer, name):
            raise ValueError(f'{cls.__name__}: argument {name!r} is not held under its name; it cannot be described '
                             'in an exported model')
        value = getattr(representer, name)
        if value is None and parameters[name].default is None:
            continue
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise ValueError(f'{cls.__name__}: argument {name!r} is not held as a plain value (attribute {name}: '
                             f'{value!r}); it cannot be described in an exported model')
        settings[name] = value
    return settings


def with_thresholds(stored: Mapping[str, Any], thresh: Optional[float] = None,
                    box_thresh: Optional[float] = None) -> Dict[str, Any]:
    """A copy of a stored representer description (``representer_settings``' form) with the thresholds given
    (None: the stored one stays): arguments > the stored settings. A box_thresh given is the minimum in both modes
    (``concern.config.threshold_settings``): it replaces a stored ``polygon_box_thresh``; an absent one stays absent
    (unset, box_thresh serves polygon mode too)."""
    updated = dict(stored)
    updated.update({name: value for name, value in threshold_settings(thresh, box_thresh).items()
                    if name != 'polygon_box_thresh' or name in updated})
    return updated


def build_representer(settings: Any, source: str) -> Any:
    """The representer ``settings`` (``representer_settings``' form, read from ``source``) describe. The file is
    untrusted input: the class must be one of ``structure.representers`` and every argument a plain value (None,
    bool, int, float, str, as ``representer_settings`` writes them), both checked before anything is built; the class
    is then constructed directly with those values (no ``concern.config`` building, which would build any nested
    ``{'class': ...}`` node of any project module). Argument names and plain annotated types are checked as an
    experiment file's are."""
    if not isinstance(settings, dict) or not isinstance(settings.get('class'), str):
        raise ValueError(f"{source}: metadata representer: expected a mapping with a 'class' name, got {settings!r}")
    where = f'{source}: metadata representer'
    arguments = {key: value for key, value in settings.items() if key != 'class'}
    for key, value in arguments.items():
        if not isinstance(key, str) or (value is not None and not isinstance(value, (bool, int, float, str))):
            raise ValueError(f'{where}: argument {key!r}: expected a plain value (null, boolean, number or string), '
                             f'got {type(value).__name__} {value!r}; nothing was built')
    try:
        cls = resolve_class(settings['class'], [REPRESENTER_MODULE], where)
    except ConfigError as error:
        raise ValueError(f'{error} (a representer must be one of {REPRESENTER_MODULE})') from None
    home = project_module(REPRESENTER_MODULE)
    if not (cls.__module__ == home or cls.__module__.startswith(home + '.')):
        raise ValueError(f'{where}: class {settings["class"]!r} is not a representer of this project '
                         f'(expected a class of {REPRESENTER_MODULE}, got {cls.__module__}.{cls.__name__})')
    parameters, _ = constructor_parameters(cls)
    types = plain_argument_types(cls)
    for key, value in arguments.items():
        if key not in parameters:  # **kwargs are not taken from a file
            raise ValueError(f'{where}: unknown argument {key!r} for class {cls.__name__} '
                             f'(accepted: {", ".join(parameters) or "none"})')
        expected = types.get(key)
        if (expected is not None and not has_plain_type(value, expected)
                and not (value is None and parameters[key].default is None)):
            raise ValueError(f'{where}: class {cls.__name__} takes {describe_types(expected)} for {key!r}, got '
                             f'{type(value).__name__} {value!r}')
    missing = [name for name, parameter in parameters.items()
               if parameter.default is inspect.Parameter.empty and name not in arguments]
    if missing:
        raise ValueError(f'{where}: class {cls.__name__} needs argument(s) {missing}')
    try:
        return cls(**arguments)
    except (TypeError, ValueError) as error:
        raise ValueError(f'{where}: building {cls.__name__} failed: {error}') from None


def input_size_settings(input_size: InputSize) -> Dict[str, Any]:
    """A short-side size rule as an exported model's metadata records it."""
    if input_size.mode != 'short_side':
        raise ValueError(f'input size: only the short_side rule is recorded in a model, got {input_size!r}')
    return {'mode': 'short_side', 'short_side': input_size.size[0], 'max_long_side': input_size.max_long_side,
            'multiple': SIZE_MULTIPLE}


def model_metadata(representer: Any, input_size: InputSize, **facts: Any) -> Dict[str, Any]:
    """The description an exported model carries under ``METADATA_KEY``: the format, the representer
    (``representer_settings``), the normalisation (``inference.preprocess.normalization_settings``), the input-size
    rule and the output, then ``facts`` (the export's: experiment, deform_conv, opset, versions)."""
    return {'format': METADATA_FORMAT, 'representer': representer_settings(representer),
            'normalization': normalization_settings(), 'input_size': input_size_settings(input_size),
            'input': 'image', 'output': 'probability', **facts}


def read_model_metadata(metadata: Mapping[str, str], source: str) -> Dict[str, Any]:
    """The description ``model_metadata`` wrote, from an ONNX file's ``metadata_props`` (``OnnxRunner.metadata``).
    ValueError naming ``source`` when it is absent (an older export or another producer), not JSON, of another
    format version (``MetadataError``), or asks for a normalisation this project does not apply (ValueError)."""
    text = metadata.get(METADATA_KEY)
    if text is None:
        raise MetadataError(f'{source} carries no DBNet description (metadata key {METADATA_KEY!r}: an export older '
                         'than it, or another producer): pass the experiment YAML (TextDetector(experiment, '
                         'onnx=...), demo.py EXP.yaml --onnx ...) or export the model again with convert_to_onnx.py')
    try:
        description = json.loads(text)
    except ValueError as error:
        raise MetadataError(f'{source}: metadata {METADATA_KEY!r} is not valid JSON: {error}') from None
    if not isinstance(description, dict):
        raise MetadataError(f'{source}: metadata {METADATA_KEY!r}: expected a JSON object, '
                            f'got {type(description).__name__}')
    version = description.get('format')
    if version != METADATA_FORMAT or isinstance(version, bool):
        raise MetadataError(f'{source}: metadata format {version!r} is not one this version of the project reads '
                         f'(format {METADATA_FORMAT}): pass the experiment YAML, or export the model again with '
                         'this version')
    for key in ('representer', 'normalization', 'input_size'):
        if not isinstance(description.get(key), dict):
            raise MetadataError(f'{source}: metadata {METADATA_KEY!r} has no {key!r} mapping')
    size = description['input_size']
    try:
        if size.get('mode') != 'short_side' or size.get('multiple') != SIZE_MULTIPLE:
            raise ValueError('expected the short_side rule with multiples of 32')
        InputSize('short_side', size.get('short_side'), size.get('max_long_side'))
    except (ValueError, TypeError) as error:
        raise MetadataError(f'{source}: metadata input_size {size!r}: {error}') from None
    check_normalization(description['normalization'], source)  # a plain ValueError: no experiment can change it
    return description


def setting_overrides(experiment: Dict[str, Any], stored: Dict[str, Any], experiment_name: str,
                      model_name: str) -> List[str]:
    """One note per representer setting in which the experiment's (which wins) differs from the model's stored one."""
    missing = '(not set)'
    return [f'{key}: {experiment.get(key, missing)!r} from {experiment_name} overrides {stored.get(key, missing)!r} '
            f'stored in {model_name}'
            for key in list(experiment) + [key for key in stored if key not in experiment]
            if experiment.get(key, missing) != stored.get(key, missing)]


def source_name(image: Any, index: int) -> str:
    """How results and errors name an image: its path, or ``<array N>`` for the N-th image of a call."""
    return os.fsdecode(image) if isinstance(image, (str, bytes, os.PathLike)) else f'<array {index}>'


class TextDetector:
    """A trained DBNet as ``image(s) -> Detections``.

    experiment: an experiment YAML file (or a compiled one, ``concern.config.load_config``); it gives the model
    and the post-processing settings. checkpoint: weights of that model (``load_trained_model``: every key must
    fit, never random weights), or ``onnx``: an exported model run by onnxruntime (no checkpoint needed). With
    ``onnx`` the experiment may be None: the file's description (``read_model_metadata``, written by
    convert_to_onnx.py) gives the representer and the short side; an experiment given overrides it, and ``log``
    gets one note per representer setting that differs from the stored one.
    device / precision ('fp32', 'fp16', 'bf16', or 'auto': bf16 on a CPU running it natively, else fp32; fp16 on
    CUDA; the choice and its reason are in ``runner.describe()``) / channels_last: PyTorch only.
    image_short_side / max_long_side: the input size (``InputSize('short_side', ...)``; image_short_side None:
    the ONNX model's stored short side, else 736); image_scale: a factor
    instead (``InputSize('scale', ...)``, 1.0: the image's own pixels, for scanned pages whose text the short-side
    rule would shrink). tiling (``inference.tiling``): 'auto' (default) runs an input that the long-side cap would
    shrink at its uncapped size in overlapping tiles of ``tile_size`` px (``tile_overlap`` shared), so that long
    receipts and large pages keep their text and memory stays bounded; 'on' tiles every input larger than a
    tile, uncapped; 'off' applies the cap (the original's demo.py behaviour). Tiled inputs are limited to
    ``max_input_pixels`` (scaled down beyond it, ``capped``); ``tile_batch`` tiles go through the network at once.
    resize_dtype: 'float32' (the original's
    preprocessing, default) or 'uint8' (faster resize of large photos, other inputs; ``data.normalization``).
    polygon: polygons instead of boxes. thresh / box_thresh: the representer's thresholds (box_thresh in both modes:
    it replaces a stored or filed ``polygon_box_thresh`` too); precedence: these arguments > ``opts``
    (``'key.path=value'`` overrides) > the file. orientation: 'displayed' (EXIF orientation
    applied, default) or 'stored' for paths. max_pixels: images larger than this are refused (``read_image``).
    log: where one-off notes go (default standard error).
    cuda_graphs: PyTorch on CUDA only: each input shape's forward is captured once in a CUDA graph and replayed
    (``inference.runners.TorchRunner``), which saves the kernel launch time of small batches.
    threads: None (default: torch's count as it is), a whole number (fixed) or 'auto' (a
    ``concern.threads.ThreadGovernor`` on the PyTorch CPU path: fewer threads while another process holds a core;
    for an ONNX model 'auto' is onnxruntime's own choice).

    Raises FileNotFoundError / ValueError (a checkpoint that does not fit, a bad setting, an ONNX model without a
    readable description and no experiment: ``MetadataError``), ConfigError (a bad experiment file) and ImportError
    (onnxruntime missing) at construction; DataError for an unreadable image.
    """

    def __init__(self, experiment: Union[str, CompiledConfig, None] = None, checkpoint: Optional[str] = None, *,
                 onnx: Optional[str] = None, device: Optional[str] = None, precision: str = 'fp32',
                 channels_last: bool = False, image_short_side: Optional[int] = None,
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
        if experiment is None and onnx is None:
            raise ValueError('TextDetector: a checkpoint needs its experiment YAML (the model and the '
                             'post-processing settings); only an ONNX model exported with its description '
                             '(convert_to_onnx.py) runs without one')
        if orientation not in ('stored', 'displayed'):
            raise ValueError(f"orientation: expected 'stored' or 'displayed', got {orientation!r}")
        if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                       or max_pixels < 1):
            raise ValueError(f'max_pixels: expected a positive number of pixels or None (no limit), got {max_pixels!r}')
        note = log or (lambda text: print(text, file=sys.stderr))
        self.runner: Union[OnnxRunner, TorchRunner]
        if onnx is not None:
            if cuda_graphs:
                raise ValueError('cuda_graphs: CUDA graphs are for PyTorch on a CUDA device, not for onnx')
            from concern.threads import parse_threads
            self.runner = OnnxRunner(onnx, threads=parse_threads(threads))  # 'auto': onnxruntime's own choice
        # the exported model's description (read_model_metadata): the settings without an experiment, and the
        # default short side with one
        self.model_metadata: Optional[Dict[str, Any]] = None
        self.config: Optional[CompiledConfig] = None
        structure = None
        if experiment is None:
            assert isinstance(self.runner, OnnxRunner) and onnx is not None
            if opts:
                raise ValueError(f'opts {list(opts)}: they change an experiment file; give the experiment YAML too, '
                                 'or thresh / box_thresh, which apply to the settings stored in the model')
            self.model_metadata = read_model_metadata(self.runner.metadata, onnx)
            stored = with_thresholds(self.model_metadata['representer'], thresh, box_thresh)
            self.representer = build_representer(stored, onnx)
            self.settings_source = f'{onnx} (its stored description)'
        else:
            # a compiled config handed in is copied: the overrides below must not reach the caller's object
            config = load_config(experiment) if isinstance(experiment, str) else copy.deepcopy(experiment)
            apply_overrides(config, list(opts))
            set_representer_thresholds(config, thresh, box_thresh, prefix='')
            self.config = config
            built = Experiment.build(config, ('structure',))
            structure = built.structure
            self.representer = experiment_representer(built)
            self.settings_source = config.source
            if onnx is not None:
                assert isinstance(self.runner, OnnxRunner)
                self.model_metadata = self._stored_description(onnx, note)
        stored_size = (self.model_metadata or {}).get('input_size', {})
        if image_short_side is None:  # the argument > the model's stored short side > the default
            image_short_side = int(stored_size.get('short_side', DEFAULT_SHORT_SIDE))
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
        if onnx is None:
            assert structure is not None  # an experiment is required with a checkpoint
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

    def _stored_description(self, onnx: str, note: Callable[[str], None]) -> Optional[Dict[str, Any]]:
        """With an experiment: the ONNX model's description, if it has a readable one, and one note per
        representer setting of the experiment that overrides the stored one. A missing or unreadable description is
        no error here (the experiment gives the settings); one of another normalisation is."""
        assert isinstance(self.runner, OnnxRunner)
        if METADATA_KEY not in self.runner.metadata:
            return None
        try:
            description = read_model_metadata(self.runner.metadata, onnx)
        except MetadataError as error:
            note(f'note: {error}; its description is ignored, the experiment gives the settings')
            return None
        for line in setting_overrides(representer_settings(self.representer), description['representer'],
                                      'the experiment', onnx):
            note(f'note: {line}')
        return description

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
