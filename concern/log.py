"""``Logger``: the run's text log, its saved config, TensorBoard scalars/images and progress bars.

Only rank 0 writes files; other ranks print warnings and errors to the console, tagged with their rank.

A file the logger cannot write (``output.log`` or ``config.yaml`` in a folder without permission, TensorBoard's
event files on a full disk, whose writer thread reports the error only at a later call or at ``close``) is one
``LogWriteError`` naming the file or folder, the reason and the remedy. ``fatal`` writes an expected error that
ends the run once, as one line, to the log and the console; ``exception`` writes a bug's traceback there.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import traceback
from typing import Any, Callable, Mapping, Optional

import numpy as np
import yaml

LEVELS = {'debug': logging.DEBUG, 'info': logging.INFO, 'warning': logging.WARNING, 'error': logging.ERROR,
          'critical': logging.CRITICAL}
LOG_FILE = 'output.log'
CONFIG_FILE = 'config.yaml'
TENSORBOARD_DIR = 'tensorboard'
_PLAIN = (str, int, float, bool, type(None))


def find_non_plain(value: Any, path: str = '') -> Optional[str]:
    """The key path of the first value that is not a plain YAML value (str/number/bool/None/list/dict)."""
    if isinstance(value, _PLAIN):
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = find_non_plain(item, f'{path}[{index}]')
            if found is not None:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, _PLAIN):
                return f'{path}.{key!r} (key of type {type(key).__name__})'
            found = find_non_plain(item, f'{path}.{key}' if path else str(key))
            if found is not None:
                return found
        return None
    return f'{path or "<root>"} (a {type(value).__name__})'


class LogWriteError(OSError):
    """The run's log, saved config or TensorBoard events could not be written; the message names the file or
    folder, the reason (and the free space) and the remedy."""

    def __init__(self, code: Optional[int], strerror: str, filename: str, message: str):
        super().__init__(code, strerror, filename)
        self.message = message

    def __str__(self) -> str:
        return self.message


# The attribute an exception gets once ``Logger.fatal`` / ``Logger.exception`` has written it: the entry point
# then does not print it a second time.
REPORTED = 'reported_to_run_log'


def mark_reported(error: BaseException) -> None:
    try:
        setattr(error, REPORTED, True)
    except AttributeError:  # an exception type with __slots__: it is printed again, which is harmless
        pass


def was_reported(error: BaseException) -> bool:
    return bool(getattr(error, REPORTED, False))


def _free_space(path: str) -> str:
    folder = path
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        free = shutil.disk_usage(folder or '.').free
    except OSError:
        return 'free space unknown'
    return f'{free / (1 << 20):.1f} MB free on that file system'


def log_write_error(error: OSError, path: str, what: str, remedy: str) -> LogWriteError:
    """``error`` raised while writing ``what`` at ``path`` as a ``LogWriteError`` naming them and ``remedy``."""
    reason = error.strerror or str(error) or type(error).__name__
    return LogWriteError(error.errno, reason, path,
                         f'cannot write {what} {path}: {reason} ({_free_space(path)}); {remedy}')


class _FileHandler(logging.FileHandler):
    """The run's ``output.log``: a failed write (disk full) is said once on the console, as one line, instead of
    logging's traceback per message."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        self.failed = True
        error = sys.exc_info()[1]
        reason = getattr(error, 'strerror', None) or str(error)
        print(f'cannot write the run\'s log {self.baseFilename}: {reason}; later messages go to the console only',
              file=sys.stderr)


class _ConsoleHandler(logging.Handler):
    """Writes through tqdm so that messages do not break the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise into training
            self.handleError(record)


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str = '', refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


class Logger:
    def __init__(self, verbose: bool = False, level: str = 'info', log_interval: int = 100):
        if str(level).lower() not in LEVELS:
            raise ValueError(f'level: expected one of {", ".join(LEVELS)}, got {level!r}')
        self.verbose = bool(verbose)
        self.level = str(level).lower()
        self.log_interval = int(log_interval)
        if self.log_interval < 1:
            raise ValueError(f'log_interval must be >= 1 iteration, got {log_interval}')
        self.log_dir: Optional[str] = None
        self.rank = 0
        self._writer: Any = None
        self._logger = logging.getLogger(f'dbnet.run.{id(self)}')
        self._logger.propagate = False
        self._logger.setLevel(logging.DEBUG)

    # -- set-up -----------------------------------------------------------------------------
    def open(self, log_dir: str, config: Optional[Mapping[str, Any]] = None, rank: int = 0,
             debug: bool = False) -> None:
        """Start logging to ``log_dir`` (rank 0), writing ``config`` there as YAML."""
        self.close()
        self.rank = int(rank)
        level = logging.DEBUG if debug else LEVELS[self.level]
        console = _ConsoleHandler()
        if self.rank == 0:
            console.setLevel(level if self.verbose or debug else logging.WARNING)
            console.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s', '%H:%M:%S'))
        else:
            console.setLevel(logging.WARNING)
            console.setFormatter(logging.Formatter(f'[rank {self.rank}] %(levelname)s %(message)s'))
        self._logger.addHandler(console)
        if self.rank != 0:
            return
        self.log_dir = log_dir
        path = os.path.join(log_dir, LOG_FILE)
        try:
            os.makedirs(log_dir, exist_ok=True)
            file_handler = _FileHandler(path, encoding='utf-8')
        except OSError as error:
            raise log_write_error(error, path, "the run's log", f'check the permissions of {log_dir} (or choose '
                                  'another run name with --name)') from None
        file_handler.setLevel(level)
        file_handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s'))
        self._logger.addHandler(file_handler)
        if config is not None:
            self.save_config(config)

    def save_config(self, config: Mapping[str, Any]) -> str:
        bad = find_non_plain(config)
        if bad is not None:
            raise TypeError(f'compiled config: expected plain YAML values, got a non-plain value at {bad}')
        path = os.path.join(self._require_dir(), CONFIG_FILE)
        try:
            with open(path, 'w', encoding='utf-8') as stream:
                yaml.safe_dump(dict(config), stream, sort_keys=False, allow_unicode=True)
        except OSError as error:
            raise log_write_error(error, path, "the run's config", 'free some space or check the permissions of '
                                  'the workspace, then start again') from None
        return path

    def _require_dir(self) -> str:
        if self.log_dir is None:
            raise RuntimeError('Logger.open(log_dir) must be called first (rank 0 only)')
        return self.log_dir

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- text -------------------------------------------------------------------------------
    def debug(self, message: str) -> None:
        self._logger.debug(message)

    def info(self, message: str) -> None:
        self._logger.info(message)

    def warning(self, message: str) -> None:
        self._logger.warning(message)

    def error(self, message: str) -> None:
        self._logger.error(message)

    def exception(self, message: str) -> None:
        """Log ``message`` with the traceback of the exception being handled (a bug: the traceback stays)."""
        self._logger.error(f'{message}\n{traceback.format_exc()}')
        error = sys.exc_info()[1]
        if error is not None:
            mark_reported(error)

    def fatal(self, error: BaseException) -> None:
        """An expected error that ends the run (its message names what failed, the path and the remedy): one line
        in the log and on the console, no traceback; marked so that the entry point does not print it again."""
        self._logger.error(str(error))
        mark_reported(error)

    # -- TensorBoard ------------------------------------------------------------------------
    def should_log(self, iteration: int) -> bool:
        return iteration % self.log_interval == 0

    @property
    def tensorboard_dir(self) -> Optional[str]:
        return os.path.join(self.log_dir, TENSORBOARD_DIR) if self.log_dir is not None else None

    def _tensorboard_error(self, error: OSError) -> LogWriteError:
        folder = self.tensorboard_dir or TENSORBOARD_DIR
        return log_write_error(error, folder, 'TensorBoard events to', 'free some space on that file system (the '
                               'checkpoints are written to the same workspace), then resume from the latest '
                               'checkpoint')

    def _writing(self, action: Callable[[Any], None]) -> None:
        """``action(writer)`` on the TensorBoard writer; its errors (also those its writer thread met earlier,
        which it raises at the next call) as ``LogWriteError`` naming the TensorBoard folder."""
        writer = self._tensorboard()
        if writer is None:
            return
        try:
            action(writer)
        except OSError as error:
            raise self._tensorboard_error(error) from None

    def _tensorboard(self) -> Any:
        if self.rank != 0 or self.log_dir is None:
            return None
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                self.warning(f'TensorBoard logging disabled: {error}')
                self._writer = False
                return None
            try:
                self._writer = SummaryWriter(self.tensorboard_dir)
            except OSError as error:
                raise self._tensorboard_error(error) from None
        return self._writer or None

    def scalars(self, iteration: int, values: Mapping[str, float], prefix: str = '') -> None:
        def write(writer: Any) -> None:
            for name, value in values.items():
                writer.add_scalar(prefix + name, float(value), iteration)
        self._writing(write)

    def images(self, iteration: int, images: Mapping[str, np.ndarray], prefix: str = '') -> None:
        """``images``: name -> (H, W) float in [0, 1] or (H, W, 3) uint8 RGB."""
        checked = {}
        for name, image in images.items():
            image = np.asarray(image)
            if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
                raise ValueError(f'image {name!r}: expected (H, W) or (H, W, 3), got shape {image.shape}')
            checked[name] = image

        def write(writer: Any) -> None:
            for name, image in checked.items():
                writer.add_image(prefix + name, image, iteration, dataformats='HW' if image.ndim == 2 else 'HWC')
            writer.flush()
        self._writing(write)

    # -- progress ---------------------------------------------------------------------------
    def progress(self, total: int, initial: int = 0, desc: str = '') -> Any:
        if self.rank != 0:
            return _NullBar()
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False, file=sys.stderr)

    def close(self) -> None:
        """Close the TensorBoard writer, then the log. A writer failure (reported by its thread only now, e.g. a
        full disk) is written to the log first and raised as ``LogWriteError`` naming the TensorBoard folder."""
        failure: Optional[LogWriteError] = None
        writer, self._writer = self._writer, None
        if writer:
            try:
                writer.close()
            except OSError as error:
                failure = self._tensorboard_error(error)
                self.fatal(failure)
        for handler in list(self._logger.handlers):
            handler.close()
            self._logger.removeHandler(handler)
        if failure is not None:
            raise failure

    def __repr__(self) -> str:
        return f'Logger(verbose={self.verbose}, level={self.level!r}, log_interval={self.log_interval})'
