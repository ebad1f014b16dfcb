"""The one rule for the network input size of an image at inference: eval.py, demo.py, the Python API, validation
during training, ``eval.py --speed`` and the ONNX export all call :class:`InputSize`.

Three modes, each from the original code base:

* ``short_side`` (its ``demo.py``): the short side becomes ``size``; the long side keeps the aspect ratio and is
  rounded **up** to a multiple of 32. ``max_long_side`` caps the long side (a 10000 px photo must not exhaust
  memory): above it the long side becomes ``max_long_side`` rounded down to 32 and the short side follows.
* ``height`` (its validation pipelines with ``keep_ratio: true``): the height becomes ``size`` whatever the
  orientation, the width keeps the aspect ratio rounded up to a multiple of 32.
* ``fixed`` (its validation pipelines with ``keep_ratio: false``, e.g. ICDAR 2015 at 1280x736): exactly
  ``size = (height, width)``.
* ``scale`` (this project's, for pages whose text is small at the short-side rule's scale): both sides times
  ``size``, a positive factor (1.0: the image's own pixels), rounded up to multiples of 32; ``max_long_side``
  caps it as in ``short_side``.

For a landscape image ``short_side`` and ``height`` give the same size. Sizes are multiples of 32 (the FPN
needs them) and at least 32.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, List, Optional, Sequence, Tuple, Union

MODES = ('short_side', 'height', 'fixed', 'scale')
DEFAULT_SHORT_SIDE = 736
DEFAULT_MAX_LONG_SIDE = 2560
DEFAULT_MAX_TILED_PIXELS = 1 << 27  # a tiled input's limit (134 Mpx: a 10000x10000 page at its own scale fits)


def _ceil32(value: float) -> int:
    # the original validation resize's arithmetic exactly (math.ceil(value / 32.0) * 32), so that evaluation sizes
    # equal its own; its demo.py computed the scale as short / h * w, which differs in the last bit for some sizes
    # (a 21x21 image: 768x736 there, 736x736 here)
    return max(32, int(math.ceil(value / 32.0)) * 32)


class InputSize:
    """``InputSize(mode, size, max_long_side)(height, width) -> (new_height, new_width)`` in pixels.

    mode: 'short_side' (size: int), 'height' (size: int), 'fixed' (size: (height, width)) or 'scale' (size: a
    positive factor). ``size`` values of the first three must be positive multiples of 32. max_long_side: None
    (no cap) or a value >= 32; it applies to 'short_side', 'height' and 'scale' (a fixed size is used as given).
    max_pixels: None or a pixel count >= 1024 (a memory bound for tiled inputs, whose long side is not capped):
    a larger size is scaled down to fit, both sides rounded down to multiples of 32 (at least 32 each).
    Raises ValueError for anything else, and for an image size that is not positive.
    """

    def __init__(self, mode: str = 'short_side', size: Union[int, float, Sequence[int]] = DEFAULT_SHORT_SIDE,
                 max_long_side: Optional[int] = None, max_pixels: Optional[int] = None):
        if mode not in MODES:
            raise ValueError(f'input size mode: expected one of {MODES}, got {mode!r}')
        if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                       or max_pixels < 32 * 32):
            raise ValueError(f'max_pixels: expected None or an integer >= 1024, got {max_pixels!r}')
        self.max_pixels = max_pixels
        if max_long_side is not None and int(max_long_side) < 32:
            raise ValueError(f'max_long_side: expected None or a value >= 32, got {max_long_side!r}')
        self.mode = mode
        self.max_long_side = None if max_long_side is None else int(max_long_side)
        if mode == 'scale':
            if isinstance(size, bool) or not isinstance(size, numbers.Real) or not 0 < float(size) <= 16:
                raise ValueError(f'input size: mode scale expects a factor in (0, 16], got {size!r}')
            self.factor = float(size)
            self.size: Tuple[int, ...] = ()
            return
        # int and float named too for the type checker, which does not count them as numbers.Real
        values: List[Any] = [size] if isinstance(size, (int, float, numbers.Real)) else list(size)
        if len(values) != (2 if mode == 'fixed' else 1):
            raise ValueError(f"input size: mode {mode!r} expects {'(height, width)' if mode == 'fixed' else 'one side'}"
                             f', got {size!r}')
        if not all(float(value).is_integer() and int(value) >= 32 and int(value) % 32 == 0 for value in values):
            raise ValueError(f'input size: expected positive multiples of 32, got {size!r}')
        self.size = tuple(int(value) for value in values)
        self.factor = 0.0

    def __repr__(self) -> str:
        size = self.factor if self.mode == 'scale' else self.size if self.mode == 'fixed' else self.size[0]
        return (f'InputSize({self.mode!r}, {size!r}, max_long_side={self.max_long_side!r}, '
                f'max_pixels={self.max_pixels!r})')

    def __call__(self, height: int, width: int) -> Tuple[int, int]:
        return self.resolve(height, width)[:2]

    def uncapped(self, height: int, width: int) -> Tuple[int, int]:
        """(new_height, new_width) by this rule without the long-side cap."""
        if height <= 0 or width <= 0:
            raise ValueError(f'image size: expected positive height and width, got {height}x{width}')
        if self.mode == 'fixed':
            return self.size[0], self.size[1]
        if self.mode == 'scale':
            return _ceil32(height * self.factor), _ceil32(width * self.factor)
        side = self.size[0]
        if self.mode == 'height' or height <= width:
            return side, _ceil32(width * side / height)
        return _ceil32(height * side / width), side

    def resolve(self, height: int, width: int) -> Tuple[int, int, bool]:
        """(new_height, new_width, capped): ``capped`` says the long-side cap or the pixel limit changed the size."""
        new_height, new_width = self.uncapped(height, width)
        if self.mode == 'fixed':
            return new_height, new_width, False
        new_height, new_width, capped = self._capped(height, width, new_height, new_width)
        if self.max_pixels is None or new_height * new_width <= self.max_pixels:
            return new_height, new_width, capped
        shrink = math.sqrt(self.max_pixels / (new_height * new_width))
        return max(32, int(new_height * shrink) // 32 * 32), max(32, int(new_width * shrink) // 32 * 32), True

    def _capped(self, height: int, width: int, new_height: int, new_width: int) -> Tuple[int, int, bool]:
        if self.max_long_side is None or max(new_height, new_width) <= self.max_long_side:
            return new_height, new_width, False
        limit = max(32, self.max_long_side - self.max_long_side % 32)
        scale = limit / max(height, width)
        if height >= width:
            return limit, min(limit, _ceil32(width * scale)), True
        return min(limit, _ceil32(height * scale)), limit, True
