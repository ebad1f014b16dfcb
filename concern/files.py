"""Writing a file whole or not at all: ``atomic_write``, the one helper for every output that replaces a file
(converted lists, metrics files, exported models). Checkpoints go through ``training.model_saver``, which adds its
manifest records around the same steps. ``ends_torn``: whether an append-only file's last line was cut short."""
from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable, Union


def _default_mode() -> int:
    """The permission bits ``open(path, 'w')`` would give a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str, content: Union[bytes, str, Callable[[BinaryIO], object]]) -> None:
    """Write ``path`` through a temporary file in its folder, flushed to disk and renamed over it when complete, so
    that a reader (or a crash) sees the old file or the new one, never a part. ``content``: bytes, text (UTF-8), or a
    function writing into the open binary stream. The new file gets the mode of the file it replaces, else the
    default for a new file (``mkstemp``'s 0600 would hide a data set's list from other users). On any error the
    temporary file is removed and the error raised; ``path`` is then unchanged."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(handle, 'wb') as stream:
            if isinstance(content, str):
                stream.write(content.encode('utf-8'))
            elif isinstance(content, (bytes, bytearray)):
                stream.write(content)
            else:
                content(stream)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = _default_mode()
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def ends_torn(path: str) -> bool:
    """Whether the file's last line lacks its newline (a crash or a kill while it was appended); False for an empty
    or missing file. The check of append-only logs (metrics.jsonl, the checkpoint manifest) before they append."""
    try:
        with open(path, 'rb') as stream:
            stream.seek(0, os.SEEK_END)
            if stream.tell() == 0:
                return False
            stream.seek(-1, os.SEEK_END)
            return stream.read(1) != b'\n'
    except FileNotFoundError:
        return False
