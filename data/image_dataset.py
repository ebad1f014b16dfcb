"""ImageDataset: images plus ground truth from one or more data directories, run through processes."""
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch.utils.data

from .ground_truth import sanitize_lines
from .image_io import DataError, read_image
from .readers import GT_FORMATS, LIST_READERS, Line, find_gt_file, parse_paddle_label, synthtext_lines

logger = logging.getLogger(__name__)

BAD_SAMPLE_MODES = ('substitute', 'raise', 'skip')


def infer_gt_format(data_dir: str, data_list: str) -> str:
    """The original code base's rules (by path), plus SynthText's ``gt.mat``."""
    if data_list.endswith('.mat'):
        return 'synthtext'
    if 'icdar' in data_dir.lower():
        return 'icdar2015'
    if 'TD' in data_dir:
        return 'converted_td500'
    return 'converted'


class _SynthTextSource:
    """SynthText ``gt.mat``: image names at start, word boxes and texts on first use (per worker)."""

    def __init__(self, mat_path: str):
        import scipy.io
        self.mat_path = mat_path
        try:
            names = scipy.io.loadmat(mat_path, variable_names=['imnames'])['imnames']
        except (OSError, ValueError, KeyError) as error:
            raise DataError(f'{mat_path}: cannot read imnames ({error})') from None
        self.image_names = _cell_strings(names)
        self._word_boxes: Optional[np.ndarray] = None
        self._texts: Optional[np.ndarray] = None

    def lines(self, index: int) -> List[Line]:
        if self._word_boxes is None or self._texts is None:  # both are loaded together
            import scipy.io
            mat = scipy.io.loadmat(self.mat_path, variable_names=['wordBB', 'txt'])
            self._word_boxes = np.ravel(mat['wordBB'])
            self._texts = np.ravel(mat['txt'])
        texts = self._texts[index]
        texts = _cell_strings(texts) if isinstance(texts, np.ndarray) else [str(texts)]
        return synthtext_lines(self._word_boxes[index], texts, f'{self.mat_path}: image {index}')


def _cell_strings(cell: Any) -> List[str]:
    """Flatten a MATLAB cell / char array as loaded by scipy into a list of Python strings."""
    array = np.asarray(cell)
    if array.dtype.kind == 'U':
        return [str(s).rstrip() for s in np.ravel(array)]
    return [str(np.ravel(item)[0]).rstrip() if np.size(item) else '' for item in np.ravel(array)]


class ImageDataset(torch.utils.data.Dataset):
    """Samples from ``data_dir[i]`` listed in ``data_list[i]``, each passed through ``processes`` in order.

    List-file layouts: ``<data_dir>/{train,test}_images/<name>`` and ``{train,test}_gts/`` (``train``
    when the list file's name contains 'train'). ``gt_format`` (one value or one per directory):
    icdar2015, converted, converted_td500, totaltext, td500, ctw1500, paddle (list entry = label
    file, image paths relative to data_dir) or synthtext (list entry = gt.mat, images relative to
    data_dir); None infers it from the paths as the original did.

    ``on_bad_sample``: what a sample that cannot be used (unreadable image, malformed ground truth: a
    :class:`DataError` naming the file and line) gives.

    - 'substitute': the next usable sample in its place, a warning, and a report (file, message) that
      :meth:`take_bad_samples` hands over (``data.DataLoader`` brings the workers' reports back to the main
      process); right for training, where one picture more or less changes nothing;
    - 'raise': the DataError itself;
    - 'skip': a marker sample ``{'filename', 'data_id', 'bad_sample': message}`` that ``ICDARCollectFN`` takes
      out of the batch (into ``batch['bad_samples']``) and the evaluator reports as skipped; evaluation then
      measures the other samples exactly as if the bad one were not listed.

    None (the default): 'substitute' for a training set (``is_training``), 'raise' otherwise, so that
    evaluation never measures one image in place of another.

    ``is_training`` None guesses the role from the list files' names, as the original does ('train' in a name).
    A validation or evaluation loader puts its data set in evaluation mode (:meth:`set_training`, called by
    :meth:`data.DataLoader.for_evaluation`) whatever its list is called or its ``is_training`` says, so that
    evaluating a training list scores its ground truth as annotated; one ImageDataset object must therefore not
    serve a training and a validation loader at once.
    """

    def __init__(self, data_dir: Sequence[str] = (), data_list: Sequence[str] = (), processes: Sequence[Any] = (),
                 gt_format: Union[None, str, List[Optional[str]], Tuple[Optional[str], ...]] = None,
                 on_bad_sample: Optional[str] = None, is_training: Optional[bool] = None, max_skip_attempts: int = 100):
        data_dir = [data_dir] if isinstance(data_dir, str) else list(data_dir)
        data_list = [data_list] if isinstance(data_list, str) else list(data_list)
        if len(data_dir) != len(data_list) or not data_dir:
            raise ValueError(f'ImageDataset: expected as many data_list as data_dir entries (>= 1), '
                             f'got {len(data_dir)} data_dir and {len(data_list)} data_list')
        formats = list(gt_format) if isinstance(gt_format, (list, tuple)) else [gt_format] * len(data_dir)
        if len(formats) != len(data_dir):
            raise ValueError(f'ImageDataset: expected one gt_format or {len(data_dir)}, got {len(formats)}')
        for process in processes:
            if not callable(getattr(process, 'process', None)) and not callable(process):
                raise TypeError(f'ImageDataset: expected processes with a process(data) method, got {process!r}')
        self.data_dir, self.data_list, self.processes = data_dir, data_list, list(processes)
        if on_bad_sample is not None and on_bad_sample not in BAD_SAMPLE_MODES:
            raise ValueError(f'ImageDataset: on_bad_sample: expected one of {BAD_SAMPLE_MODES} or None, '
                             f'got {on_bad_sample!r}')
        self._chosen_on_bad_sample = on_bad_sample
        self.set_training(any('train' in os.path.basename(p) for p in data_list) if is_training is None
                          else bool(is_training))
        self.max_skip_attempts = max_skip_attempts
        self.gt_formats = [fmt or infer_gt_format(directory, list_path)
                           for fmt, directory, list_path in zip(formats, data_dir, data_list)]
        for fmt in self.gt_formats:
            if fmt not in GT_FORMATS:
                raise ValueError(f'ImageDataset: unknown gt_format {fmt!r}, expected one of {GT_FORMATS}')
        # Each entry: (image path, data id, gt format, gt reference).
        self.entries: List[Tuple[str, str, str, Any]] = []
        for directory, list_path, fmt in zip(data_dir, data_list, self.gt_formats):
            self.entries.extend(self._index(directory, list_path, fmt))
        # Bad samples replaced in *this* process ('substitute'): data.DataLoader collects them after every sample
        self._bad_samples: List[Tuple[str, str]] = []

    def set_training(self, is_training: bool) -> None:
        """Give the data set its role: training samples are sanitized (:mod:`data.ground_truth`) and carry
        ``is_training`` to the processes (shrunk-away words become don't care); evaluation samples keep the
        ground truth as annotated. An ``on_bad_sample`` left at None follows the role ('substitute' / 'raise')."""
        self.is_training = bool(is_training)
        self.on_bad_sample = self._chosen_on_bad_sample or ('substitute' if self.is_training else 'raise')

    @staticmethod
    def _index(directory: str, list_path: str, fmt: str) -> List[Tuple[str, str, str, Any]]:
        if fmt == 'synthtext':
            source = _SynthTextSource(list_path)
            return [(os.path.join(directory, name), name, fmt, (source, i))
                    for i, name in enumerate(source.image_names)]
        if not os.path.isfile(list_path):
            raise FileNotFoundError(f'ImageDataset: list file {list_path} not found')
        with open(list_path, encoding='utf-8-sig') as handle:
            rows = [(number, row.rstrip('\r\n')) for number, row in enumerate(handle, 1) if row.strip()]
        if fmt == 'paddle':
            return [(os.path.join(directory, row.split('\t', 1)[0]), row.split('\t', 1)[0], fmt,
                     (row, f'{list_path}:{number}')) for number, row in rows]
        split = 'train' if 'train' in os.path.basename(list_path) else 'test'
        image_dir = os.path.join(directory, f'{split}_images')
        gt_dir = os.path.join(directory, f'{split}_gts')
        entries = []
        for _, row in rows:
            name = row.strip()
            entries.append((os.path.join(image_dir, name), name, fmt, find_gt_file(gt_dir, name, fmt)))
        return entries

    def __len__(self) -> int:
        return len(self.entries)

    def take_bad_samples(self) -> List[Tuple[str, str]]:
        """(file, message) of every sample replaced in this process since the last call, in the order met (a
        loader's workers hold their own copies: ``data.DataLoader.take_bad_samples`` gathers them all)."""
        taken, self._bad_samples = self._bad_samples, []
        return taken

    def load_lines(self, index: int) -> List[Dict[str, Any]]:
        """Ground-truth lines of sample ``index``; :class:`DataError` (file and line) for malformed input.

        Training: degenerate polygons are repaired or marked don't care (:func:`sanitize_lines`).
        Evaluation: every polygon as annotated, as the official ICDAR 2015 script and DetEval take them.
        """
        _, _, fmt, ref = self.entries[index]
        if fmt == 'synthtext':
            source, position = ref
            lines, where = source.lines(position), f'{source.mat_path}: image {position}'
        elif fmt == 'paddle':
            row, where = ref
            lines = parse_paddle_label(row, where)[1]
        else:
            lines, where = LIST_READERS[fmt](ref), ref
        return sanitize_lines(lines, where) if self.is_training else lines

    def load_sample(self, index: int) -> Dict[str, Any]:
        image_path, data_id, _, _ = self.entries[index]
        lines = self.load_lines(index)
        image = read_image(image_path, orientation='stored')
        data = {'filename': image_path, 'data_id': data_id, 'image': image, 'lines': lines,
                'is_training': self.is_training}
        for process in self.processes:
            data = process(data) if not hasattr(process, 'process') else process.process(data)
        from .processes.pending_warp import materialize
        return materialize(data)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        for attempt in range(self.max_skip_attempts):
            position = (index + attempt) % len(self.entries)
            try:
                return self.load_sample(position)
            except DataError as error:
                if self.on_bad_sample == 'raise':
                    raise
                if self.on_bad_sample == 'skip':
                    return self.bad_sample(position, error)
                self._bad_samples.append((self.entries[position][0], self.error_message(position, error)))
                logger.warning('skipping sample %d (%s): %s', position, self.entries[position][0], error)
        raise RuntimeError(f'ImageDataset: {self.max_skip_attempts} consecutive unreadable samples from '
                           f"index {index}; check the data set (on_bad_sample='raise' shows the first error)")

    def bad_sample(self, index: int, error: Exception) -> Dict[str, Any]:
        """The marker sample of 'skip' for sample ``index``: its file, its data id and the error (naming the
        file, and the line for ground truth)."""
        image_path, data_id, _, _ = self.entries[index]
        return {'filename': image_path, 'data_id': data_id, 'bad_sample': self.error_message(index, error)}

    def error_message(self, index: int, error: Exception) -> str:
        """The error of sample ``index``, naming its image file when the error itself does not."""
        image_path = self.entries[index][0]
        message = str(error)
        return message if image_path in message else f'{image_path}: {message}'
