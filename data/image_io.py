"""The project's one image reader: a file in, (H, W, 3) uint8 BGR out, or a :class:`DataError` naming the file.

Who reads what (``orientation``, required, so every caller states its EXIF policy):

* ``'stored'``: the pixels as stored, the EXIF orientation tag ignored. Ground truth is annotated on the stored
  pixels, so data sets (training and evaluation), the benchmarks of the data pipeline and the evaluation
  visualizer (which draws ground truth and detections made on those pixels) read this way.
* ``'displayed'``: the EXIF orientation applied as a photo viewer shows the photo (all 8 orientations, exactly
  as ``PIL.ImageOps.exif_transpose``): the demo, the Python API on a person's photo, the ONNX export's check.

Decoding is Pillow's (it raises on a truncated file, where OpenCV's libjpeg decodes the missing part as grey
and only prints "Premature end of JPEG file"). A JPEG, PNG, GIF, TIFF or BMP file (by its signature) whose
header Pillow cannot parse is corrupt (DataError), never handed to OpenCV. A format Pillow cannot identify
but OpenCV reads (Radiance HDR, PFM, ...) is decoded by ``cv2.imdecode`` with ``IMREAD_ANYDEPTH |
IMREAD_ANYCOLOR``, plus ``IMREAD_IGNORE_ORIENTATION`` for ``'stored'`` (OpenCV applies EXIF otherwise), then
:func:`to_bgr_uint8`; that path has no header-only size check (OpenCV's own ``CV_IO_MAX_IMAGE_PIXELS``,
2**30 by default, bounds it; ``max_pixels`` is checked after decoding) and OpenCV's decoders may accept a
truncated file there.

Pillow mode -> BGR uint8, the rule for each (16-bit samples keep their high byte, ``value >> 8``, never clipped):

* ``1`` (1-bit): 0 / 255 gray.  ``L``: gray replicated to B, G, R.  ``LA`` / ``La``: alpha dropped (the gray).
* ``P`` / ``PA`` (palette, with or without transparency): the palette colours; transparency ignored.
* ``RGB`` (also 16-bit RGB PNG / TIFF, which Pillow opens as 8-bit ``RGB`` keeping the high byte).
* ``RGBA`` / ``RGBX`` (also 16-bit RGBA and 16-bit gray+alpha PNG, which Pillow opens as 8-bit ``RGBA``):
  alpha dropped, colours as stored (not composited), as OpenCV's ``IMREAD_COLOR`` and the original code base.
* ``CMYK`` (JPEG, Adobe-inverted ones included, and TIFF) and ``YCbCr``: Pillow's conversion to RGB (no ICC
  colour management; CMYK as ``(255 - C) * (255 - K) / 255``, like OpenCV).
* ``I;16`` / ``I;16B`` / ``I;16L`` (16-bit gray PNG and TIFF): ``value >> 8`` (0x8000 reads as 128).
* ``I`` (32-bit signed int; Pillow's mode for 16-bit PGM and some TIFFs): on the 16-bit scale, clipped to
  [0, 65535] then ``>> 8`` (a genuinely 32-bit image saturates at 255).
* ``F`` (32-bit float TIFF): the float rule of :func:`to_bgr_uint8` (values in [0, 1] when the maximum is
  <= 1, else [0, 255]; clipped; NaN -> 0).
* Anything else (``HSV``, ``LAB``, ...) by Pillow's conversion to RGB; a mode it cannot convert is a DataError.
* Multi-frame files (TIFF pages, GIF / APNG / MPO frames): the first frame. 1x1 images are images.

EXIF orientation: the tag of the EXIF block (JPEG, PNG, WebP, ...), a TIFF's own Orientation tag (Pillow
applies that one while decoding; ``'stored'`` undoes it) and AVIF's irot / imir (which Pillow reports as the
EXIF tag). A value outside 1-8 is ignored, as exif_transpose does.

Speed: a 1280x720 JPEG reads in about 6.0 ms against 4.5 ms for ``cv2.imread`` (AVX2 machine, median of 40):
Pillow's decode and NumPy's copy of its pixels cost the difference, which is small beside a training sample's
augmentation and label maps, and buys the truncation check and the mode rules above.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING, Iterator, Optional

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    from PIL import TiffImagePlugin

ORIENTATIONS = ('stored', 'displayed')

# Pillow's own error threshold as Pillow ships it: 2 * PIL.Image.MAX_IMAGE_PIXELS = 2 * (1024 ** 3 // 4 // 3)
# = 178956970 pixels (e.g. 16000x11000 is allowed, 16000x12000 is refused). A constant, not read from
# PIL.Image.MAX_IMAGE_PIXELS: a process that changed Pillow's global does not change this reader's default.
DEFAULT_MAX_PIXELS = 178_956_970
# File name extensions (lower case) of the images the project looks for in a folder (demo.py, the int8
# calibration set) and strips from ground-truth names (tools.score): the formats this reader decodes with Pillow.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.webp')

_EXIF_ORIENTATION = 0x0112
_T = Image.Transpose
# the transposition that takes orientation 2-8's displayed pixels back to the stored ones (the inverse of
# exif_transpose's: all are their own inverse but the two quarter turns)
_UNDO_ORIENTATION = {2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM, 5: _T.TRANSPOSE,
                     6: _T.ROTATE_90, 7: _T.TRANSVERSE, 8: _T.ROTATE_270}


class DataError(ValueError):
    """A sample cannot be used: unreadable image or malformed ground truth (message names file and line)."""


def to_bgr_uint8(image: np.ndarray, source: str = '<array>') -> np.ndarray:
    """An image array as (H, W, 3) uint8 BGR, C-contiguous; for NumPy images handed to the Python API.

    ``image``: (H, W) gray, (H, W, 1), (H, W, 2) gray + alpha (alpha dropped), (H, W, 3) BGR (returned as is
    when already uint8 and contiguous) or (H, W, 4) BGRA (alpha dropped). dtype uint8; uint16 (``>> 8``, the
    high byte); float32 / float64 (values taken as [0, 1] when the maximum is <= 1, else as [0, 255]; clipped;
    NaN -> 0). ``source`` names the image in errors. Raises DataError for another dtype, dimension count or
    channel count.
    """
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.nan_to_num(image, nan=0.0)
        scale = image.size > 0 and image.max() <= 1.0
        image = np.clip(image * 255.0 if scale else image, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f'{source}: unsupported image dtype {image.dtype}, expected uint8/uint16/float')
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3:
        raise DataError(f'{source}: expected an image of 2 or 3 dimensions, got shape {image.shape}')
    channels = image.shape[2]
    if channels == 3:
        return np.ascontiguousarray(image)
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if channels == 2:  # gray + alpha: drop alpha
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise DataError(f'{source}: expected 1-4 channels, got {channels}')


def read_image(path: str, *, orientation: str, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The image file ``path`` as (H, W, 3) uint8 BGR, C-contiguous and writable (module docstring: the rule
    for each Pillow mode).

    orientation (keyword, required): ``'stored'`` = pixels as stored, EXIF orientation ignored (data sets,
    evaluation, the evaluation visualizer: ground truth is annotated on stored pixels); ``'displayed'`` = EXIF
    orientation applied as a viewer shows the photo (demo, Python API on a person's photo). H, W are then the
    displayed height and width (swapped for orientations 5-8).
    max_pixels: the largest width * height accepted (a decompression-bomb guard, checked from the header
    before any pixel is decoded); None = no limit. Independent of ``PIL.Image.MAX_IMAGE_PIXELS``: Pillow's own
    check is lifted while this reader opens and decodes (module-wide lock, the global restored afterwards; a
    thread opening images with Pillow directly at that moment runs without Pillow's check).

    Raises ValueError for an orientation other than ORIENTATIONS or a max_pixels that is not None or a
    positive integer; DataError (message names the file) for a missing file, a directory, an empty file, a
    file no decoder identifies, a corrupt or truncated file (never decoded silently), an image above
    max_pixels (size, limit and how to raise it named) or a mode that cannot be converted.
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f'orientation: expected one of {ORIENTATIONS}, got {orientation!r}')
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer))
                                   or max_pixels < 1):
        raise ValueError(f'max_pixels: expected a positive integer or None (no limit), got {max_pixels!r}')
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataError(f'{path}: is a directory, not an image file')
    try:
        if os.path.getsize(path) == 0:
            raise DataError(f'{path}: empty file, not an image')
    except OSError as error:
        raise DataError(f'{path}: image file not found' if isinstance(error, FileNotFoundError)
                        else f'{path}: cannot read image file ({error})') from None
    try:
        with _pillow_limit_lifted():  # Image.open reads the header only
            image: Image.Image = Image.open(path)
    except UnidentifiedImageError as error:
        known = _pillow_format_by_signature(path)
        if known:  # Pillow knows the format but not this file: corrupt, never OpenCV's lenient second try
            raise DataError(f'{path}: cannot decode image (a {known} file whose header Pillow cannot parse: '
                            'corrupt or truncated)') from error
        return _read_with_opencv(path, orientation, max_pixels)
    except MemoryError:
        raise
    except Exception as error:  # a header Pillow rejects (truncated, malformed), permissions
        raise DataError(f'{path}: cannot decode image ({error})') from error
    with image:
        width, height = image.size
        _check_size(path, width, height, max_pixels)
        pillow_limit = Image.MAX_IMAGE_PIXELS
        # Pillow checks again while decoding some formats (a TIFF's tile size) and cropping (the strips below)
        above_pillow = pillow_limit is not None and width * height > pillow_limit
        with _pillow_limit_lifted() if above_pillow else contextlib.nullcontext():
            try:
                # Pillow applies a TIFF's own orientation tag while decoding (and drops the tag)
                tiff = _as_tiff(image)
                tiff_orientation = tiff.tag_v2.get(_EXIF_ORIENTATION) if tiff is not None else None
                image.load()  # decode now: a truncated or corrupt file raises here, not later
                if tiff is not None and tiff_orientation in _UNDO_ORIENTATION and _EXIF_ORIENTATION not in tiff.tag_v2:
                    if orientation == 'stored':
                        image = image.transpose(_UNDO_ORIENTATION[tiff_orientation])
                elif orientation == 'displayed':
                    image = _exif_transposed(image)
            except MemoryError:
                raise
            except Exception as error:
                raise DataError(f'{path}: cannot decode image ({error})') from error
            return _pil_to_bgr(image, path)


def _check_size(path: str, width: int, height: int, max_pixels: Optional[int]) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise DataError(f'{path}: image of {width}x{height} = {width * height} pixels exceeds the limit of '
                        f'{max_pixels} pixels (decompression-bomb guard); to read it raise the limit (demo.py '
                        '--max_image_pixels, read_image / TextDetector max_pixels=; 0 / None: no limit)')


def _as_tiff(image: Image.Image) -> Optional[TiffImagePlugin.TiffImageFile]:
    """``image`` when Pillow opened it as a TIFF (its tags in ``tag_v2``), else None."""
    if image.format != 'TIFF':
        return None
    from PIL import TiffImagePlugin  # imported by Pillow already: it opened the file
    assert isinstance(image, TiffImagePlugin.TiffImageFile)  # the one plugin of format 'TIFF'
    return image


def _exif_transposed(image: Image.Image) -> Image.Image:
    """``ImageOps.exif_transpose`` for orientations 2-8 (it maps exactly those to a transposition); ``image``
    itself otherwise, which spares exif_transpose's copy."""
    if image.getexif().get(_EXIF_ORIENTATION, 1) in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(image)
    return image


def _pil_to_bgr(image: Image.Image, path: str) -> np.ndarray:
    mode = image.mode
    if mode in ('RGB', 'RGBA', 'RGBX'):  # Pillow stores all three as 4 bytes per pixel
        return _bgr_from_storage(image, 4, cv2.COLOR_RGBA2BGR)
    if mode == 'L':
        return _bgr_from_storage(image, 1, cv2.COLOR_GRAY2BGR)
    if mode == '1':
        return _bgr_from_storage(image.convert('L'), 1, cv2.COLOR_GRAY2BGR)
    if mode in ('LA', 'La'):  # alpha dropped: the gray band as stored
        return _bgr_from_storage(image.getchannel(0), 1, cv2.COLOR_GRAY2BGR)
    if mode.startswith('I;16'):
        return cv2.cvtColor((np.asarray(image) >> 8).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    if mode == 'I':
        return cv2.cvtColor((np.clip(np.asarray(image), 0, 65535) >> 8).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    if mode == 'F':
        return to_bgr_uint8(np.asarray(image), path)
    try:  # P, PA, CMYK, YCbCr, RGBa, ...
        rgb = image.convert('RGB')
    except ValueError as error:
        raise DataError(f'{path}: unsupported image mode {mode} ({error})') from error
    return _bgr_from_storage(rgb, 4, cv2.COLOR_RGBA2BGR)


def _bgr_from_storage(image: Image.Image, channels: int, code: int) -> np.ndarray:
    """BGR from an L (``channels`` 1) or RGB / RGBA / RGBX (``channels`` 4) image: NumPy's copy of Pillow's pixels,
    then one OpenCV conversion. (Viewing Pillow's memory in place through its Arrow export saved about 1.4 ms
    of 6 ms on a 1280x720 JPEG; not worth hand-written ctypes structures.)"""
    pixels = np.asarray(image)
    if channels == 1:
        return cv2.cvtColor(pixels, code)
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else code)


# file signatures of the formats Pillow always reads: such a file that Pillow cannot parse is corrupt
_PILLOW_SIGNATURES = ((b'\xff\xd8\xff', 'JPEG'), (b'\x89PNG\r\n\x1a\n', 'PNG'), (b'GIF87a', 'GIF'),
                      (b'GIF89a', 'GIF'), (b'II*\x00', 'TIFF'), (b'MM\x00*', 'TIFF'), (b'BM', 'BMP'))


def _pillow_format_by_signature(path: str) -> Optional[str]:
    try:
        with open(path, 'rb') as handle:
            head = handle.read(16)
    except OSError:
        return None
    return next((name for signature, name in _PILLOW_SIGNATURES if head.startswith(signature)), None)


def _read_with_opencv(path: str, orientation: str, max_pixels: Optional[int]) -> np.ndarray:
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as error:
        raise DataError(f'{path}: cannot read image file ({error})') from error
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
    if orientation == 'stored':
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as error:
        raise DataError(f'{path}: cannot decode image ({error})') from error
    if image is None:
        raise DataError(f'{path}: not an image Pillow or OpenCV can read (unknown format or corrupt file)')
    _check_size(path, image.shape[1], image.shape[0], max_pixels)
    return to_bgr_uint8(image, path)


# ---------------------------------------------------------------------------------------------- Pillow's limit
# Pillow refuses images above 2 * PIL.Image.MAX_IMAGE_PIXELS (DecompressionBombError) and warns above it
# (DecompressionBombWarning), in Image.open and again in some decoders; this reader has its own limit
# (max_pixels), so Pillow's is lifted (set to None) while it opens and decodes, and restored afterwards. The
# lock keeps overlapping readers from restoring each other's None; the window is a header parse (every read)
# or a decode (only images above Pillow's limit). A fork while another thread holds the lock gets a fresh lock
# and Pillow's limit back in the child.
_limit_lock = threading.Lock()
_lifted_from: list = []  # the value replaced by None, while lifted


@contextlib.contextmanager
def _pillow_limit_lifted() -> Iterator[None]:
    with _limit_lock:
        saved = Image.MAX_IMAGE_PIXELS
        if saved is None:
            yield
            return
        _lifted_from.append(saved)
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            _lifted_from.pop()
            if Image.MAX_IMAGE_PIXELS is None:  # unless someone set a new value meanwhile
                Image.MAX_IMAGE_PIXELS = saved


def _after_fork_in_child() -> None:
    global _limit_lock
    _limit_lock = threading.Lock()
    if _lifted_from and Image.MAX_IMAGE_PIXELS is None:
        Image.MAX_IMAGE_PIXELS = _lifted_from[0]
    del _lifted_from[:]


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_after_fork_in_child)
