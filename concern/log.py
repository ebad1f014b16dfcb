"""``Logger``: the run's text log, its saved config, TensorBoard scalars/images and progress bars.

Only rank 0 writes files; other ranks print warnings and errors to the console, tagged with their rank.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any, Mapping, Optional

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
        os.makedirs(log_dir, exist_ok=True)
        file_handler = logging.FileHandler(os.path.join(log_dir, LOG_FILE), encoding='utf-8')
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
        with open(path, 'w', encoding='utf-8') as stream:
            yaml.safe_dump(dict(config), stream, sort_keys=False, allow_unicode=True)
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
        """Log ``message`` with the traceback of the exception being handled."""
        self._logger.error(f'{message}\n{traceback.format_exc()}')

    # -- TensorBoard ------------------------------------------------------------------------
    def should_log(self, iteration: int) -> bool:
        return iteration % self.log_interval == 0

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
            self._writer = SummaryWriter(os.path.join(self.log_dir, TENSORBOARD_DIR))
        return self._writer or None

    def scalars(self, iteration: int, values: Mapping[str, float], prefix: str = '') -> None:
        writer = self._tensorboard()
        if writer is None:
            return
        for name, value in values.items():
            writer.add_scalar(prefix + name, float(value), iteration)

    def images(self, iteration: int, images: Mapping[str, np.ndarray], prefix: str = '') -> None:
        """``images``: name -> (H, W) float in [0, 1] or (H, W, 3) uint8 RGB."""
        writer = self._tensorboard()
        if writer is None:
            return
        for name, image in images.items():
            image = np.asarray(image)
            if image.ndim == 2:
                writer.add_image(prefix + name, image, iteration, dataformats='HW')
            elif image.ndim == 3 and image.shape[2] == 3:
                writer.add_image(prefix + name, image, iteration, dataformats='HWC')
            else:
                raise ValueError(f'image {name!r}: expected (H, W) or (H, W, 3), got shape {image.shape}')
        writer.flush()

    # -- progress ---------------------------------------------------------------------------
    def progress(self, total: int, initial: int = 0, desc: str = '') -> Any:
        if self.rank != 0:
            return _NullBar()
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False, file=sys.stderr)

    def close(self) -> None:
        for handler in list(self._logger.handlers):
            handler.close()
            self._logger.removeHandler(handler)
        if self._writer:
            self._writer.close()
        self._writer = None

    def __repr__(self) -> str:
        return f'Logger(verbose={self.verbose}, level={self.level!r}, log_interval={self.log_interval})'
