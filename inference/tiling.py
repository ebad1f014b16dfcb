"""Tiled inference: the probability map of a large network input computed tile by tile, so that the network's
memory is bounded by the tile size whatever the image size.

The tiles overlap; the map is merged on the probability map, not on polygons: each output pixel comes from the
one tile in which it lies farthest from a cut (the tiles' cores, which meet in the middle of each overlap), and
the post-processing (``SegDetectorRepresenter``) runs once on the merged map. So a word that crosses a tile
border is one connected region of the merged map and comes out once and whole, and a pixel's probability is
the full-image one wherever the network's effective context around it (the influence of pixels more than
``overlap / 2`` away is small for DBNet's FPN) lies inside its tile. A network whose output at a pixel depends
only on the input within ``overlap / 2`` of it gives exactly the full-image map (tests/test_tiling.py).

Memory: the network sees ``batch_size`` tiles of ``tile_size`` at a time; the merged map (float32, one value a
pixel of the network input) and the resized image (float32, three values a pixel) are held whole.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from inference.preprocess import stack_inputs
from inference.runners import check_network_input

DEFAULT_TILE_SIZE = 1024
DEFAULT_TILE_OVERLAP = 256
TILE_MODES = ('auto', 'on', 'off')


def check_tiling(tile_size: int, overlap: int) -> None:
    """ValueError unless ``tile_size`` is a multiple of 32 (>= 64) and ``overlap`` a multiple of 32 in
    [0, tile_size / 2]: the network needs inputs in multiples of 32, and tiles start on multiples of 32 so that
    every tile sees the image in the same phase of the network's stride as the whole image would."""
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < 64 \
            or tile_size % 32:
        raise ValueError(f'tile_size: expected a multiple of 32 of at least 64 px, got {tile_size!r}')
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or overlap < 0 or overlap % 32 \
            or 2 * overlap > tile_size:
        raise ValueError(f'tile_overlap: expected a multiple of 32 between 0 and tile_size / 2 ({tile_size // 2}), '
                         f'got {overlap!r}')


def tile_spans(length: int, tile: int, overlap: int) -> List[Tuple[int, int, int, int]]:
    """Tiles along one axis of ``length`` px (a multiple of 32): per tile (start, end, core_start, core_end).

    Tiles are ``min(tile, length)`` long, start on multiples of 32 every ``tile - overlap`` px, and the last one
    ends at ``length`` (it may overlap its neighbour by more). The cores partition [0, length): two neighbours
    meet in the middle of their overlap."""
    size = min(tile, length)
    step = size - overlap if size < length else size
    starts = list(range(0, length - size + 1, step))
    if starts[-1] + size < length:
        starts.append(length - size)
    spans = []
    for index, start in enumerate(starts):
        core_start = 0 if index == 0 else (start + starts[index - 1] + size) // 2
        core_end = length if index == len(starts) - 1 else (starts[index + 1] + start + size) // 2
        spans.append((start, start + size, core_start, core_end))
    return spans


class TiledRunner:
    """A runner (``TorchRunner`` / ``OnnxRunner``: images (B, 3, H, W) -> (B, 1, H, W) float32 maps) that runs
    its inner runner on overlapping tiles and returns the merged full-size maps.

    tile_size: the side of a tile (px of the network input, a multiple of 32 >= 64). overlap: px shared by
    neighbouring tiles (multiple of 32, at most tile_size / 2); each tile's outer ``overlap / 2`` is dropped.
    batch_size: tiles per network call. whole_up_to: an input whose long side is at most this goes through in
    one piece (None: ``tile_size``; ``TextDetector``'s automatic tiling gives its ``max_long_side``, so that
    only inputs the long-side cap would have shrunk are tiled).
    """

    def __init__(self, runner: Callable[[Any], np.ndarray], tile_size: int = DEFAULT_TILE_SIZE,
                 overlap: int = DEFAULT_TILE_OVERLAP, batch_size: int = 4, whole_up_to: Optional[int] = None):
        check_tiling(tile_size, overlap)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f'tile batch_size: expected an integer >= 1, got {batch_size!r}')
        self.runner = runner
        self.tile_size = int(tile_size)
        self.overlap = int(overlap)
        self.batch_size = int(batch_size)
        self.whole_up_to = self.tile_size if whole_up_to is None else int(whole_up_to)

    def count(self, height: int, width: int) -> int:
        """Tiles of one (height, width) network input: 1 when it goes through whole."""
        if max(height, width) <= self.whole_up_to:
            return 1
        return len(tile_spans(height, self.tile_size, self.overlap)) * len(tile_spans(width, self.tile_size,
                                                                                        self.overlap))

    def describe(self) -> str:
        inner = getattr(self.runner, 'describe', None)
        text = inner() if callable(inner) else type(self.runner).__name__
        return f'{text}; tiles of {self.tile_size} px overlapping by {self.overlap} px'

    def stack(self, arrays: Sequence[np.ndarray]) -> Any:
        """(1, 3, H, W) inputs of one size -> a batch: the inner runner's ``stack`` for inputs that go through
        whole (page-locked memory for CUDA), a plain array for inputs to tile (only tiles are sent)."""
        whole = max(arrays[0].shape[-2:]) <= self.whole_up_to
        return stack_inputs(self.runner if whole else None, arrays)

    def __call__(self, images: Any) -> np.ndarray:
        """(B, 3, H, W) float32 inputs (NumPy or torch, H and W multiples of 32) -> (B, 1, H, W) float32 NumPy
        maps: the inner runner's on the whole input up to ``whole_up_to``, else merged from the tiles' maps."""
        check_network_input(images.shape)
        count, _, height, width = (int(value) for value in images.shape)
        if max(height, width) <= self.whole_up_to:
            return self.runner(images)
        rows = tile_spans(height, self.tile_size, self.overlap)
        columns = tile_spans(width, self.tile_size, self.overlap)
        merged = np.empty((count, 1, height, width), dtype=np.float32)
        places = [(index, row, column) for index in range(count) for row in rows for column in columns]
        concatenate = _concatenate_for(images)
        for first in range(0, len(places), self.batch_size):
            group = places[first:first + self.batch_size]
            tiles = concatenate([images[index:index + 1, :, row[0]:row[1], column[0]:column[1]]
                                 for index, row, column in group])
            maps = self.runner(tiles)
            for map_, (index, row, column) in zip(maps, group):
                merged[index, :, row[2]:row[3], column[2]:column[3]] = \
                    map_[:, row[2] - row[0]:row[3] - row[0], column[2] - column[0]:column[3] - column[0]]
        return merged


def _concatenate_for(images: Any) -> Callable[[List[Any]], Any]:
    if isinstance(images, np.ndarray):
        return lambda parts: np.ascontiguousarray(np.concatenate(parts, axis=0))
    import torch
    return lambda parts: torch.cat(parts, dim=0).contiguous()
