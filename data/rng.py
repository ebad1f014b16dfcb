"""One process-wide random stream for data augmentation.

Processes draw from :func:`get_rng` instead of owning a generator: a generator stored on a process object
would be copied into every DataLoader worker and make all workers produce identical augmentations.
``data.DataLoader`` is the one place that seeds this stream: before every sample, from (seed, epoch, position in
the epoch), in the main process and in the workers alike (``data.data_loader._SeededSamples``); nothing else needs
to call :func:`reseed` (tests and benchmarks that run processes by hand do).
"""
from typing import Optional

import numpy as np

_rng = np.random.default_rng()


def get_rng() -> np.random.Generator:
    return _rng


def reseed(seed: Optional[int] = None, *, stream: tuple = ()) -> None:
    """Reseed the augmentation stream with ``seed`` and extra entropy words (e.g. worker id, epoch)."""
    global _rng
    entropy = None if seed is None else [int(seed) % (2 ** 63)] + [int(s) for s in stream]
    _rng = np.random.default_rng(np.random.SeedSequence(entropy))
