"""``ModelSaver``: where and when checkpoints are written, atomically, and how many are kept.

Every file is written to a temporary file in the target folder (``.<name>.<random>.tmp``) and renamed over the
target with ``os.replace`` (atomic on POSIX), so a process killed while saving leaves the previous file intact and
never a truncated one; the temporary files a ``kill -9`` leaves behind are removed by the next run's ``bind``.
``latest`` and ``best`` are hard links to (or, where links are not possible, copies of) the file just written, and
``last_checkpoint`` names the newest file written (as detectron2's and fvcore's Checkpointer).
A write that fails for a reason of the file system (disk full, permission denied, read-only) is one
``CheckpointWriteError`` naming the file, the OS error and the free space.

Output paths stay in the run (the path rule, docs/training.md): ``dir_path`` and ``signal_path`` are relative to
the run's workspace and may not leave it (an absolute path, ``..`` or a symbolic link out of it is refused, naming
the key). Clean-up deletes only files this saver wrote: each temporary file and each checkpoint is recorded in the
model folder's manifest (``.saver_manifest``, append-only, one line per record) before or when it is written, and
only a file the manifest lists, with the size recorded, is ever removed; a file that merely looks like a periodic
checkpoint or a temporary file is left alone and named in the run's log.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from concern.checkpoint_io import LAST_CHECKPOINT
from concern.files import ends_torn

# The temporary files of atomic_torch_save (.<name>.<mkstemp letters>.tmp) and atomic_link (.<name>.<pid>.link.tmp).
TEMPORARY_FILE = re.compile(r'^\..+\.[A-Za-z0-9_]+(\.link)?\.tmp$')
STEP_FILE = re.compile(r'^model_epoch_(\d+)_minibatch_(\d+)$')
# what ends a manifest line torn by a kill while appending: an extra field, so that the line is never a record
TORN_END = '\ttorn\n'
# a temporary file's name as _temporary_name makes it: the target's name is group 1
ANNOUNCED_TEMPORARY = re.compile(r'^\.(.+)\.[0-9a-f]+(\.link)?\.tmp$')
# The record of what the saver wrote in its folder: the only files clean-up may delete.
MANIFEST = '.saver_manifest'


class OutputPathError(ValueError):
    """A path of the experiment that would write or delete outside the run's workspace."""


def inside_workspace(value: str, key: str) -> str:
    """``value`` (a path an experiment sets for writing or deleting: ``key`` names it) normalised, when it stays
    inside the run's workspace: relative, without ``..`` leaving it. Raises ``OutputPathError`` naming the key."""
    text = os.fspath(value)
    if not text or not str(text).strip():
        raise OutputPathError(f'{key}: empty path; give a path relative to the run\'s workspace (workspace/<name>/)')
    normal = os.path.normpath(text)
    if os.path.isabs(text) or normal == '..' or normal.startswith('..' + os.sep) or normal == '.':
        raise OutputPathError(
            f'{key}: {text!r} is not inside the run\'s workspace; paths an experiment sets for writing or deleting '
            'are relative to workspace/<name>/ and stay there (e.g. \'model\'); to write elsewhere, choose the '
            'workspace with --name')
    return normal


def _within(path: str, root: str) -> bool:
    real_path, real_root = os.path.realpath(path), os.path.realpath(root)
    return real_path == real_root or real_path.startswith(real_root.rstrip(os.sep) + os.sep)


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
    if os.path.isfile(os.path.join(directory, LAST_CHECKPOINT)):
        state = ('the previous checkpoints are intact; free some space (or move the workspace) and resume from '
                 f'{os.path.join(directory, "latest")}')
    else:
        state = 'no checkpoint of this run has been written yet; free some space (or move the workspace) and restart'
    return CheckpointWriteError(code, reason, path,
                                f'cannot write checkpoint {path}: {reason} ({_free_space(directory)}); {state}')


Recorder = Callable[[str, str], None]


def _temporary_name(path: str, suffix: str = '.tmp') -> str:
    return os.path.join(os.path.dirname(os.path.abspath(path)),
                        f'.{os.path.basename(path)}.{secrets.token_hex(4)}{suffix}')


def _replace_atomically(path: str, write: Callable[[str], None], suffix: str = '.tmp',
                        record: Optional[Recorder] = None) -> None:
    """``write(temporary)`` a new file in ``path``'s folder (``.<name>.<random>.tmp``, created by ``write``, which
    must not overwrite), then rename it over ``path`` (atomic on POSIX): a process killed meanwhile leaves the
    previous ``path`` intact. ``record(kind, name)`` (the saver's manifest) hears of the temporary file before it is
    created (``temp``), of the file once in place (``file``), and of the temporary file's removal (``gone``) when
    an error ends the write before the rename. On any error the temporary file is removed; a failure of the file
    system is re-raised as ``CheckpointWriteError``."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary: Optional[str] = None
    replaced = False
    try:
        os.makedirs(directory, exist_ok=True)
        temporary = _temporary_name(path, suffix)
        if record is not None:
            record('temp', os.path.basename(temporary))
        write(temporary)
        os.replace(temporary, path)
        replaced = True
        if record is not None:
            record('file', os.path.basename(path))
    except BaseException as error:
        if temporary is not None and not replaced:
            _discard(temporary, record)
        converted = _write_error(error, path, directory) if isinstance(error, Exception) else None
        if converted is not None:
            raise converted from error
        raise


def _discard(temporary: str, record: Optional[Recorder] = None) -> None:
    """Remove the temporary file of a failed write (this process created it) and record it ``gone`` in the
    manifest, so that a file appearing later under the name it was meant for is never adopted as the saver's
    (``Manifest.adopt_interrupted``). The record is best effort: the write's own error is what the caller raises."""
    if os.path.lexists(temporary):
        os.remove(temporary)
    if record is not None:
        try:
            record('gone', os.path.basename(temporary))
        except Exception:  # a full disk, say: the write's own error is the one to report
            pass


def _synced(write: Callable[[Any], None], mode: str) -> Callable[[str], None]:
    def run(temporary: str) -> None:
        with open(temporary, mode, encoding=None if 'b' in mode else 'utf-8') as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
    return run


def atomic_torch_save(content: Any, path: str, record: Optional[Recorder] = None) -> None:
    """``torch.save`` to ``path`` through a temporary file in the same folder, renamed over it when complete.

    Raises ``CheckpointWriteError`` for a failure of the file system; the temporary file is removed on any error."""
    _replace_atomically(path, _synced(lambda stream: torch.save(content, stream), 'xb'), record=record)


def atomic_link(source: str, path: str, record: Optional[Recorder] = None) -> None:
    """Make ``path`` the same content as ``source`` (hard link, else copy), replacing it atomically."""
    def link(temporary: str) -> None:
        try:
            os.link(source, temporary)
        except FileExistsError:
            raise
        except OSError:
            shutil.copyfile(source, temporary)
    _replace_atomically(path, link, '.link.tmp', record)


def atomic_write_text(text: str, path: str, record: Optional[Recorder] = None) -> None:
    """Write a small text file atomically (temporary file in the same folder, then ``os.replace``)."""
    _replace_atomically(path, _synced(lambda stream: stream.write(text), 'x'), record=record)


class Manifest:
    """The model folder's record of what the saver wrote (``.saver_manifest``): append-only lines ``temp <name>``
    (a temporary file about to be created), ``file <name> <size>`` (a file in place), ``gone <name>`` (a temporary
    file removed: a failed write's, or a stale one removed by ``bind``). A torn last line (a kill while appending)
    is ignored, and ended (``TORN_END``: still no record) before the next record is appended. A periodic checkpoint
    killed between its rename into place and its ``file`` record is adopted at the next ``bind``
    (``adopt_interrupted``). Only what it lists may be deleted by the clean-up."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, MANIFEST)
        self.directory = directory

    def record(self, kind: str, name: str) -> None:
        line = f'{kind}\t{name}'
        if kind == 'file':
            line += f'\t{os.path.getsize(os.path.join(self.directory, name))}'
        # a line torn by a kill while appending is ended first, so that it cannot swallow this record, with a field
        # that makes it no record (a torn name or size is never taken for one)
        torn = ends_torn(self.path)
        with open(self.path, 'a', encoding='utf-8') as stream:
            stream.write((TORN_END if torn else '') + line + '\n')
            stream.flush()
            os.fsync(stream.fileno())

    def _records(self) -> List[Tuple[str, str, int]]:
        """The manifest's complete records, oldest first: (kind, name, size; 0 but for ``file``). A line without
        its newline, or ended as torn (``TORN_END``), is no record."""
        records: List[Tuple[str, str, int]] = []
        if not os.path.isfile(self.path):
            return records
        with open(self.path, encoding='utf-8', errors='replace') as stream:
            for line in stream:
                if not line.endswith('\n') or line.endswith(TORN_END):
                    continue  # torn by a kill while appending
                parts = line.rstrip('\n').split('\t')
                if parts[0] in ('temp', 'gone') and len(parts) == 2:
                    records.append((parts[0], parts[1], 0))
                elif parts[0] == 'file' and len(parts) == 3 and parts[2].isdigit():
                    records.append(('file', parts[1], int(parts[2])))
        return records

    def adopt_interrupted(self) -> List[str]:
        """Record the periodic checkpoint whose save was killed between the rename into place and the ``file``
        record: the manifest's last complete record is the announcement of its temporary file (``temp``; a kill
        ends the run, so nothing can follow it), that temporary file is gone (renamed), and the file is there.
        Called at ``bind`` before anything else is recorded. An announcement followed by any record (``gone``
        when the temporary file was removed by a failed write or by ``bind``) is never adopted: a file appearing
        later under that name is not the saver's. Returns the names adopted (none or one)."""
        records = self._records()
        if not records or records[-1][0] != 'temp':
            return []
        temporary = records[-1][1]
        match = ANNOUNCED_TEMPORARY.match(temporary)
        if match is None or not STEP_FILE.match(match.group(1)):
            return []
        name = match.group(1)
        path = os.path.join(self.directory, name)
        if (os.path.lexists(os.path.join(self.directory, temporary)) or not os.path.isfile(path)
                or os.path.islink(path)):
            return []
        self.record('file', name)
        return [name]

    def read(self) -> Tuple[Dict[str, int], List[str]]:
        """(files written: name -> size as written, newest record last; temporary files announced and not
        recorded ``gone`` since)."""
        files: Dict[str, int] = {}
        temporaries: Dict[str, None] = {}
        for kind, name, size in self._records():
            if kind == 'temp':
                temporaries[name] = None
            elif kind == 'gone':
                temporaries.pop(name, None)
            else:
                files[name] = size
        return files, list(temporaries)

    def wrote(self, name: str, files: Optional[Dict[str, int]] = None) -> bool:
        """Whether ``name`` is a regular file of the folder as the saver wrote it (listed, same size)."""
        files = self.read()[0] if files is None else files
        path = os.path.join(self.directory, name)
        return (name in files and os.path.isfile(path) and not os.path.islink(path)
                and os.path.getsize(path) == files[name])


class ModelSaver:
    """Checkpoints in ``<workspace>/<dir_path>``: ``model_epoch_E_minibatch_S`` every ``save_interval``
    iterations, ``latest`` (the newest of those), ``best`` (best validation F-measure) and ``final``.

    ``keep_last``: how many ``model_epoch_E_minibatch_S`` files stay (the newest written; 0 or None: all). Older
    ones are deleted after each periodic save; ``best``, ``final`` and ``latest`` are never deleted, and as they
    are hard links, a ``best`` whose periodic file was deleted stays readable. Only periodic files this saver wrote
    (listed in the folder's manifest with their size) are ever deleted. ``last_checkpoint`` holds the name of the
    newest checkpoint written.

    Creating the file ``<workspace>/<signal_path>`` asks for a checkpoint now; training goes on and
    the file is removed once the checkpoint is written.

    ``dir_path`` and ``signal_path`` are relative to the run's workspace and stay inside it (``OutputPathError``,
    a ``ValueError`` naming the key, otherwise: the experiment is refused before anything is written).
    """

    def __init__(self, dir_path: str = 'model', save_interval: int = 1000, signal_path: Optional[str] = None,
                 keep_last: Optional[int] = 3):
        self.dir_path = inside_workspace(dir_path, 'train.model_saver.dir_path')
        self.save_interval = int(save_interval)
        if self.save_interval < 1:
            raise ValueError(f'save_interval must be >= 1 iteration, got {save_interval}')
        self.keep_last = int(keep_last or 0)
        if self.keep_last < 0:
            raise ValueError(f'keep_last must be >= 0 (0 or null: keep every periodic checkpoint), got {keep_last}')
        self.signal_path = inside_workspace(signal_path, 'train.model_saver.signal_path') if signal_path else None
        self.directory: Optional[str] = None
        self.signal_file: Optional[str] = None
        self.manifest: Optional[Manifest] = None

    def bind(self, workspace: str) -> List[str]:
        """Resolve the folders against the run's workspace (the trainer calls this on rank 0), remove the
        temporary files an interrupted save left in the model folder (those the manifest announced), and name the
        files that look like the saver's but that it did not write (left alone). Returns one message per removal
        or file left alone, for the run's log. ``OutputPathError`` when a path leaves the workspace through a
        symbolic link."""
        directory = os.path.join(workspace, self.dir_path)
        signal_file = os.path.join(workspace, self.signal_path) if self.signal_path else None
        for key, path in (('train.model_saver.dir_path', directory), ('train.model_saver.signal_path', signal_file)):
            if path is not None and not _within(path, workspace):
                raise OutputPathError(f'{key}: {path} leads out of the run\'s workspace {workspace} (through a '
                                      f'symbolic link to {os.path.realpath(path)}); refused, nothing is written '
                                      'or deleted there')
        self.directory, self.signal_file = directory, signal_file
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as error:
            raise CheckpointWriteError(error.errno, error.strerror or str(error), directory,
                                       f'cannot create the checkpoint folder {directory}: '
                                       f'{error.strerror or error}; check the permissions of the workspace or '
                                       'choose another with --name') from error
        self.manifest = Manifest(directory)
        return self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> List[str]:
        messages = []
        directory = self._require_bound()
        manifest = self._manifest()
        for name in manifest.adopt_interrupted():
            messages.append(f'recorded {os.path.join(directory, name)}: a periodic checkpoint whose save was '
                            'interrupted after the file was in place (before the manifest heard of it)')
        files, temporaries = manifest.read()
        announced = set(temporaries)
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            if TEMPORARY_FILE.match(name):
                if name not in announced:
                    messages.append(f'left alone: {path} looks like a temporary file of a checkpoint save, but this '
                                    f'project\'s saver did not write it (not in {manifest.path})')
                    continue
                try:
                    size = os.path.getsize(path)
                    os.remove(path)
                except FileNotFoundError:  # another process of the run removed it first
                    continue
                manifest.record('gone', name)
                messages.append(f'removed {path} ({_size(size)}): temporary file of an interrupted checkpoint save')
            elif STEP_FILE.match(name) and not manifest.wrote(name, files):
                messages.append(f'left alone: {path} is named like a periodic checkpoint, but this project\'s saver '
                                f'did not write it (not in {manifest.path}, or changed since): never deleted by the '
                                'keep_last clean-up')
        return messages

    def _require_bound(self) -> str:
        if self.directory is None:
            raise RuntimeError('ModelSaver.bind(workspace) must be called before saving')
        return self.directory

    def _manifest(self) -> Manifest:
        self._require_bound()
        assert self.manifest is not None  # set by bind
        return self.manifest

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
        record = self._manifest().record
        atomic_torch_save(content, path, record)
        atomic_write_text(name + '\n', self.path_of(LAST_CHECKPOINT), record)
        return path

    def save_step(self, content: Dict[str, Any], epoch: int, iteration: int) -> str:
        """``model_epoch_E_minibatch_S`` and ``latest``; then only the newest ``keep_last`` periodic files stay."""
        path = self.save(content, self.step_name(epoch, iteration))
        self.link_latest(path)
        self.prune(keep=os.path.basename(path))
        return path

    def prune(self, keep: Optional[str] = None) -> List[str]:
        """Delete all but the newest ``keep_last`` periodic files this saver wrote (by time written, then
        iteration), never ``keep`` nor a file the manifest does not list; returns the deleted paths."""
        if not self.keep_last:
            return []
        directory = self._require_bound()
        manifest = self._manifest()
        files = manifest.read()[0]
        periodic = []
        for name in os.listdir(directory):
            match = STEP_FILE.match(name)
            if match and manifest.wrote(name, files):
                periodic.append((os.stat(os.path.join(directory, name)).st_mtime_ns, int(match.group(2)), name))
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
        atomic_link(path, latest, self._manifest().record)
        return latest

    def mark_best(self, path: str) -> str:
        best = self.path_of('best')
        atomic_link(path, best, self._manifest().record)
        return best

    def __repr__(self) -> str:
        return (f'ModelSaver(dir_path={self.dir_path!r}, save_interval={self.save_interval}, '
                f'signal_path={self.signal_path!r}, keep_last={self.keep_last})')
