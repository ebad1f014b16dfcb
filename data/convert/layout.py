"""The original layout written from converted samples: ``DIR/{split}_images/`` (copies), ``DIR/{split}_gts/
<image name>.txt`` (one ``x1,y1,...,xn,yn,transcription`` line per word, the ``converted`` gt_format) and
``DIR/{split}_list.txt``; and the report of what the conversion did.

Nothing is written before every sample is resolved: an image that would replace a different file of the same
name in the output (or two different sources of one name) stops the conversion with nothing written. Images are
copied, never moved; a copy identical to the file already there is left as it is, so a conversion can be rerun.
Every file goes under ``DIR`` (output names are base names). Each ground-truth file is read back with
``data.readers.read_converted``, the reader training uses, and must give the polygons and texts written.
"""
import filecmp
import os
import re
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from PIL import Image

from ..image_io import IMAGE_EXTENSIONS
from ..readers import DONT_CARE, read_converted
from .shapes import Point, clip_to_image, degenerate_reason, finite, format_number, rounded
from .words import Word, converted_transcription

SPLITS = ('train', 'test')


class ConvertError(Exception):
    """A conversion that cannot go on (nothing has been written when it is raised)."""


@dataclass
class Sample:
    """One image of a source: where its pixels are (a file, or the bytes a labelme file embeds), its name in
    the output, its words, and ``where`` (the annotation file, and the image within it) for messages.
    ``size`` is (width, height) in px; None reads it from the image."""
    name: str
    words: List[Word]
    where: str
    image_path: Optional[str] = None
    image_bytes: Optional[bytes] = None
    size: Optional[Tuple[int, int]] = None
    looked_in: Sequence[str] = ()  # where the image was looked for (the message when it is not found)
    ignored: List[str] = field(default_factory=list)  # shapes of the sample that are no text region


@dataclass
class Report:
    """What a conversion did; :meth:`lines` is the summary the command prints."""
    images: int = 0
    words: int = 0
    dont_care: int = 0
    negatives: List[str] = field(default_factory=list)         # images written with an empty gt file
    clipped_points: int = 0
    clipped_words: int = 0
    skipped: List[str] = field(default_factory=list)           # degenerate shapes: file, shape index, why
    ignored: List[str] = field(default_factory=list)           # shapes that are no region (lines, points, ...)
    changed_texts: List[str] = field(default_factory=list)     # transcriptions the format cannot hold as they are
    missing_images: List[str] = field(default_factory=list)    # samples left out: image not found
    notes: List[str] = field(default_factory=list)             # anything else worth reading

    def lines(self, out: str, split: str) -> List[str]:
        share = f' ({100.0 * self.dont_care / self.words:.1f} %)' if self.words else ''
        summary = [f'wrote {self.images} images, {self.words} words ({self.dont_care} don\'t care{share}) to '
                   f'{os.path.join(out, split + "_list.txt")}',
                   f'negative samples (images without words, empty gt file): {len(self.negatives)}'
                   + (f': {", ".join(self.negatives[:10])}' + (' ...' if len(self.negatives) > 10 else '')
                      if self.negatives else ''),
                   f'points outside the image, clipped: {self.clipped_points} in {self.clipped_words} words',
                   f'degenerate shapes skipped: {len(self.skipped)}']
        summary += [f'  {message}' for message in self.skipped]
        if self.ignored:
            summary.append(f'shapes that are not regions, ignored: {len(self.ignored)}')
            summary += [f'  {message}' for message in self.ignored]
        if self.changed_texts:
            summary.append(f'transcriptions changed to fit the converted format: {len(self.changed_texts)}')
            summary += [f'  {message}' for message in self.changed_texts]
        if self.missing_images:
            summary.append(f'images not found, samples left out: {len(self.missing_images)}')
            summary += [f'  {message}' for message in self.missing_images]
        summary += self.notes
        return summary


def find_image(reference: str, search_dirs: Sequence[str], strip_prefix: Optional[str] = None) -> Optional[str]:
    """The file an annotation's image reference names: the reference (``\\`` read as ``/``, a URL's path or
    ``?d=`` parameter, percent-escapes undone) relative to each of ``search_dirs`` in turn, then its base name
    there, then (``strip_prefix``: a regular expression) its base name without that prefix."""
    parsed = urllib.parse.urlparse(reference.replace('\\', '/'))
    local = urllib.parse.parse_qs(parsed.query).get('d')
    path = urllib.parse.unquote(local[0] if local else (parsed.path if parsed.scheme or parsed.query else
                                                         reference.replace('\\', '/')))
    base = os.path.basename(path)
    names = [path.lstrip('/') if os.path.isabs(path) else path, base]
    if strip_prefix is not None:
        names.append(re.sub(strip_prefix, '', base))
    if os.path.isabs(path) and os.path.isfile(path):
        return path
    for directory in search_dirs:
        for name in names:
            candidate = os.path.join(directory, name)
            if name and os.path.isfile(candidate):
                return candidate
    return None


def image_with_stem(stem: str, directory: str) -> Optional[str]:
    """The image file ``stem`` + an image extension (any case) in ``directory``, if there is one."""
    if not os.path.isdir(directory):
        return None
    for name in sorted(os.listdir(directory)):
        root, extension = os.path.splitext(name)
        if root == stem and extension.lower() in IMAGE_EXTENSIONS and os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    return None


def image_size(path: str) -> Tuple[int, int]:
    """(width, height) of an image as stored (EXIF orientation ignored, as the data set reads it)."""
    with Image.open(path) as image:
        return image.size


def _check_name(name: str, where: str) -> None:
    if (not name or name != name.strip() or os.path.basename(name) != name or name in ('.', '..')
            or any(character in name for character in '\n\r\x00')):
        raise ConvertError(f'{where}: cannot use {name!r} as an image name in a list file (a base name without '
                           f'leading or trailing white space or line breaks); rename the image')


def _same_content(sample: Sample, path: str) -> bool:
    if sample.image_path is not None:
        return filecmp.cmp(sample.image_path, path, shallow=False)
    with open(path, 'rb') as handle:
        return handle.read() == sample.image_bytes


def _gt_line(points: Sequence[Point], text: str) -> str:
    return ','.join(format_number(value) for point in points for value in point) + ',' + text


def write_converted(samples: Iterable[Sample], out: str, split: str = 'train') -> Report:
    """Write ``samples`` into ``out`` in the original layout (module docstring); the report says what it did.
    Samples whose image is not found are left out (reported); :class:`ConvertError` when an image would
    replace a different file, or two samples name different images alike (nothing written then)."""
    if split not in SPLITS:
        raise ConvertError(f'--split: expected one of {SPLITS}, got {split!r}')
    report = Report()
    image_dir, gt_dir = os.path.join(out, f'{split}_images'), os.path.join(out, f'{split}_gts')
    chosen: Dict[str, Sample] = {}
    for sample in samples:
        report.ignored += sample.ignored
        if sample.image_path is None and sample.image_bytes is None:
            places = ', '.join(sample.looked_in) or 'nowhere'
            report.missing_images.append(f'{sample.where}: image {sample.name!r} not found (looked in {places}; '
                                         f'--images names the folder)')
            continue
        _check_name(sample.name, sample.where)
        earlier = chosen.get(sample.name)
        if earlier is not None:
            if earlier.image_path is not None and sample.image_path is not None and \
                    os.path.realpath(earlier.image_path) == os.path.realpath(sample.image_path):
                raise ConvertError(f'{sample.where}: image {sample.name} is annotated twice (also in '
                                   f'{earlier.where}); keep one annotation of it')
            raise ConvertError(f'{sample.where}: two different images are named {sample.name} (the other in '
                               f'{earlier.where}); the output keeps base names, so rename one')
        target = os.path.join(image_dir, sample.name)
        if os.path.lexists(target) and (not os.path.isfile(target) or not _same_content(sample, target)):
            raise ConvertError(f'{target} exists and is a different file than the image of {sample.where}; '
                               f'refusing to overwrite it (choose another --out, or remove it)')
        chosen[sample.name] = sample
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(gt_dir, exist_ok=True)
    for name, sample in chosen.items():
        _write_sample(sample, image_dir, gt_dir, report)
    _write_list(os.path.join(out, f'{split}_list.txt'), list(chosen))
    return report


def _write_sample(sample: Sample, image_dir: str, gt_dir: str, report: Report) -> None:
    target = os.path.join(image_dir, sample.name)
    if not os.path.exists(target):
        if sample.image_path is not None:
            shutil.copyfile(sample.image_path, target)
        else:
            with open(target, 'wb') as handle:
                handle.write(sample.image_bytes or b'')
    width, height = image_size(target)
    if sample.size is not None and tuple(sample.size) != (width, height):
        report.notes.append(f'{sample.where}: the annotation gives the image size {sample.size[0]}x{sample.size[1]}, '
                            f'the image is {width}x{height}; clipped to the image')
    lines, expected = [], []
    for word in sample.words:
        if not finite(word.points):
            report.skipped.append(f'{word.where}: a non-finite coordinate')
            continue
        points, moved = clip_to_image(word.points, width, height)
        points = rounded(points)
        reason = degenerate_reason(points)
        if reason is not None:
            clipped = ' after clipping to the image' if moved else ''
            report.skipped.append(f'{word.where}: {reason}{clipped}')
            continue
        report.clipped_points += moved
        report.clipped_words += moved > 0
        text, changed = converted_transcription(word.text)
        if changed:
            report.changed_texts.append(f'{word.where}: {word.text!r} -> {text!r}')
        lines.append(_gt_line(points, text))
        expected.append(([list(point) for point in points], text))
        report.words += 1
        report.dont_care += text == DONT_CARE
    gt_path = os.path.join(gt_dir, sample.name + '.txt')
    with open(gt_path, 'w', encoding='utf-8', newline='\n') as handle:
        handle.write(''.join(line + '\n' for line in lines))
    read_back = [(line['poly'], line['text']) for line in read_converted(gt_path)]
    if read_back != expected:  # the writer and the reader disagree: a bug here, never silently wrong data
        raise AssertionError(f'{gt_path}: read back as {read_back!r}, written {expected!r}')
    report.images += 1
    if not lines:
        report.negatives.append(sample.name)


def _write_list(path: str, names: List[str]) -> None:
    """The list file: the names already listed there (a second source converted into the same folder), then
    the new ones; written to a temporary file and renamed, so it is never left half written."""
    listed: List[str] = []
    if os.path.isfile(path):
        with open(path, encoding='utf-8-sig') as handle:
            listed = [row.strip() for row in handle if row.strip()]
    known = set(listed)
    rows = listed + [name for name in names if name not in known]
    handle_fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or '.', suffix='.tmp')
    with os.fdopen(handle_fd, 'w', encoding='utf-8', newline='\n') as handle:
        handle.write(''.join(row + '\n' for row in rows))
    os.replace(temporary, path)
