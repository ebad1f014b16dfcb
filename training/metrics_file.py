"""``metrics.jsonl``: a run's figures as JSON lines, for plots and scripts (docs/training.md, "Training feedback").

One JSON object per line, each with a ``type``:

- ``train`` (every ``log_interval`` iterations): ``epoch``, ``iteration`` (global step), ``lr``, ``loss``, each named
  loss term, ``samples_per_second``, ``time`` (Unix seconds);
- ``validation`` (each validation, per loader): ``epoch``, ``iteration``, ``loader``, ``precision``, ``recall``,
  ``fmeasure`` (the hmean), ``time``;
- ``start`` (each start of a run): ``iteration``, ``epoch``, ``resumed_from`` (the checkpoint, or null),
  ``dropped`` (lines removed, below), ``time``;
- ``sweep`` (eval.py ``--sweep --metrics PATH``) and ``evaluation`` (eval.py ``--metrics PATH``): see eval.py.

The rule of resume: at every start of a training run the file keeps only the ``train`` and ``validation`` lines of
iterations up to the one the run starts from (a resume: the checkpoint's), so that the lines a run wrote after its
last checkpoint before a crash, which the resumed run writes again, appear once; the file is rewritten atomically
(``concern.files.atomic_write``) before anything is appended, the lines it keeps byte for byte (an iteration written
as an integral float, ``4.0``, counts as that iteration). A ``train`` or ``validation`` line is never written
twice for the same iteration (and loader). Lines are flushed as written; a line torn by a crash while writing is
skipped by the reader (``read_metrics``) and removed by the next start.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from concern.files import atomic_write, ends_torn

METRICS_FILE = 'metrics.jsonl'
# the types that a start trims to its iteration and that are never written twice for one iteration (and loader)
PER_ITERATION_TYPES = ('train', 'validation')

Key = Tuple[str, int, Optional[str]]


def plain(value: Any) -> Any:
    """A JSON-writable value: tensors and NumPy scalars as floats, non-finite floats as null."""
    if hasattr(value, 'item') and callable(value.item):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return str(value)


def read_metrics(path: str) -> List[Dict[str, Any]]:
    """The records of a metrics file, in order. A line that is not a JSON object (a line torn by a crash while it
    was written) is skipped."""
    records: List[Dict[str, Any]] = []
    with open(path, encoding='utf-8', errors='replace') as stream:
        for line in stream:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def _key(record: Mapping[str, Any]) -> Optional[Key]:
    """(type, iteration, loader) of a ``train`` / ``validation`` line; an integral float iteration (``4.0``, a
    script's edit) counts as that int. None for other lines."""
    kind, iteration = record.get('type'), record.get('iteration')
    if isinstance(iteration, float) and iteration.is_integer():
        iteration = int(iteration)
    if kind not in PER_ITERATION_TYPES or isinstance(iteration, bool) or not isinstance(iteration, int):
        return None
    loader = record.get('loader')
    return str(kind), iteration, None if loader is None else str(loader)


def _line(record: Mapping[str, Any]) -> str:
    return json.dumps(plain(record), allow_nan=False, separators=(', ', ': ')) + '\n'


def append_metrics(path: str, records: Iterable[Mapping[str, Any]]) -> None:
    """Append ``records`` to the file at ``path`` (created when absent; never truncated). A torn last line is ended
    first, so that it stays one unreadable line instead of swallowing the first record."""
    torn = ends_torn(path)
    with open(path, 'a', encoding='utf-8') as stream:
        if torn:
            stream.write('\n')
        for record in records:
            stream.write(_line(record))
        stream.flush()


class MetricsWriter:
    """The training run's ``metrics.jsonl`` (rank 0 writes it). ``start`` applies the rule of resume and opens the
    file for appending; ``write`` appends one flushed line."""

    def __init__(self, path: str):
        self.path = path
        self.stream: Any = None
        self.seen: Set[Key] = set()

    def start(self, iteration: int, epoch: int, resumed_from: Optional[str]) -> int:
        """Keep the ``train`` / ``validation`` lines up to ``iteration`` and every other line, drop torn lines, and
        write the ``start`` record. Returns the number of lines dropped (torn ones included)."""
        kept: List[bytes] = []
        dropped = 0
        if os.path.isfile(self.path):
            with open(self.path, 'rb') as stream:
                for line in stream:
                    if not line.strip():
                        continue
                    try:  # decoded only to classify the line; a kept line is written back byte for byte
                        record = json.loads(line.decode('utf-8', errors='replace'))
                    except ValueError:
                        dropped += 1
                        continue
                    key = _key(record) if isinstance(record, dict) else None
                    if key is not None and (key[1] > iteration or key in self.seen):
                        dropped += 1
                        continue
                    if key is not None:
                        self.seen.add(key)
                    kept.append(line if line.endswith(b'\n') else line + b'\n')
            if dropped:
                atomic_write(self.path, b''.join(kept))
        self.stream = open(self.path, 'a', encoding='utf-8')
        if ends_torn(self.path):
            self.stream.write('\n')
        self.write({'type': 'start', 'iteration': iteration, 'epoch': epoch, 'resumed_from': resumed_from,
                    'dropped': dropped})
        return dropped

    def write(self, record: Mapping[str, Any]) -> bool:
        """Append ``record`` (``time`` added when absent); False, writing nothing, for a ``train`` or ``validation``
        line of an iteration (and loader) already in the file."""
        if self.stream is None:
            raise RuntimeError('MetricsWriter.start() opens the file first')
        key = _key(record)
        if key is not None:
            if key in self.seen:
                return False
            self.seen.add(key)
        record = dict(record)
        record.setdefault('time', round(time.time(), 3))
        self.stream.write(_line(record))
        self.stream.flush()
        return True

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


__all__ = ['METRICS_FILE', 'MetricsWriter', 'append_metrics', 'plain', 'read_metrics']
