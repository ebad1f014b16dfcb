"""Total-Text's MATLAB ground truth (the legacy ``gt_img*.mat`` / ``poly_gt_img*.mat``, read with scipy): a
cell array ``polygt`` (older files: ``gt``), one row per word, of 6 cells ``'x'``, x coordinates, ``'y'``,
y coordinates, transcription, orientation (``c`` curved, ``h`` horizontal, ``m`` multi-oriented, ``#`` don't
care), or of 4 cells without the ``'x'`` / ``'y'`` names.

Don't care: transcription ``#`` or orientation ``#`` (the data set's rule), an empty transcription, or a
don't-care name. The image of ``gt_img12.mat`` (or ``poly_gt_img12.mat``) is ``img12`` with any image extension
in ``--images`` (default: the folder of the .mat file)."""
import os
import re
from typing import Any, Iterator, List, Optional

import numpy as np

from .layout import Sample, image_with_stem
from .sources import SourceError, files_with_suffix
from .words import Word, word_text

VARIABLES = ('polygt', 'gt')
_STEM = re.compile(r'^(?:poly_)?gt_(?P<stem>.+)$')


def read_totaltext_mat(source: str, images: Optional[str] = None) -> Iterator[Sample]:
    import scipy.io
    for path in files_with_suffix(source, ('.mat',)):
        stem = os.path.splitext(os.path.basename(path))[0]
        match = _STEM.match(stem)
        image_stem = match.group('stem') if match else stem
        try:
            content = scipy.io.loadmat(path)
        except (OSError, ValueError, TypeError) as error:
            raise SourceError(f'{path}: cannot read the MATLAB file ({error})') from None
        variable = next((name for name in VARIABLES if name in content), None)
        if variable is None:
            raise SourceError(f'{path}: expected a cell array named {" or ".join(VARIABLES)}, found '
                              f'{sorted(k for k in content if not k.startswith("__"))}')
        search = images or os.path.dirname(path)
        image_path = image_with_stem(image_stem, search)
        rows = _rows(content[variable], f'{path}: {variable}')
        words = [_word(row, f'{path}: word {index}') for index, row in enumerate(rows)]
        name = os.path.basename(image_path) if image_path else image_stem + '.jpg'
        yield Sample(name=name, words=words, where=path, image_path=image_path, looked_in=[search])


def _rows(cells: Any, where: str) -> List[Any]:
    array = np.asarray(cells, dtype=object)
    if array.size == 0:
        return []  # an image without words
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] not in (4, 6):
        raise SourceError(f'{where}: expected a cell array of 4 or 6 columns, got shape {array.shape}')
    return list(array)


def _string(cell: Any) -> str:
    values = np.ravel(np.asarray(cell))
    return ''.join(str(v) for v in values).strip() if values.size else ''


def _word(row: Any, where: str) -> Word:
    xs, ys, text, orientation = (row[1], row[3], row[4], row[5]) if len(row) == 6 else tuple(row)
    try:
        x = np.ravel(np.asarray(xs, dtype=np.float64))
        y = np.ravel(np.asarray(ys, dtype=np.float64))
    except (TypeError, ValueError):
        x = y = np.array([np.nan])
    if x.size != y.size:
        x = y = np.array([np.nan])
        where += f' ({np.size(xs)} x but {np.size(ys)} y coordinates)'
    transcription, mark = _string(text), _string(orientation)
    marks = ['#'] if transcription in ('', '#') or mark == '#' else []
    return Word(points=[(float(a), float(b)) for a, b in zip(x, y)], text=word_text(transcription, marks),
                where=where)
