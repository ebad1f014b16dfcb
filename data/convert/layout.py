"""The original layout written from converted samples: ``DIR/{split}_images/`` (copies), ``DIR/{split}_gts/
<image name>.txt`` (one ``x1,y1,...,xn,yn,transcription`` line per word, the ``converted`` gt_format) and
``DIR/{split}_list.txt``; and the report of what the conversion did.

**Where images are read** (:func:`find_image`): only inside the search folders, ``--images`` when given, else the
folder of the annotation file. An annotation's image reference (labelme ``imagePath``, COCO-Text ``file_name``,
CVAT ``name``, Label Studio's path or ``?d=`` parameter) is joined onto each folder (an absolute one without its
leading ``/``), then its base name is tried there; each candidate is resolved with ``os.path.realpath`` and used
only when it lies inside that folder. A reference to a file elsewhere (an absolute path, ``../`` leading out,
a symbolic link inside the folder that leads out of it) is therefore never read: its base name is looked up
inside the folders instead (an export moved to another machine), and when that is not there either the sample
is left out as a missing image (reported, exit status 1).

Nothing is written before every sample is resolved: its image found, and decoded once by
``data.image_io.read_image`` (the reader training uses; labelme's embedded ``imageData`` by Pillow). An image
file that does not decode (not an image, truncated, corrupt) stops the conversion with a :class:`ConvertError`
naming the file and the annotation (exit status 2): the file is there but unusable, which the person must
fix, unlike an image left out of an export. So does an image that would replace a different file of the same
name in the output (or two different sources of one name). Images are copied, never moved; a copy identical to
the file already there is left as it is, so a conversion can be rerun. Every file goes under ``DIR`` (output
names are base names) through ``concern.files.atomic_write`` (complete or absent, the mode of the file it
replaces or the umask's default for a new one). Each ground-truth file is read back with
``data.readers.read_converted``, the reader training uses, and must give the polygons and texts written.
"""
import filecmp
import io
import os
import re
import shutil
import urllib.parse
from dataclasses import dataclass, field
from typing import BinaryIO, Dict, Iterable, List, Optional, Sequence, Tuple

from PIL import Image

from concern.files import atomic_write

from ..image_io import IMAGE_EXTENSIONS, DataError, read_image
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


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` (resolved) lies inside ``folder`` (resolved)."""
    return os.path.commonpath([path, folder]) == folder


def find_image(reference: str, search_dirs: Sequence[str], strip_prefix: Optional[str] = None) -> Optional[str]:
    """The file an annotation's image reference names, never one outside ``search_dirs`` (module docstring): the
    reference (``\\`` read as ``/``, a URL's path or ``?d=`` parameter, percent-escapes undone; an absolute one
    without its leading ``/``) relative to each of ``search_dirs`` in turn, then its base name there, then
    (``strip_prefix``: a regular expression) its base name without that prefix. A candidate counts only when its
    real path (links and ``..`` resolved) lies inside the folder it was looked for in; None when none does."""
    parsed = urllib.parse.urlparse(reference.replace('\\', '/'))
    local = urllib.parse.parse_qs(parsed.query).get('d')
    path = urllib.parse.unquote(local[0] if local else (parsed.path if parsed.scheme or parsed.query else
                                                         reference.replace('\\', '/')))
    base = os.path.basename(path)
    names = [path.lstrip('/'), base]
    if strip_prefix is not None:
        names.append(re.sub(strip_prefix, '', base))
    for directory in search_dirs:
        folder = os.path.realpath(directory)
        for name in names:
            if not name or '\x00' in name:
                continue
            candidate = os.path.join(directory, name)
            if _inside(os.path.realpath(candidate), folder) and os.path.isfile(candidate):
                return os.path.normpath(candidate)
    return None


def image_with_stem(stem: str, directory: str) -> Optional[str]:
    """The image file ``stem`` + an image extension (any case) in ``directory``, if there is one (a link leading
    out of ``directory`` does not count)."""
    if not os.path.isdir(directory):
        return None
    folder = os.path.realpath(directory)
    for name in sorted(os.listdir(directory)):
        root, extension = os.path.splitext(name)
        path = os.path.join(directory, name)
        if root == stem and extension.lower() in IMAGE_EXTENSIONS and os.path.isfile(path) \
                and _inside(os.path.realpath(path), folder):
            return path
    return None


def image_size(path: str) -> Tuple[int, int]:
    """(width, height) of an image as stored (EXIF orientation ignored, as the data set reads it)."""
    with Image.open(path) as image:
        return image.size


def decoded_size(path: str, where: str) -> Tuple[int, int]:
    """(width, height) of the image file ``path`` as stored, after decoding it whole with
    ``data.image_io.read_image`` (the reader training uses); :class:`ConvertError` naming the file and ``where``
    (the annotation) when it does not decode."""
    try:
        height, width = read_image(path, orientation='stored').shape[:2]
    except DataError as error:
        raise ConvertError(f'{error}; it is the image of {where}: replace it with the image, or remove its '
                           f'annotation (nothing written)') from None
    return int(width), int(height)


def _embedded_size(data: bytes, where: str) -> Tuple[int, int]:
    """(width, height) of the image bytes an annotation embeds, decoded whole by Pillow."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.size
    except MemoryError:
        raise
    except Exception as error:
        raise ConvertError(f'{where}: the embedded image ("imageData") is not a readable image ({error}); '
                           f'nothing written') from None


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
    sizes: Dict[str, Tuple[int, int]] = {}
    for sample in samples:
        report.ignored += sample.ignored
        if sample.image_path is None and sample.image_bytes is None:
            places = ', '.join(sample.looked_in) or 'nowhere'
            report.missing_images.append(f'{sample.where}: image {sample.name!r} not found (looked in {places}, '
                                         f'only inside; --images names the folder)')
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
        sizes[sample.name] = (decoded_size(sample.image_path, sample.where) if sample.image_path is not None
                              else _embedded_size(sample.image_bytes or b'', sample.where))
        chosen[sample.name] = sample
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(gt_dir, exist_ok=True)
    for name, sample in chosen.items():
        _write_sample(sample, sizes[name], image_dir, gt_dir, report)
    _write_list(os.path.join(out, f'{split}_list.txt'), list(chosen))
    return report


def _write_sample(sample: Sample, size: Tuple[int, int], image_dir: str, gt_dir: str, report: Report) -> None:
    """The image (copied when not there yet) and its gt file; ``size``: the image's (width, height) as decoded."""
    target = os.path.join(image_dir, sample.name)
    if not os.path.exists(target):
        if sample.image_path is not None:
            image_path = sample.image_path

            def copy(stream: BinaryIO) -> None:
                with open(image_path, 'rb') as source:
                    shutil.copyfileobj(source, stream)
            atomic_write(target, copy)
        else:
            atomic_write(target, sample.image_bytes or b'')
    width, height = size
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
    atomic_write(gt_path, ''.join(line + '\n' for line in lines))
    read_back = [(line['poly'], line['text']) for line in read_converted(gt_path)]
    if read_back != expected:  # the writer and the reader disagree: a bug here, never silently wrong data
        raise AssertionError(f'{gt_path}: read back as {read_back!r}, written {expected!r}')
    report.images += 1
    if not lines:
        report.negatives.append(sample.name)


def _write_list(path: str, names: List[str]) -> None:
    """The list file: the names already listed there (a second source converted into the same folder), then
    the new ones; written by ``atomic_write``, so it is never left half written (and keeps the mode of the list
    it replaces, or the umask's default for a new one)."""
    listed: List[str] = []
    if os.path.isfile(path):
        with open(path, encoding='utf-8-sig') as handle:
            listed = [row.strip() for row in handle if row.strip()]
    known = set(listed)
    rows = listed + [name for name in names if name not in known]
    atomic_write(path, ''.join(row + '\n' for row in rows))
