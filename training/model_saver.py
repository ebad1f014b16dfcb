"""``ModelSaver``: where and when checkpoints are written, atomically, and how many are kept.

Every file is written to a temporary file in the target folder (``.<name>.<random>.tmp``) and renamed over the
target with ``os.replace`` (atomic on POSIX), so a process killed while saving leaves the previous file intact and
never a truncated one; the temporary files a ``kill -9`` leaves behind are removed by the next run's ``bind``.
``latest`` and ``best`` are hard links to (or, where links are not possible, copies of) the file just written, and
``last_checkpoint`` names the newest file written (as detectron2's and fvcore's Checkpointer).
A write that fails for a reason of the file system (disk full, permission denied, read-only) is one
``CheckpointWriteError`` naming the file, the OS error and the free space.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Optional

import torch

from concern.checkpoint_io import LAST_CHECKPOINT

# The temporary files of atomic_torch_save (.<name>.<mkstemp letters>.tmp) and atomic_link (.<name>.<pid>.link.tmp).
TEMPORARY_FILE = re.compile(r'^\..+\.[A-Za-z0-9_]+(\.link)?\.tmp$')
STEP_FILE = re.compile(r'^model_epoch_(\d+)_minibatch_(\d+)$')


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, permission denied, read-only file system...).

    ``errno``, ``strerror`` and ``filename`` are those of the OS error; the message names the target file, the
    error and the free space of its file system. No temporary file is left behind."""

    def __init__(self, code: Optional[int], strerror: str, filename: str, message: str):
        super().__init__(code, strerror, filename)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _free_space(directory: str) -> str:
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return 'free space unknown'
    return f'{_size(free)} free on that file system'


def _size(count: int) -> str:
    for unit, scale in (('GB', 1 << 30), ('MB', 1 << 20), ('kB', 1 << 10)):
        if count >= scale:
            return f'{count / scale:.1f} {unit}'
    return f'{count} bytes'


def _os_error_in(error: BaseException) -> Optional[OSError]:
    """The OSError that caused ``error``: itself, or one in its chain (torch.save reports a failed write as a
    RuntimeError from inline_container.cc, chained from the stream's OSError)."""
    seen = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            return current
        current = current.__cause__ or current.__context__
    return None


def _write_error(error: BaseException, path: str, directory: str) -> Optional[CheckpointWriteError]:
    """``error`` raised while writing ``path`` as a ``CheckpointWriteError``, None when it is not about the file
    system (then it propagates as it is)."""
    cause = _os_error_in(error)
    code: Optional[int]
    if cause is None:
        text = str(error)
        if not ('inline_container' in text or 'PytorchStreamWriter' in text or 'unexpected pos' in text):
            return None
        # torch's zip writer failed without saying why: a full disk is the usual reason, so look at the space left.
        try:
            full = shutil.disk_usage(directory).free < (1 << 20)
        except OSError:
            full = False
        if not full:
            return None
        code, reason = errno.ENOSPC, os.strerror(errno.ENOSPC)
    else:
        code = cause.errno
        reason = cause.strerror or str(cause) or type(cause).__name__
    return CheckpointWriteError(code, reason, path,
                                f'cannot write checkpoint {path}: {reason} ({_free_space(directory)}); '
                                'the previous checkpoints are intact')


def _replace_atomically(path: str, write: Callable[[str], None], temporary: Optional[str] = None) -> None:
    """``write(temporary)`` a file in ``path``'s folder, then rename it over ``path`` (atomic on POSIX): a process
    killed meanwhile leaves the previous ``path`` intact. ``temporary`` None: a fresh ``.<name>.<letters>.tmp``.
    On any error the temporary file is removed; a failure of the file system is re-raised as
    ``CheckpointWriteError``."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        if temporary is None:
            handle, temporary = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp',
                                                 dir=directory)
            os.close(handle)
        elif os.path.lexists(temporary):
            os.remove(temporary)
        write(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None and os.path.lexists(temporary):
            os.remove(temporary)
        converted = _write_error(error, path, directory) if isinstance(error, Exception) else None
        if converted is not None:
            raise converted from error
        raise


def _synced(write: Callable[[Any], None], mode: str) -> Callable[[str], None]:
    def run(temporary: str) -> None:
        with open(temporary, mode, encoding=None if 'b' in mode else 'utf-8') as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
    return run


def atomic_torch_save(content: Any, path: str) -> None:
    """``torch.save`` to ``path`` through a temporary file in the same folder, renamed over it when complete.

    Raises ``CheckpointWriteError`` for a failure of the file system; the temporary file is removed on any error."""
    _replace_atomically(path, _synced(lambda stream: torch.save(content, stream), 'wb'))


def atomic_link(source: str, path: str) -> None:
    """Make ``path`` the same content as ``source`` (hard link, else copy), replacing it atomically."""
    def link(temporary: str) -> None:
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
    directory = os.path.dirname(os.path.abspath(path))
    _replace_atomically(path, link, os.path.join(directory, f'.{os.path.basename(path)}.{os.getpid()}.link.tmp'))


def atomic_write_text(text: str, path: str) -> None:
    """Write a small text file atomically (temporary file in the same folder, then ``os.replace``)."""
    directory = os.path.dirname(os.path.abspath(path))
    _replace_atomically(path, _synced(lambda stream: stream.write(text), 'w'),
                        os.path.join(directory, f'.{os.path.basename(path)}.{os.getpid()}.tmp'))


class ModelSaver:
    """Checkpoints in ``<workspace>/<dir_path>``: ``model_epoch_E_minibatch_S`` every ``save_interval``
    iterations, ``latest`` (the newest of those), ``best`` (best validation F-measure) and ``final``.

    ``keep_last``: how many ``model_epoch_E_minibatch_S`` files stay (the newest written; 0 or None: all). Older
    ones are deleted after each periodic save; ``best``, ``final`` and ``latest`` are never deleted, and as they
    are hard links, a ``best`` whose periodic file was deleted stays readable. Only files named like the periodic
    ones are ever deleted. ``last_checkpoint`` holds the name of the newest checkpoint written.

    Creating the file ``<workspace>/<signal_path>`` asks for a checkpoint now; training goes on and
    the file is removed once the checkpoint is written.
    """

    def __init__(self, dir_path: str = 'model', save_interval: int = 1000, signal_path: Optional[str] = None,
                 keep_last: Optional[int] = 3):
        self.dir_path = dir_path
        self.save_interval = int(save_interval)
        if self.save_interval < 1:
            raise ValueError(f'save_interval must be >= 1 iteration, got {save_interval}')
        self.keep_last = int(keep_last or 0)
        if self.keep_last < 0:
            raise ValueError(f'keep_last must be >= 0 (0 or null: keep every periodic checkpoint), got {keep_last}')
        self.signal_path = signal_path
        self.directory: Optional[str] = None
        self.signal_file: Optional[str] = None

    def bind(self, workspace: str) -> List[str]:
        """Resolve the folders against the run's workspace (the trainer calls this on rank 0) and remove the
        temporary files an interrupted save left in the model folder. Returns one message per removal, for the
        run's log."""
        self.directory = os.path.join(workspace, self.dir_path)
        os.makedirs(self.directory, exist_ok=True)
        self.signal_file = os.path.join(workspace, self.signal_path) if self.signal_path else None
        return self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> List[str]:
        messages = []
        directory = self._require_bound()
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not TEMPORARY_FILE.match(name) or not os.path.isfile(path) or os.path.islink(path):
                continue
            try:
                size = os.path.getsize(path)
                os.remove(path)
            except FileNotFoundError:  # another process of the run removed it first
                continue
            messages.append(f'removed {path} ({_size(size)}): temporary file of an interrupted checkpoint save')
        return messages

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
        """Write ``content`` as ``name`` and record it in ``last_checkpoint``."""
        path = self.path_of(name)
        atomic_torch_save(content, path)
        atomic_write_text(name + '\n', self.path_of(LAST_CHECKPOINT))
        return path

    def save_step(self, content: Dict[str, Any], epoch: int, iteration: int) -> str:
        """``model_epoch_E_minibatch_S`` and ``latest``; then only the newest ``keep_last`` periodic files stay."""
        path = self.save(content, self.step_name(epoch, iteration))
        self.link_latest(path)
        self.prune(keep=os.path.basename(path))
        return path

    def prune(self, keep: Optional[str] = None) -> List[str]:
        """Delete all but the newest ``keep_last`` periodic files (by time written, then iteration), never ``keep``;
        returns the deleted paths."""
        if not self.keep_last:
            return []
        directory = self._require_bound()
        periodic = []
        for name in os.listdir(directory):
            match = STEP_FILE.match(name)
            path = os.path.join(directory, name)
            if match and os.path.isfile(path) and not os.path.islink(path):
                periodic.append((os.stat(path).st_mtime_ns, int(match.group(2)), name))
        periodic.sort()
        removed = []
        for _, _, name in periodic[:max(0, len(periodic) - self.keep_last)]:
            if name != keep:
                os.remove(os.path.join(directory, name))
                removed.append(os.path.join(directory, name))
        return removed

    def last_checkpoint(self) -> Optional[str]:
        """The path of the newest checkpoint written, as ``last_checkpoint`` names it (None without one)."""
        pointer = self.path_of(LAST_CHECKPOINT)
        if not os.path.isfile(pointer):
            return None
        with open(pointer, encoding='utf-8') as stream:
            name = stream.read().strip()
        return self.path_of(name) if name else None

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
                f'signal_path={self.signal_path!r}, keep_last={self.keep_last})')
