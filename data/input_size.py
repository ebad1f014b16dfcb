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

For a landscape image ``short_side`` and ``height`` give the same size. Sizes are multiples of 32 (the FPN
needs them) and at least 32.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple, Union

MODES = ('short_side', 'height', 'fixed')
DEFAULT_SHORT_SIDE = 736
DEFAULT_MAX_LONG_SIDE = 2560


def _ceil32(value: float) -> int:
    # the original validation resize's arithmetic exactly (math.ceil(value / 32.0) * 32), so that evaluation sizes
    # equal its own; its demo.py computed the scale as short / h * w, which differs in the last bit for some sizes
    # (a 21x21 image: 768x736 there, 736x736 here)
    return max(32, int(math.ceil(value / 32.0)) * 32)


class InputSize:
    """``InputSize(mode, size, max_long_side)(height, width) -> (new_height, new_width)`` in pixels.

    mode: 'short_side' (size: int), 'height' (size: int) or 'fixed' (size: (height, width)). ``size`` values
    must be positive multiples of 32. max_long_side: None (no cap) or a value >= 32; it applies to
    'short_side' and 'height' (a fixed size is used as given). Raises ValueError for anything else, and for an
    image size that is not positive.
    """

    def __init__(self, mode: str = 'short_side', size: Union[int, Sequence[int]] = DEFAULT_SHORT_SIDE,
                 max_long_side: Optional[int] = None):
        if mode not in MODES:
            raise ValueError(f'input size mode: expected one of {MODES}, got {mode!r}')
        # int named too for the type checker, which does not count int as a numbers.Real
        values = [size] if isinstance(size, (int, numbers.Real)) else list(size)
        if len(values) != (2 if mode == 'fixed' else 1):
            raise ValueError(f"input size: mode {mode!r} expects {'(height, width)' if mode == 'fixed' else 'one side'}"
                             f', got {size!r}')
        if not all(float(value).is_integer() and int(value) >= 32 and int(value) % 32 == 0 for value in values):
            raise ValueError(f'input size: expected positive multiples of 32, got {size!r}')
        if max_long_side is not None and int(max_long_side) < 32:
            raise ValueError(f'max_long_side: expected None or a value >= 32, got {max_long_side!r}')
        self.mode = mode
        self.size: Tuple[int, ...] = tuple(int(value) for value in values)
        self.max_long_side = None if max_long_side is None else int(max_long_side)

    def __repr__(self) -> str:
        size = self.size if self.mode == 'fixed' else self.size[0]
        return f'InputSize({self.mode!r}, {size!r}, max_long_side={self.max_long_side!r})'

    def __call__(self, height: int, width: int) -> Tuple[int, int]:
        return self.resolve(height, width)[:2]

    def resolve(self, height: int, width: int) -> Tuple[int, int, bool]:
        """(new_height, new_width, capped): ``capped`` says the long-side cap changed the size."""
        if height <= 0 or width <= 0:
            raise ValueError(f'image size: expected positive height and width, got {height}x{width}')
        if self.mode == 'fixed':
            return self.size[0], self.size[1], False
        side = self.size[0]
        if self.mode == 'height':
            new_height, new_width = side, _ceil32(width * side / height)
        elif height <= width:
            new_height, new_width = side, _ceil32(width * side / height)
        else:
            new_height, new_width = _ceil32(height * side / width), side
        if self.max_long_side is None or max(new_height, new_width) <= self.max_long_side:
            return new_height, new_width, False
        limit = max(32, self.max_long_side - self.max_long_side % 32)
        scale = limit / max(height, width)
        if height >= width:
            return limit, min(limit, _ceil32(width * scale)), True
        return min(limit, _ceil32(height * scale)), limit, True
