"""SIGINT / SIGTERM during training: finish the current step, save a checkpoint, stop cleanly."""
from __future__ import annotations

import signal
import threading
from typing import Any, Dict, Optional


class StopRequest:
    """Context manager recording the first SIGINT/SIGTERM; a second one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal_number: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def _handle(self, number: int, frame: Any) -> None:
        if self.signal_number is not None:
            self._restore()
            raise KeyboardInterrupt(f'second signal {signal.Signals(number).name}: stopping without saving')
        self.signal_number = number

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def __enter__(self) -> 'StopRequest':
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()
