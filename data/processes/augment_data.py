"""AugmentDetectionData: the original's imgaug-style augmenter lists, implemented as affine maps."""
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..input_size import InputSize
from ..normalization import check_resize_dtype, resize_image
from ..rng import get_rng
from .data_process import DataProcess
from .pending_warp import image_hw, push_affine, transform_polygons

AFFINE_POSITIONAL = ('scale', 'translate_percent', 'translate_px', 'rotate', 'shear')


def _sample(rng: np.random.Generator, value: Any, name: str) -> float:
    """imgaug parameter semantics: number = constant, [a, b] / (a, b) = uniform range, list of >2 = choice."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return float(rng.uniform(value[0], value[1]))
    if isinstance(value, (list, tuple)) and len(value) > 2:
        return float(value[rng.integers(len(value))])
    raise ValueError(f'AugmentDetectionData: expected a number or [low, high] for {name}, got {value!r}')


def _sample_xy(rng, value, name) -> Tuple[float, float]:
    if isinstance(value, dict):
        unknown = set(value) - {'x', 'y'}
        if unknown:
            raise ValueError(f'AugmentDetectionData: expected keys x/y for {name}, got {sorted(value)}')
        return _sample(rng, value.get('x', 0.0), name), _sample(rng, value.get('y', 0.0), name)
    both = _sample(rng, value, name)
    return both, both


class _Fliplr:
    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def matrix(self, rng, width, height):
        if rng.random() >= self.p:
            return np.eye(3), (width, height)
        return np.array([[-1.0, 0, width - 1], [0, 1, 0], [0, 0, 1]]), (width, height)


class _Flipud(_Fliplr):
    def matrix(self, rng, width, height):
        if rng.random() >= self.p:
            return np.eye(3), (width, height)
        return np.array([[1.0, 0, 0], [0, -1, height - 1], [0, 0, 1]]), (width, height)


class _Affine:
    """imgaug Affine about the image centre, same canvas size, constant (0) fill."""

    def __init__(self, scale=1.0, translate_percent=None, translate_px=None, rotate=0.0, shear=0.0, **ignored):
        unsupported = set(ignored) - {'order', 'cval', 'mode', 'fit_output', 'backend', 'name'}
        if unsupported:
            raise ValueError(f'AugmentDetectionData: unsupported Affine arguments {sorted(unsupported)}')
        self.scale, self.translate_percent, self.translate_px = scale, translate_percent, translate_px
        self.rotate, self.shear = rotate, shear

    def matrix(self, rng, width, height):
        sx, sy = _sample_xy(rng, self.scale, 'Affine scale')
        tx, ty = 0.0, 0.0
        if self.translate_percent is not None:
            px, py = _sample_xy(rng, self.translate_percent, 'Affine translate_percent')
            tx, ty = px * width, py * height
        if self.translate_px is not None:
            px, py = _sample_xy(rng, self.translate_px, 'Affine translate_px')
            tx, ty = tx + px, ty + py
        angle = math.radians(_sample(rng, self.rotate, 'Affine rotate'))
        shear = math.radians(_sample(rng, self.shear, 'Affine shear'))
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        to_origin = np.array([[1.0, 0, -cx], [0, 1, -cy], [0, 0, 1]])
        linear = np.array([[sx * math.cos(angle), -sy * math.sin(angle + shear), 0],
                           [sx * math.sin(angle), sy * math.cos(angle + shear), 0], [0, 0, 1]])
        back = np.array([[1.0, 0, cx + tx], [0, 1, cy + ty], [0, 0, 1]])
        return back @ linear @ to_origin, (width, height)


class _Resize:
    """``[lo, hi]`` / number: one factor for both sides; ``{'width': W, 'height': H}``: fixed size
    (either may be 'keep-aspect-ratio')."""

    def __init__(self, size):
        self.size = size

    def target(self, rng, width, height) -> Tuple[int, int]:
        if isinstance(self.size, dict):
            new_w, new_h = self.size.get('width', width), self.size.get('height', height)
            if new_w == 'keep-aspect-ratio' and new_h == 'keep-aspect-ratio':
                raise ValueError('AugmentDetectionData: Resize cannot keep the aspect ratio on both sides')
            if new_w == 'keep-aspect-ratio':
                new_w = width * float(new_h) / height
            if new_h == 'keep-aspect-ratio':
                new_h = height * float(new_w) / width
            return max(1, int(round(float(new_w)))), max(1, int(round(float(new_h))))
        factor = _sample(rng, self.size, 'Resize')
        return max(1, int(round(width * factor))), max(1, int(round(height * factor)))

    def matrix(self, rng, width, height):
        new_w, new_h = self.target(rng, width, height)
        sx, sy = new_w / width, new_h / height
        # pixel-centre convention, as cv2.resize: x' = (x + 0.5) * s - 0.5
        return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]]), (new_w, new_h)


_AUGMENTERS = {'Fliplr': _Fliplr, 'Flipud': _Flipud, 'Affine': _Affine, 'Resize': _Resize}


def build_augmenter(spec: Any):
    """``['Name', *positional]`` or ``{'cls': 'Name', **keywords}`` as in the original YAML files."""
    if isinstance(spec, dict):
        name, args, kwargs = spec.get('cls'), [], {k: v for k, v in spec.items() if k != 'cls'}
    elif isinstance(spec, (list, tuple)) and spec and isinstance(spec[0], str):
        name, args, kwargs = spec[0], list(spec[1:]), {}
    else:
        raise ValueError(f"AugmentDetectionData: expected ['Name', args...] or {{'cls': 'Name', ...}}, got {spec!r}")
    if name not in _AUGMENTERS:
        raise ValueError(f'AugmentDetectionData: unsupported augmenter {name!r}, expected one of {sorted(_AUGMENTERS)}')
    if name == 'Affine' and args:
        kwargs.update(dict(zip(AFFINE_POSITIONAL, args)))
        args = []
    if name == 'Resize' and 'size' not in kwargs and not args:
        raise ValueError('AugmentDetectionData: Resize needs a size ([lo, hi], a factor or {width, height})')
    return _AUGMENTERS[name](*args, **kwargs)


class AugmentDetectionData(DataProcess):
    """Flip / affine / resize, applied identically to the image and every polygon.

    Training mode composes the sampled maps into one pending warp (see ``pending_warp``) and maps the
    polygons at once. ``only_resize`` mode (validation / evaluation) resizes the image to its network input size
    by the project's one rule, ``data.input_size.InputSize``: from the first entry's ``{'width', 'height'}``
    a fixed size, or with ``keep_ratio`` a fixed height and the width following the aspect ratio, rounded up to
    a multiple of 32 (the original's validation); with ``short_side`` (``eval.py --image_short_side``) the short
    side at that value as demo.py does, the long side capped at ``max_long_side``. Polygons then stay in
    original image coordinates. resize_dtype: how ``only_resize`` resizes, ``data.normalization.resize_image``:
    'float32' (the original's evaluation input: float32, then resize) or 'uint8' (faster, other inputs).
    max_pixels: ``InputSize``'s pixel limit (``eval.py --tile`` sets it with the long-side cap lifted).
    """

    def __init__(self, augmenter_args: Sequence[Any] = (), keep_ratio: bool = False, only_resize: bool = False,
                 short_side: Optional[int] = None, max_long_side: Optional[int] = None,
                 resize_dtype: str = 'float32', max_pixels: Optional[int] = None):
        self.resize_dtype = check_resize_dtype(resize_dtype)
        self.augmenter_args = list(augmenter_args or [])
        self.keep_ratio, self.only_resize = keep_ratio, only_resize
        self.augmenters: List[Any] = [build_augmenter(spec) for spec in self.augmenter_args]
        self.input_size: Optional[InputSize] = None
        if short_side is not None:
            if not only_resize:
                raise ValueError('AugmentDetectionData: short_side sets the evaluation input size; it needs '
                                 'only_resize: true')
            self.input_size = InputSize('short_side', short_side, max_long_side, max_pixels)
        elif only_resize:
            first = self.augmenters[0] if self.augmenters else None
            if not isinstance(first, _Resize) or not isinstance(first.size, dict):
                raise ValueError("AugmentDetectionData: only_resize expects augmenter_args "
                                 f"[['Resize', {{'width': W, 'height': H}}]], got {self.augmenter_args!r}")
            height, width = first.size.get('height'), first.size.get('width')
            if height is None or (width is None and not keep_ratio):
                raise ValueError("AugmentDetectionData: only_resize expects a Resize with a 'height' (and a 'width' "
                                 f"unless keep_ratio), got {self.augmenter_args!r}")
            if keep_ratio or width is None:  # width is None only with keep_ratio (checked above)
                self.input_size = InputSize('height', height, max_long_side, max_pixels)
            else:
                self.input_size = InputSize('fixed', (height, width))

    def resize_shape(self, height: int, width: int) -> Tuple[int, int]:
        """(height, width) of the network input for an image of ``height`` x ``width`` (only_resize)."""
        if self.input_size is None:
            raise ValueError('AugmentDetectionData: resize_shape needs only_resize: true')
        return self.input_size(height, width)

    def process(self, data: Dict[str, Any]) -> Dict[str, Any]:
        height, width = image_hw(data)
        data.setdefault('shape', [height, width])
        if self.only_resize:
            from .pending_warp import materialize
            materialize(data)
            new_h, new_w = self.resize_shape(height, width)
            data['image'] = resize_image(data['image'], (new_h, new_w), self.resize_dtype)
            return data
        rng = get_rng()
        total = np.eye(3)
        for augmenter in self.augmenters:
            matrix, (width, height) = augmenter.matrix(rng, width, height)
            total = matrix @ total
        push_affine(data, total, (width, height))
        transform_polygons(data, total)
        return data
