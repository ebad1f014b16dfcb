"""``ModelSaver``: where and when checkpoints are written, atomically.

Every file is written to a temporary file in the target folder and renamed over the target with
``os.replace`` (atomic on POSIX), so a process killed while saving leaves the previous file intact and
never a truncated one. ``latest`` and ``best`` are hard links to (or, where links are not possible,
copies of) the file just written.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Dict, Optional

import torch


def atomic_torch_save(content: Any, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(handle, 'wb') as stream:
            torch.save(content, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def atomic_link(source: str, path: str) -> None:
    """Make ``path`` the same content as ``source`` (hard link, else copy), replacing it atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f'.{os.path.basename(path)}.{os.getpid()}.link.tmp')
    if os.path.lexists(temporary):
        os.remove(temporary)
    try:
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise


class ModelSaver:
    """Checkpoints in ``<workspace>/<dir_path>``: ``model_epoch_E_minibatch_S`` every ``save_interval``
    iterations, ``latest`` (the newest of those), ``best`` (best validation F-measure) and ``final``.

    Creating the file ``<workspace>/<signal_path>`` asks for a checkpoint now; training goes on and
    the file is removed once the checkpoint is written.
    """

    def __init__(self, dir_path: str = 'model', save_interval: int = 1000, signal_path: Optional[str] = None):
        self.dir_path = dir_path
        self.save_interval = int(save_interval)
        if self.save_interval < 1:
            raise ValueError(f'save_interval must be >= 1 iteration, got {save_interval}')
        self.signal_path = signal_path
        self.directory: Optional[str] = None
        self.signal_file: Optional[str] = None

    def bind(self, workspace: str) -> None:
        """Resolve the folders against the run's workspace (the trainer calls this on rank 0)."""
        self.directory = os.path.join(workspace, self.dir_path)
        os.makedirs(self.directory, exist_ok=True)
        self.signal_file = os.path.join(workspace, self.signal_path) if self.signal_path else None

    def _require_bound(self) -> str:
        if self.directory is None:
            raise RuntimeError('ModelSaver.bind(workspace) must be called before saving')
        return self.directory

    def path_of(self, name: str) -> str:
        return os.path.join(self._require_bound(), name)

    @staticmethod
    def step_name(epoch: int, iteration: int) -> str:
        return f'model_epoch_{epoch}_minibatch_{iteration}'

    def due(self, iteration: int) -> bool:
        return iteration > 0 and iteration % self.save_interval == 0

    def signal_requested(self) -> bool:
        return self.signal_file is not None and os.path.exists(self.signal_file)

    def clear_signal(self) -> None:
        if self.signal_file is not None and os.path.exists(self.signal_file):
            os.remove(self.signal_file)

    def save(self, content: Dict[str, Any], name: str) -> str:
        path = self.path_of(name)
        atomic_torch_save(content, path)
        return path

    def save_step(self, content: Dict[str, Any], epoch: int, iteration: int) -> str:
        """``model_epoch_E_minibatch_S`` and ``latest``."""
        path = self.save(content, self.step_name(epoch, iteration))
        self.link_latest(path)
        return path

    def link_latest(self, path: str) -> str:
        latest = self.path_of('latest')
        atomic_link(path, latest)
        return latest

    def mark_best(self, path: str) -> str:
        best = self.path_of('best')
        atomic_link(path, best)
        return best

    def __repr__(self) -> str:
        return (f'ModelSaver(dir_path={self.dir_path!r}, save_interval={self.save_interval}, '
                f'signal_path={self.signal_path!r})')
