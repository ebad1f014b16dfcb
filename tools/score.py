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

Exit status 0 on success, 2 on an error (printed on stderr as ``error: ...``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import zipfile
from typing import Any, Dict, List, Optional, Sequence

from data.image_io import IMAGE_EXTENSIONS

PROTOCOLS = {'icdar2015': 'iou', 'deteval': 'deteval'}
RESULT_NAME = re.compile(r'^res_(?P<stem>.+)\.txt$')


class ScoreError(ValueError):
    """A submission or ground truth that cannot be scored; the message names the file (and line)."""


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


class _Files:
    """The plain files of a folder (not its subfolders) or of a zip file (by their base names), extracted
    on demand into a temporary folder so that path-based readers can read them."""

    def __init__(self, location: str, what: str):
        self.location = location
        self.names: Dict[str, str] = {}  # base name -> folder path or zip member
        self.is_zip = os.path.isfile(location)
        if os.path.isdir(location):
            for name in sorted(os.listdir(location)):
                if os.path.isfile(os.path.join(location, name)):
                    self.names[name] = os.path.join(location, name)
        elif self.is_zip:
            try:
                archive = zipfile.ZipFile(location)
            except zipfile.BadZipFile:
                raise ScoreError(f'{what} {location}: neither a folder nor a zip file') from None
            with archive:
                for member in archive.infolist():
                    if member.is_dir():
                        continue
                    name = os.path.basename(member.filename)
                    if name in self.names:
                        raise ScoreError(f'{what} {location}: two entries named {name} '
                                         f'({self.names[name]}, {member.filename})')
                    self.names[name] = member.filename
        else:
            raise ScoreError(f'{what} {location}: no such folder or zip file')
        self._temporary: Optional[tempfile.TemporaryDirectory] = None

    def display(self, name: str) -> str:
        """How errors name the file: its path, or ``archive.zip:member``."""
        return f'{self.location}:{self.names[name]}' if self.is_zip else self.names[name]

    def read_bytes(self, name: str) -> bytes:
        if not self.is_zip:
            with open(self.names[name], 'rb') as handle:
                return handle.read()
        with zipfile.ZipFile(self.location) as archive:
            return archive.read(self.names[name])

    def path(self, name: str) -> str:
        """A path on disk holding the file (extracted from the zip file into a temporary folder)."""
        if not self.is_zip:
            return self.names[name]
        if self._temporary is None:
            self._temporary = tempfile.TemporaryDirectory(prefix='score_')
        target = os.path.join(self._temporary.name, name)
        if not os.path.exists(target):
            with open(target, 'wb') as handle:
                handle.write(self.read_bytes(name))
        return target

    def close(self) -> None:
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None


def _natural_key(text: str) -> List[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', text)]


def score(gt: str, submission: str, protocol: str = 'icdar2015', gt_format: str = 'icdar2015',
          invalid_polygons: str = 'official', deteval_version: str = 'current') -> Dict[str, Any]:
    """Score the result files of ``submission`` against the ground truth of ``gt`` (folders or zip files).

    Returns a dict: ``'method'``: ``{'precision', 'recall', 'hmean'[, 'AP']}`` typed as the official script
    prints them; ``'per_image'``: ``{image stem: the evaluator's per-image result}`` in natural order;
    ``'images'``: how many were scored; ``'with_result'`` / ``'without_result'``: how many had / lacked a
    result file; ``'ignored_gt'``: names of files in ``gt`` not named as ``gt_format`` ground truth.
    Raises ScoreError (or data.DataError from the ground-truth reader or a file's decoding; both ValueError)
    naming the file and line of what cannot be scored, and ValueError for an unknown protocol, format or switch
    value."""
    from data.image_io import DataError
    from data.readers import DONT_CARE, GT_NAME_PATTERNS, LIST_READERS, decode_text
    from structure.measurers.quad_measurer import make_evaluator
    if protocol not in PROTOCOLS:
        raise ScoreError(f'protocol: expected one of {sorted(PROTOCOLS)}, got {protocol!r}')
    if gt_format not in GT_NAME_PATTERNS or gt_format not in LIST_READERS:
        raise ScoreError(f'gt_format: expected one of {sorted(set(GT_NAME_PATTERNS) & set(LIST_READERS))} '
                         f'(formats of one ground-truth file per image), got {gt_format!r}')
    evaluator = make_evaluator(PROTOCOLS[protocol], invalid_polygons, deteval_version)
    gt_files, result_files = _Files(gt, 'ground truth'), _Files(submission, 'submission')
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
                lines = LIST_READERS[gt_format](gt_files.path(name))
            except DataError as error:
                message = str(error)
                if gt_files.is_zip:
                    message = message.replace(gt_files.path(name), gt_files.display(name))
                raise DataError(message) from None
            ground_truth = [{'points': line['poly'], 'ignore': line['text'] == DONT_CARE} for line in lines]
            detections = []
            if stem in results:
                raw = results[stem]
                text = decode_text(result_files.read_bytes(raw), result_files.display(raw))
                detections = parse_result_text(text, result_files.display(raw))
            per_image[stem] = evaluator.evaluate_image(ground_truth, [{'points': item['points']}
                                                                      for item in detections])
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
    parser = argparse.ArgumentParser(prog='python -m tools.score',
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
    args = parser.parse_args(argv)
    try:
        scored = score(args.gt, args.submission, args.protocol, args.gt_format, args.invalid_polygons,
                       args.deteval_version)
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
