"""Score result files against ground truth, as the official evaluation scripts do, with this project's
protocol code (the measurers' evaluators, the same as eval.py and validation use).

    python -m tools.score --gt GT --submission RES [--protocol icdar2015|deteval] [--gt_format FORMAT]
                          [--invalid_polygons official|drop] [--deteval_version current|pre-2019] [--per_image]

GT and RES are folders or zip files of per-image files (only the files' names count, not folders inside a
zip). Ground-truth files are named as data/readers.py's ``GT_NAME_PATTERNS`` give them for ``--gt_format``
(ICDAR 2015: ``gt_img_N.txt`` or ``img_N.jpg.txt``) and read by that format's reader; the result file of
the image with stem S is ``res_S.txt`` (ICDAR 2015: ``res_img_N.txt``), as eval.py --result_dir writes
them, one line per detection ``x1,y1,...,xn,yn[,score]``.

As the official ICDAR 2015 script (rrc_evaluation_funcs.py + script.py of task 4.1):
- every file of the submission must be a result file (``ZIP entry not valid``), and of an image with
  ground truth (``The sample ... not present in GT``): otherwise an error naming it;
- an image with ground truth but no result file is scored with no detections;
- the last line printed is ``Calculated!`` followed by the JSON of the method's numbers,
  ``{"precision": P, "recall": R, "hmean": F, "AP": 0}`` (the script's AP is 0 with its default
  CONFIDENCES off; its zero cases are the integer 0, as here). With DetEval: precision, recall, hmean.
Before it a line says how many images were scored, and ``--per_image`` prints one line per image.

Result lines: values separated by commas, surrounding spaces allowed, blank lines skipped; an even count of
numbers is the coordinates of at least 3 points, an odd count is coordinates then a score, which must lie in
[0, 1] (else the count of coordinates is odd: an error). A value that is not a finite number, an odd count
of coordinates or fewer than 3 points is an error naming the file and line. Unlike the official script
(exactly 8 integer coordinates, corners clockwise on screen, no score unless CONFIDENCES is on), any N >= 3
points, decimal coordinates and either orientation are accepted; a file the official script takes gives
the same numbers here (areas are computed with GEOS instead of GPC: they agree to about 1e-12 relative, which
could only tell when an IoU or a don't-care share lies that close to 0.5).

Ground truth: ``--gt_format icdar2015`` reads ``x1,y1,...,xn,yn,transcription`` lines with n >= 4 points
(data/readers.py ``read_icdar2015``: the coordinates are the longest even run of leading numbers that leaves a
transcription; past 8, a transcription beginning with a number must be quoted, else an error naming the file
and line). The official script reads exactly 8 coordinates and the rest as the transcription; here a line of
more is the polygon it outlines, scored with the same arithmetic as a quadrilateral. A line reads as the
official script reads it unless its transcription has three or more comma-separated parts of which the first
two are numbers (``12,34,abc``: read as a fifth point; ``1,000,000``: an error): quote such a transcription.
Ground-truth and result files are UTF-8 (a UTF-16 or UTF-32 file with its byte-order mark is read as such; one
without it that holds NUL bytes is an error naming the file and the encoding): data/readers.py ``decode_text``.

Untrusted input (``Limits``; each has an option to raise it): a file's decompressed size (``--max_file_bytes``,
default 64 MiB), the decompressed size of all files of one side (``--max_total_bytes``, 1 GiB), the number of
files or zip entries (``--max_files``, 100,000) and the lines of one file (``--max_lines``, 1,000,000). A zip
member is read as a stream: its declared size (the zip header) is checked before any byte is inflated, and the
bytes and lines are counted while reading, since a header can lie; a zip's member count (and directory size) are
read from its end record (found, ZIP64's too, where ``zipfile`` finds it; none: refused), and its directory's
headers counted up to the limit, before ``zipfile`` reads the directory; a folder's ground-truth file is read
once, by its reader, its size from the file system and its lines counted on its decoded text (every boundary
``str.splitlines`` splits at). A limit reached is a ScoreError (or DataError) naming the file, the limit and the
option. An ICDAR 2015 submission is 500 files of at most a few hundred lines.

Exit status 0 on success, 2 on an error (printed on stderr as ``error: ...``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import struct
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from data.image_io import IMAGE_EXTENSIONS

PROTOCOLS = {'icdar2015': 'iou', 'deteval': 'deteval'}
RESULT_NAME = re.compile(r'^res_(?P<stem>.+)\.txt$')


class ScoreError(ValueError):
    """A submission or ground truth that cannot be scored; the message names the file (and line)."""


@dataclass(frozen=True)
class Limits:
    """What the scorer reads of one side (the ground truth, or the submission), far above real data (an ICDAR
    2015 submission: 500 files of at most a few hundred lines, a few kB each). The cost at these defaults is
    in docs/evaluation.md."""
    max_file_bytes: int = 64 << 20  # decompressed bytes of one file (zip member or file of a folder)
    max_total_bytes: int = 1 << 30  # decompressed bytes of all files read from one side
    max_files: int = 100_000  # files of a folder, entries of a zip file
    max_lines: int = 1_000_000  # lines of one file (newlines; a ground-truth file's: what its reader splits at)

    def __post_init__(self) -> None:
        for name in ('max_file_bytes', 'max_total_bytes', 'max_files', 'max_lines'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ScoreError(f'{name}: expected a positive integer, got {value!r}')


DEFAULT_LIMITS = Limits()
CHUNK_BYTES = 1 << 20


def read_limited(stream: IO[bytes], display: str, limits: Limits, declared: Optional[int] = None,
                 budget: Optional[List[int]] = None) -> bytes:
    """The bytes of ``stream`` (a zip member or a file), read in chunks and counted: ScoreError naming
    ``display`` and the limit as soon as the file passes ``limits.max_file_bytes`` or ``limits.max_lines``, or
    the bytes read so far from its side (``budget``: a one-item list, updated) pass ``limits.max_total_bytes``.
    ``declared``: the size the zip header or the file system gives, refused before reading when over the
    limit; the count while reading does not trust it."""
    if declared is not None and declared > limits.max_file_bytes:
        raise ScoreError(f'{display}: {declared} bytes decompressed, more than the limit of '
                         f'{limits.max_file_bytes} bytes per file (--max_file_bytes)')
    chunks: List[bytes] = []
    size = lines = 0
    while True:
        chunk = stream.read(CHUNK_BYTES)
        if not chunk:
            break
        size += len(chunk)
        lines += chunk.count(b'\n')
        if size > limits.max_file_bytes:
            raise ScoreError(f'{display}: more than the limit of {limits.max_file_bytes} bytes per file '
                             f'(--max_file_bytes) when decompressed')
        if lines > limits.max_lines:
            raise ScoreError(f'{display}: more than the limit of {limits.max_lines} lines per file (--max_lines)')
        if budget is not None:
            budget[0] += len(chunk)
            if budget[0] > limits.max_total_bytes:
                raise ScoreError(f'{display}: the files read so far hold more than the limit of '
                                 f'{limits.max_total_bytes} bytes in total (--max_total_bytes)')
        chunks.append(chunk)
    return b''.join(chunks)


def parse_result_text(text: str, where: str) -> List[Dict[str, Any]]:
    """Detections of one result file's ``text``: ``[{'points': [[x, y], ...], 'score': float or None}]``
    in file order. ``where`` names the file in errors (ScoreError ``<where>:<line>: ...``)."""
    detections = []
    for number, line in enumerate(text.split('\n'), 1):
        line = line.replace('\r', '')
        if not line.strip():
            continue
        values = []
        for token in line.split(','):
            try:
                value = float(token.strip())
            except ValueError:
                raise ScoreError(f'{where}:{number}: {token.strip()!r} is not a number in {line!r}') from None
            if not math.isfinite(value):
                raise ScoreError(f'{where}:{number}: non-finite value {token.strip()!r} in {line!r}')
            values.append(value)
        score = None
        if len(values) % 2:
            if not 0.0 <= values[-1] <= 1.0:
                raise ScoreError(f'{where}:{number}: odd number of coordinates ({len(values)} values, and the '
                                 f'last, {values[-1]:g}, is no score in [0, 1]) in {line!r}')
            score = values.pop()
        if len(values) < 6:
            raise ScoreError(f'{where}:{number}: fewer than 3 points ({len(values) // 2}) in {line!r}')
        detections.append({'points': [[values[i], values[i + 1]] for i in range(0, len(values), 2)],
                           'score': score})
    return detections


def parse_result_points(text: str, where: str) -> Union[np.ndarray, List[np.ndarray]]:
    """The points of one result file's detections, each a (N, 2) float64 array, in file order: what
    ``parse_result_text`` reads, with the same errors. A file whose lines all hold the same count of values
    (the usual case: quadrilaterals, with or without a score) is parsed in one vectorised call and returned as
    one (D, N, 2) array; any other file, and any file with an error, line by line."""
    uniform = _parse_uniform(text)
    if uniform is not None:
        return uniform
    return [np.asarray(item['points'], dtype=np.float64) for item in parse_result_text(text, where)]


def _parse_uniform(text: str) -> Optional[np.ndarray]:
    """(D, N, 2) points of ``text`` when every non-blank line holds the same count of finite numbers that
    ``parse_result_text`` accepts, else None (that function then reads it and names the offending line).
    numpy reads the numbers with the same correctly rounded conversion as ``float``; what it does not take
    (underscores, non-ASCII digits, ...) falls back to the line-by-line reading."""
    lines = [line for line in text.replace('\r', '').split('\n') if line.strip()]
    if not lines:
        return np.zeros((0, 3, 2), dtype=np.float64)
    try:
        values = np.loadtxt(lines, delimiter=',', dtype=np.float64, comments=None, ndmin=2)
    except ValueError:
        return None
    if values.shape[0] != len(lines) or not np.isfinite(values).all():
        return None
    count = values.shape[1]
    if count % 2:
        if not ((values[:, -1] >= 0.0) & (values[:, -1] <= 1.0)).all():
            return None
        values, count = values[:, :-1], count - 1
    if count < 6:
        return None
    return np.ascontiguousarray(values).reshape(len(lines), count // 2, 2)


def image_stem(file_name: str, gt_format: str) -> Optional[str]:
    """The image stem whose ground-truth file ``file_name`` is under ``gt_format``'s naming
    (data/readers.py GT_NAME_PATTERNS), or None. Patterns holding the image's full name are tried first
    (they need an image extension, e.g. ``img_1.jpg.txt``), then those holding its stem (``gt_img_1.txt``)."""
    from data.readers import GT_NAME_PATTERNS
    patterns = GT_NAME_PATTERNS[gt_format]
    for pattern in sorted(patterns, key=lambda item: '{name}' not in item):
        expression = re.escape(pattern).replace(r'\{name\}', r'(?P<name>.+)').replace(r'\{stem\}', r'(?P<stem>.+)')
        match = re.fullmatch(expression, file_name)
        if match is None:
            continue
        if '{name}' in pattern:
            stem, extension = os.path.splitext(match.group('name'))
            if extension.lower() in IMAGE_EXTENSIONS and stem:
                return stem
        else:
            return match.group('stem')
    return None


_END_OF_DIRECTORY = struct.Struct('<4s4H2LH')  # zip's end of central directory record
_ZIP64_LOCATOR = struct.Struct('<4sLQL')
_ZIP64_END = struct.Struct('<4sQ2H2L4Q')


def zip_directory_size(location: str) -> Optional[Tuple[int, int, int]]:
    """(entries, central directory bytes, where the directory starts) of the zip file ``location`` as the end
    record ``zipfile`` will use declares them (the start as ``zipfile`` infers it: the directory ends where the end
    records begin), reading at most 64 kB from its end; None when ``zipfile`` finds no end record.

    The record is found as ``zipfile._EndRecData`` finds it (Python 3.11): the last 22 bytes when they are a
    record without a comment, else the last signature in the last 64 kB + 22 bytes (a signature too near the
    end for a whole record: None). When a ZIP64 locator precedes it, the ZIP64 end record is read where
    ``zipfile`` reads it, right before the locator (the locator's offset is not used), and its count and size
    replace the end record's (whose fields are then 0xFFFF / 0xFFFFFFFF placeholders). A ZIP64 locator
    ``zipfile`` would fail on (several disks, no room for the record before it) is a ValueError; reading errors
    are OSError."""
    with open(location, 'rb') as handle:
        length = handle.seek(0, os.SEEK_END)
        if length < _END_OF_DIRECTORY.size:
            return None
        handle.seek(length - _END_OF_DIRECTORY.size)
        last = handle.read(_END_OF_DIRECTORY.size)
        if last.startswith(b'PK\x05\x06') and last.endswith(b'\x00\x00'):
            record_at, record = length - _END_OF_DIRECTORY.size, last
        else:
            start = max(0, length - (_END_OF_DIRECTORY.size + 0x10000))
            handle.seek(start)
            tail = handle.read()
            position = tail.rfind(b'PK\x05\x06')
            if position < 0 or len(tail) - position < _END_OF_DIRECTORY.size:
                return None
            record_at, record = start + position, tail[position:position + _END_OF_DIRECTORY.size]
        fields = _END_OF_DIRECTORY.unpack(record)
        count, size = fields[4], fields[5]
        locator_at = record_at - _ZIP64_LOCATOR.size
        if locator_at < 0:
            return count, size, record_at - size
        handle.seek(locator_at)
        locator = handle.read(_ZIP64_LOCATOR.size)
        if len(locator) != _ZIP64_LOCATOR.size or not locator.startswith(b'PK\x06\x07'):
            return count, size, record_at - size
        _, disk, _, disks = _ZIP64_LOCATOR.unpack(locator)
        if disk != 0 or disks > 1:
            raise ValueError('a ZIP64 locator naming several disks (not supported)')
        zip64_at = locator_at - _ZIP64_END.size
        if zip64_at < 0:
            raise ValueError('a ZIP64 locator with no room for its end record before it')
        handle.seek(zip64_at)
        zip64 = handle.read(_ZIP64_END.size)
        if len(zip64) != _ZIP64_END.size or not zip64.startswith(b'PK\x06\x06'):
            return count, size, record_at - size
        values = _ZIP64_END.unpack(zip64)
        return values[7], values[8], zip64_at - values[8]


_CENTRAL_HEADER = struct.Struct('<4s4B4HL2L5H2L')  # a central directory entry, before its name, extra and comment


def count_directory_entries(location: str, start: int, size: int, stop: int) -> int:
    """The entries of the zip file's central directory of ``size`` bytes at ``start`` (``zip_directory_size``),
    walked header by header as ``zipfile`` will parse them (46 bytes, then name, extra field and comment), counting
    at most ``stop``: the end record's count can lie, and ``zipfile`` parses the directory by its size. The walk
    stops early where ``zipfile`` would fail (a truncated header, a bad signature, a negative start); it reads the
    46-byte headers only."""
    if start < 0:
        return 0
    count = total = 0
    chunk, chunk_at = b'', 0  # the directory's bytes from chunk_at on, read 1 MiB at a time
    with open(location, 'rb') as handle:
        available = min(size, max(0, handle.seek(0, os.SEEK_END) - start))
        while total < available and count < stop:
            if total + _CENTRAL_HEADER.size > available:
                break
            if total + _CENTRAL_HEADER.size > chunk_at + len(chunk):
                handle.seek(start + total)
                chunk, chunk_at = handle.read(min(1 << 20, available - total)), total
            header = _CENTRAL_HEADER.unpack_from(chunk, total - chunk_at)
            if header[0] != b'PK\x01\x02':
                break
            count += 1
            total += _CENTRAL_HEADER.size + header[12] + header[13] + header[14]
    return count


class _Files:
    """The plain files of a folder (not its subfolders) or of a zip file (by their base names), read within
    ``limits`` (``read_limited``) and extracted on demand into a temporary folder for path-based readers."""

    def __init__(self, location: str, what: str, limits: Limits = DEFAULT_LIMITS):
        self.location = location
        self.what = what
        self.limits = limits
        self.names: Dict[str, str] = {}  # base name -> folder path or zip member
        self.declared: Dict[str, int] = {}  # base name -> size the zip header or the file system gives
        self.is_zip = os.path.isfile(location)
        self.archive: Optional[zipfile.ZipFile] = None
        self._budget = [0]  # decompressed bytes read so far from this side
        self._temporary: Optional[tempfile.TemporaryDirectory] = None
        if os.path.isdir(location):
            entries = sorted(os.listdir(location))
            self._check_count(len(entries))
            for name in entries:
                path = os.path.join(location, name)
                if os.path.isfile(path):
                    self.names[name] = path
                    self.declared[name] = os.path.getsize(path)
        elif self.is_zip:
            self._check_directory(location)
            try:
                self.archive = zipfile.ZipFile(location)
            except (zipfile.BadZipFile, zlib.error, EOFError, ValueError):
                raise ScoreError(f'{what} {location}: neither a folder nor a zip file') from None
            members = self.archive.infolist()
            try:
                self._check_count(len(members))
            except ScoreError:
                self.close()
                raise
            for member in members:
                if member.is_dir():
                    continue
                name = os.path.basename(member.filename)
                if name in self.names:
                    self.close()
                    raise ScoreError(f'{what} {location}: two entries named {name} '
                                     f'({self.names[name]}, {member.filename})')
                self.names[name] = member.filename
                self.declared[name] = member.file_size
        else:
            raise ScoreError(f'{what} {location}: no such folder or zip file')
        declared_total = sum(self.declared.values())
        if declared_total > limits.max_total_bytes:
            self.close()
            raise ScoreError(f'{what} {location}: its files {"declare" if self.is_zip else "hold"} '
                             f'{declared_total} bytes in total, more than the limit of {limits.max_total_bytes} '
                             f'bytes (--max_total_bytes)')

    def _check_directory(self, location: str) -> None:
        """The entry count and central directory size of a zip file from its end record, checked against
        ``max_files`` before ``zipfile.ZipFile`` reads the directory (every entry, into memory: 10**7 entries
        cost gigabytes). The count can lie, and ``zipfile`` reads the directory by its size: a directory larger
        than 1 KiB per allowed entry is refused (``zipfile`` reads it whole into memory), and its headers are
        walked (46 bytes each, up to ``max_files`` + 1 of them) to count the entries ``zipfile`` would make. A
        file without an end record, or whose end record cannot be read, is refused here, naming it."""
        try:
            found = zip_directory_size(location)
        except (OSError, ValueError, OverflowError) as error:
            raise ScoreError(f'{self.what} {location}: cannot read its zip end record: {error}') from None
        if found is None:
            raise ScoreError(f'{self.what} {location}: neither a folder nor a zip file '
                             f'(no end of central directory record)')
        count, size, start = found
        self._check_count(count)
        if size > self.limits.max_files * 1024:
            raise ScoreError(f'{self.what} {location}: a central directory of {size} bytes, more than 1 KiB per '
                             f'entry of the limit of {self.limits.max_files} files (--max_files)')
        try:
            entries = count_directory_entries(location, start, size, self.limits.max_files + 1)
        except (OSError, ValueError, OverflowError) as error:
            raise ScoreError(f'{self.what} {location}: cannot read its central directory: {error}') from None
        if entries > self.limits.max_files:
            raise ScoreError(f'{self.what} {location}: its central directory holds more than {self.limits.max_files} '
                             f'entries (its end record declares {count}), more than the limit of '
                             f'{self.limits.max_files} files (--max_files)')

    def _check_count(self, count: int) -> None:
        if count > self.limits.max_files:
            raise ScoreError(f'{self.what} {self.location}: {count} entries, more than the limit of '
                             f'{self.limits.max_files} files (--max_files)')

    def display(self, name: str) -> str:
        """How errors name the file: its path, or ``archive.zip:member``."""
        return f'{self.location}:{self.names[name]}' if self.is_zip else self.names[name]

    def read_bytes(self, name: str) -> bytes:
        """The file's bytes, within the limits (``read_limited``); a damaged or encrypted zip member is a
        ScoreError naming it."""
        display = self.display(name)
        if self.archive is None:
            with open(self.names[name], 'rb') as handle:
                return read_limited(handle, display, self.limits, os.fstat(handle.fileno()).st_size, self._budget)
        try:
            with self.archive.open(self.names[name]) as member:
                return read_limited(member, display, self.limits, self.declared[name], self._budget)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as error:
            raise ScoreError(f'{display}: cannot be read from the zip file: {error}') from None

    def path(self, name: str) -> str:
        """A path on disk holding the file (extracted from the zip file into a temporary folder, read within the
        limits). A folder's file is not read here: its size (the file system's) is checked against the limits per
        file and in total, and its lines are counted by the reader that reads it (call the reader inside
        ``data.readers.line_limit``, as ``score`` does)."""
        if self.archive is None:
            path = self.names[name]
            size = os.stat(path).st_size
            if size > self.limits.max_file_bytes:
                raise ScoreError(f'{path}: {size} bytes decompressed, more than the limit of '
                                 f'{self.limits.max_file_bytes} bytes per file (--max_file_bytes)')
            self._budget[0] += size
            if self._budget[0] > self.limits.max_total_bytes:
                raise ScoreError(f'{path}: the files read so far hold more than the limit of '
                                 f'{self.limits.max_total_bytes} bytes in total (--max_total_bytes)')
            return path
        if self._temporary is None:
            self._temporary = tempfile.TemporaryDirectory(prefix='score_')
        target = os.path.join(self._temporary.name, name)
        if not os.path.exists(target):
            with open(target, 'wb') as handle:
                handle.write(self.read_bytes(name))
        return target

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()
            self.archive = None
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None


def _natural_key(text: str) -> List[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', text)]


def score(gt: str, submission: str, protocol: str = 'icdar2015', gt_format: str = 'icdar2015',
          invalid_polygons: str = 'official', deteval_version: str = 'current',
          limits: Limits = DEFAULT_LIMITS) -> Dict[str, Any]:
    """Score the result files of ``submission`` against the ground truth of ``gt`` (folders or zip files).

    Returns a dict: ``'method'``: ``{'precision', 'recall', 'hmean'[, 'AP']}`` typed as the official script
    prints them; ``'per_image'``: ``{image stem: the evaluator's per-image result}`` in natural order;
    ``'images'``: how many were scored; ``'with_result'`` / ``'without_result'``: how many had / lacked a
    result file; ``'ignored_gt'``: names of files in ``gt`` not named as ``gt_format`` ground truth.
    Raises ScoreError (or data.DataError from the ground-truth reader or a file's decoding; both ValueError)
    naming the file and line of what cannot be scored, or the file and the limit (``limits``, each side alike)
    it passes, and ValueError for an unknown protocol, format or switch value."""
    from data.image_io import DataError
    from data.readers import DONT_CARE, GT_NAME_PATTERNS, LIST_READERS, decode_text, line_limit
    from structure.measurers.quad_measurer import make_evaluator
    if protocol not in PROTOCOLS:
        raise ScoreError(f'protocol: expected one of {sorted(PROTOCOLS)}, got {protocol!r}')
    if gt_format not in GT_NAME_PATTERNS or gt_format not in LIST_READERS:
        raise ScoreError(f'gt_format: expected one of {sorted(set(GT_NAME_PATTERNS) & set(LIST_READERS))} '
                         f'(formats of one ground-truth file per image), got {gt_format!r}')
    evaluator = make_evaluator(PROTOCOLS[protocol], invalid_polygons, deteval_version)
    gt_files = _Files(gt, 'ground truth', limits)
    try:
        result_files = _Files(submission, 'submission', limits)
    except ScoreError:
        gt_files.close()
        raise
    try:
        stems: Dict[str, str] = {}
        ignored = []
        for name in gt_files.names:
            stem = image_stem(name, gt_format)
            if stem is None:
                ignored.append(name)
                continue
            if stem in stems:
                raise ScoreError(f'ground truth {gt}: {stems[stem]} and {name} are both the ground truth of '
                                 f'image {stem}')
            stems[stem] = name
        if not stems:
            raise ScoreError(f'ground truth {gt}: no file named as {gt_format} ground truth '
                             f'({", ".join(GT_NAME_PATTERNS[gt_format])} for an image <stem> / <name>)')
        results: Dict[str, str] = {}
        for name in result_files.names:
            match = RESULT_NAME.match(name)
            if match is None:
                raise ScoreError(f'submission {result_files.display(name)}: not a result file '
                                 f'(expected res_<image stem>.txt)')
            if match.group('stem') not in stems:
                raise ScoreError(f'submission {result_files.display(name)}: image {match.group("stem")} has no '
                                 f'ground truth in {gt}')
            results[match.group('stem')] = name
        per_image = {}
        for stem in sorted(stems, key=_natural_key):
            name = stems[stem]
            try:
                with line_limit(limits.max_lines, '--max_lines'):
                    lines = LIST_READERS[gt_format](gt_files.path(name))
            except DataError as error:
                message = str(error)
                if gt_files.is_zip:
                    message = message.replace(gt_files.path(name), gt_files.display(name))
                raise DataError(message) from None
            ground_truth = [{'points': line['poly'], 'ignore': line['text'] == DONT_CARE} for line in lines]
            points: Union[np.ndarray, List[np.ndarray]] = []
            if stem in results:
                raw = results[stem]
                text = decode_text(result_files.read_bytes(raw), result_files.display(raw))
                points = parse_result_points(text, result_files.display(raw))
                del text
            # the IoU protocol takes the (D, N, 2) array of a uniform file as it is: no dict per detection
            detections: Any = points if isinstance(points, np.ndarray) and PROTOCOLS[protocol] == 'iou' else \
                [{'points': item} for item in points]
            per_image[stem] = evaluator.evaluate_image(ground_truth, detections)
            del detections
            del points
        method = _method_numbers(evaluator, list(per_image.values()), protocol)
        return {'method': method, 'per_image': per_image, 'images': len(per_image),
                'with_result': len(results), 'without_result': len(per_image) - len(results),
                'ignored_gt': sorted(ignored, key=_natural_key)}
    finally:
        gt_files.close()
        result_files.close()


def _method_numbers(evaluator: Any, results: Sequence[Dict[str, Any]], protocol: str) -> Dict[str, Any]:
    """The data-set numbers of the protocol's own ``combine_results``, typed as the official script prints them:
    for icdar2015 an int 0 where it divides by a zero sum (and hmean 0 when P + R is 0), and ``AP`` 0."""
    combined = dict(evaluator.combine_results(results))
    if protocol != 'icdar2015':
        return combined
    if sum(result['gt_care'] for result in results) == 0:
        combined['recall'] = 0
    if sum(result['det_care'] for result in results) == 0:
        combined['precision'] = 0
    if combined['hmean'] == 0:
        combined['hmean'] = 0
    return {**combined, 'AP': 0}


def _per_image_numbers(result: Dict[str, Any]) -> Dict[str, Any]:
    return {key: value for key, value in result.items() if key not in ('protocol', 'pairs')}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line entry (see the module docstring); returns the exit status."""
    invoked = os.path.basename(sys.argv[0])  # dbnet-score when installed (pyproject.toml [project.scripts])
    parser = argparse.ArgumentParser(prog=invoked if invoked.startswith('dbnet-') else 'python -m tools.score',
                                     description='Score result files against ground truth as the official '
                                                 'scripts do (ICDAR 2015 IoU or Total-Text DetEval).')
    parser.add_argument('--gt', required=True, help='folder or zip file of per-image ground-truth files')
    parser.add_argument('--submission', required=True, help='folder or zip file of res_<image stem>.txt files')
    parser.add_argument('--protocol', default='icdar2015', choices=sorted(PROTOCOLS))
    parser.add_argument('--gt_format', default='icdar2015',
                        help='ground-truth format of data/readers.py (icdar2015, totaltext, ctw1500, td500, '
                             'converted, converted_td500); default icdar2015')
    parser.add_argument('--invalid_polygons', default='official', choices=['official', 'drop'],
                        help='IoU protocol: the official script\'s arithmetic for invalid polygons (default) '
                             'or leave them out as the original DBNet evaluator')
    parser.add_argument('--deteval_version', default='current', choices=['current', 'pre-2019'],
                        help='DetEval protocol: Total-Text\'s Deteval.py since April 2019 (default) or before')
    parser.add_argument('--per_image', action='store_true', help='print the numbers of every image')
    parser.add_argument('--max_file_bytes', type=int, default=DEFAULT_LIMITS.max_file_bytes,
                        help='most bytes of one file, decompressed (default %(default)s)')
    parser.add_argument('--max_total_bytes', type=int, default=DEFAULT_LIMITS.max_total_bytes,
                        help='most bytes of all files of the ground truth, or of the submission, decompressed '
                             '(default %(default)s)')
    parser.add_argument('--max_files', type=int, default=DEFAULT_LIMITS.max_files,
                        help='most files of a folder or entries of a zip file (default %(default)s)')
    parser.add_argument('--max_lines', type=int, default=DEFAULT_LIMITS.max_lines,
                        help='most lines of one file (default %(default)s)')
    args = parser.parse_args(argv)
    try:
        limits = Limits(args.max_file_bytes, args.max_total_bytes, args.max_files, args.max_lines)
        scored = score(args.gt, args.submission, args.protocol, args.gt_format, args.invalid_polygons,
                       args.deteval_version, limits)
    except ValueError as error:  # ScoreError, data.DataError, bad switches
        print(f'error: {error}', file=sys.stderr)
        return 2
    if args.per_image:
        for stem, result in scored['per_image'].items():
            print(f'{stem}: {json.dumps(_per_image_numbers(result))}')
    ignored = scored['ignored_gt']
    if ignored:
        print(f'note: {len(ignored)} file(s) in {args.gt} not named as {args.gt_format} ground truth, not scored: '
              + ', '.join(ignored[:5]) + (' ...' if len(ignored) > 5 else ''))
    print(f"scored {scored['images']} images ({args.protocol}): {scored['with_result']} with a result file, "
          f"{scored['without_result']} without one (scored with no detections)")
    print('Calculated!' + json.dumps(scored['method']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
