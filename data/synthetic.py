"""Synthetic scene-text data set in the original's converted on-disk layout (no downloads).

    python -m data.synthetic --out datasets/synthetic --train 500 --test 100 --seed 0 [--style basic|scene]

writes ``train_images/``, ``train_gts/`` (``<image name>.txt``: ``x1,y1,...,xn,yn,label`` per word,
``###`` = don't care), ``test_images/``, ``test_gts/``, ``train_list.txt`` and ``test_list.txt``.
Each image is drawn from its own stream (seed, split, index), so output is deterministic for a seed
and a font set (``--fonts builtin`` uses only Pillow's bundled font, identical on every machine).

Two styles: ``basic`` (the default, what ``make demo`` trains on) draws random letter strings over
textured gradients; ``scene`` draws real words, numbers and phrases on photographs and structured
backgrounds with perspective, curves, outlines, shadows and camera effects, for a detector meant to
find words in real photographs (its output also depends on the Python version, for the word list,
and on the installed scikit-image, for the photographs).
"""
import argparse
import functools
import glob
import importlib.util
import math
import os
import re
import string
import time
from dataclasses import dataclass
from typing import Counter, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

ALPHABET = string.ascii_letters + string.digits
SYSTEM_FONT_GLOBS = ('/usr/share/fonts/**/*.ttf', '/usr/share/fonts/**/*.otf', '/usr/local/share/fonts/**/*.ttf')
PAD = 2.0  # pixels of margin between rendered text and its polygon
SPLIT_STREAM = {'train': 0, 'test': 1}
# what ImageFont.load_default(size) gives: the scalable bundled font, or a bitmap font where Pillow lacks FreeType
Font = Union[ImageFont.FreeTypeFont, ImageFont.ImageFont]


def find_fonts(which: str = 'all') -> List[Optional[str]]:
    """None stands for Pillow's bundled scalable font; 'all' adds TrueType/OpenType fonts found on the system."""
    if which not in ('all', 'builtin'):
        raise ValueError(f"expected fonts 'all' or 'builtin', got {which!r}")
    fonts: List[Optional[str]] = [None]
    if which == 'all':
        found = sorted({p for pattern in SYSTEM_FONT_GLOBS for p in glob.glob(pattern, recursive=True)})
        fonts += [p for p in found if 'Math' not in os.path.basename(p)]
    return fonts


class FontBank:
    def __init__(self, fonts: Sequence[Optional[str]]):
        self.fonts = list(fonts)
        self._cache: Dict[Tuple[Optional[str], int], Font] = {}

    def get(self, index: int, size: int) -> Font:
        key = (self.fonts[index], size)
        if key not in self._cache:
            path = self.fonts[index]
            self._cache[key] = ImageFont.load_default(size=size) if path is None else ImageFont.truetype(path, size)
        return self._cache[key]


@dataclass
class Word:
    polygon: np.ndarray  # (N, 2) float, image coordinates
    text: str            # '###' for don't care
    mask: np.ndarray     # float32 alpha of the rendered text over the patch
    origin: Tuple[int, int]  # (x, y) of the patch's top-left corner in the image


def render_word_mask(text: str, font: Font, stroke: int) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
    """uint8 mask of ``text`` with a margin, and the tight ink box (x0, y0, x1, y1) inside it."""
    left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
    margin = 4
    width, height = right - left + 2 * margin, bottom - top + 2 * margin
    # Pillow types FreeTypeFont.getbbox as floats; it returns whole pixels (ints)
    canvas = Image.new('L', (max(width, 1), max(height, 1)), 0)  # type: ignore[arg-type]
    ImageDraw.Draw(canvas).text((margin - left, margin - top), text, font=font, fill=255, stroke_width=stroke,
                                stroke_fill=255)
    mask = np.asarray(canvas)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return mask, (0, 0, 0, 0)
    return mask, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Gradient plus low- and mid-frequency texture, BGR float32."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * math.pi)
    small_h, small_w = max(height // 16, 2), max(width // 16, 2)
    yy, xx = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    ramp = (xx / small_w) * math.cos(angle) + (yy / small_h) * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    small = c0[None, None, :] * (1 - ramp[..., None]) + c1[None, None, :] * ramp[..., None]
    small += rng.normal(0, rng.uniform(5, 35), (small_h, small_w, 3))  # blotches
    image = cv2.resize(small.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    grain_h, grain_w = height // 2, width // 2
    grain = rng.normal(0, rng.uniform(2, 14), (grain_h, grain_w, 1)).astype(np.float32)
    image += cv2.resize(grain, (width, height), interpolation=cv2.INTER_LINEAR)[..., None]
    return image


def _clutter(rng: np.random.Generator, image: np.ndarray) -> None:
    """Strokes, arcs and blobs that look like parts of glyphs but are not text."""
    height, width = image.shape[:2]
    for _ in range(int(rng.integers(6, 26))):
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        thickness = int(rng.integers(1, 6))
        kind = rng.integers(4)
        if kind == 0:  # random-walk scribble
            points = np.cumsum(rng.normal(0, 12, (int(rng.integers(3, 9)), 2)), axis=0)
            points += (rng.uniform(0, width), rng.uniform(0, height))
            cv2.polylines(image, [points.astype(np.int32)], False, color, thickness, cv2.LINE_AA)
        elif kind == 1:  # arc
            center = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
            axes = (int(rng.uniform(5, 60)), int(rng.uniform(5, 60)))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), start, start + float(rng.uniform(60, 300)),
                        color, thickness, cv2.LINE_AA)
        elif kind == 2:  # bars like l / I strokes
            x, y = rng.uniform(0, width), rng.uniform(0, height)
            length, theta = rng.uniform(10, 80), rng.uniform(0, math.pi)
            end = (int(x + length * math.cos(theta)), int(y + length * math.sin(theta)))
            cv2.line(image, (int(x), int(y)), end, color, thickness, cv2.LINE_AA)
        else:  # soft blob
            center = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
            cv2.circle(image, center, int(rng.uniform(3, 25)), color, -1, cv2.LINE_AA)


def _fit_homography(shape: Tuple[int, int], dst: np.ndarray) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Homography taking the corners of a (height, width) canvas to ``dst`` (4 x 2, float32, any offset) moved
    into a patch with a 2 px margin, and the patch's (width, height)."""
    height, width = shape
    src = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32)
    lo = np.floor(dst.min(axis=0)) - 2
    dst = dst - lo
    patch_w, patch_h = (np.ceil(dst.max(axis=0)) + 3).astype(int)
    return cv2.getPerspectiveTransform(src, dst.astype(np.float32)), (int(patch_w), int(patch_h))


def _box_quad(ink_box: Tuple[int, int, int, int]) -> np.ndarray:
    """The ink box grown by PAD, as a clockwise quadrilateral (4 x 2, float64)."""
    x0, y0, x1, y1 = ink_box
    return np.array([[x0 - PAD, y0 - PAD], [x1 + PAD, y0 - PAD], [x1 + PAD, y1 + PAD], [x0 - PAD, y1 + PAD]],
                    dtype=np.float64)


def _perspective_word(rng, mask, ink_box, angle_deg, jitter,
                      position) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int]]:
    """Rotate + mildly perspective-warp a word mask; returns (patch alpha, polygon, patch origin)."""
    height, width = mask.shape
    src = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32)
    dst = src + rng.uniform(-jitter, jitter, (4, 2)).astype(np.float32)
    center = dst.mean(axis=0)
    theta = math.radians(angle_deg)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=np.float32)
    homography, patch_size = _fit_homography(mask.shape, (dst - center) @ rotation.T)
    alpha = cv2.warpPerspective(mask, homography, patch_size, flags=cv2.INTER_LINEAR)
    warped_quad = cv2.perspectiveTransform(_box_quad(ink_box)[None], homography)[0]
    origin = (int(position[0]), int(position[1]))
    return alpha.astype(np.float32) / 255.0, warped_quad + origin, origin


def _arc_maps(rng: np.random.Generator, shape: Tuple[int, int], ink_boxes: Sequence[Tuple[int, int, int, int]],
              angle_deg: float, points_per_side: int = 7, radius_range: Tuple[float, float] = (1.0, 3.0),
              ) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
    """Bend a (height, width) canvas along a circular arc: cv2.remap maps (patch pixel -> canvas pixel) and, for
    each ink box, a polygon of 2 * points_per_side points in patch coordinates (the outer side circumscribes the arc).
    The radius is ``radius_range`` times the canvas width."""
    height, width = shape
    radius = float(rng.uniform(*radius_range)) * width
    side = 1.0 if rng.random() < 0.5 else -1.0  # +1: centre below the text, -1: above
    theta = math.radians(angle_deg)
    cos_t, sin_t = math.cos(theta), math.sin(theta)

    def forward(u, v):
        """Canvas coordinates -> patch-local coordinates (arc centre at origin, then rotated)."""
        phi = (u - width / 2.0) / radius
        r = radius + side * (height / 2.0 - v)
        x, y = r * np.sin(phi), -side * r * np.cos(phi)
        return x * cos_t - y * sin_t, x * sin_t + y * cos_t

    polygons = []
    for x0, y0, x1, y1 in ink_boxes:
        us = np.linspace(x0 - PAD, x1 + PAD, points_per_side)
        step = (us[1] - us[0]) / radius
        top_v, bottom_v = y0 - PAD, y1 + PAD
        r_top, r_bottom = radius + side * (height / 2.0 - top_v), radius + side * (height / 2.0 - bottom_v)
        # The outer side's chords would cut into the arc: push its vertices out so the chords circumscribe it.
        grow = 1.0 / math.cos(step / 2.0)
        top_scale, bottom_scale = (grow, 1.0) if r_top > r_bottom else (1.0, grow)
        top = np.stack(forward(us, np.full_like(us, top_v)), axis=1)
        bottom = np.stack(forward(us[::-1], np.full_like(us, bottom_v)), axis=1)
        polygons.append(np.concatenate([top * top_scale, bottom * bottom_scale]))  # centre-relative: radial scaling
    corners = np.stack(forward(np.array([0, width - 1, width - 1, 0.0]), np.array([0, 0, height - 1, height - 1.0])), 1)
    extent = np.concatenate(polygons + [corners, np.stack(forward(np.linspace(0, width, 9), np.zeros(9)), 1),
                                        np.stack(forward(np.linspace(0, width, 9), np.full(9, height - 1.0)), 1)])
    lo = np.floor(extent.min(axis=0)) - 2
    patch_w, patch_h = (np.ceil(extent.max(axis=0) - lo) + 3).astype(int)
    # inverse map for cv2.remap: patch pixel -> canvas pixel
    ys, xs = np.mgrid[0:patch_h, 0:patch_w].astype(np.float32)
    px, py = xs + lo[0], ys + lo[1]
    x, y = px * cos_t + py * sin_t, -px * sin_t + py * cos_t
    r = np.hypot(x, y)
    phi = np.arctan2(x, -side * y)
    map_u = (phi * radius + width / 2.0).astype(np.float32)
    map_v = (height / 2.0 - side * (r - radius)).astype(np.float32)
    return map_u, map_v, [polygon - lo for polygon in polygons]


def _curved_word(rng, mask, ink_box, angle_deg, position, points_per_side=7):
    """Bend a word mask along a circular arc; polygon of 2 * points_per_side points."""
    map_u, map_v, (polygon,) = _arc_maps(rng, mask.shape, [ink_box], angle_deg, points_per_side)
    alpha = cv2.remap(mask, map_u, map_v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    origin = (int(position[0]), int(position[1]))
    return alpha.astype(np.float32) / 255.0, polygon + origin, origin


def _random_text(rng: np.random.Generator) -> str:
    length = int(rng.integers(2, 11))
    text = ''.join(rng.choice(list(ALPHABET), size=length))
    style = rng.random()
    return text.upper() if style < 0.3 else text.capitalize() if style < 0.6 else text


def generate_image(rng: np.random.Generator, fonts: FontBank, size: int = 640,
                   style: str = 'basic') -> Tuple[np.ndarray, List[Word]]:
    """One synthetic image (uint8 BGR, longest side ``size``) and its words, of a style in STYLES: 'basic'
    (random letters over textured gradients, what ``make demo`` trains on) or 'scene' (generate_scene_image)."""
    if style == 'scene':
        return generate_scene_image(rng, fonts, size)
    if style != 'basic':
        raise ValueError(f"expected style 'basic' or 'scene', got {style!r}")
    aspect = rng.uniform(0.6, 1.0)
    if rng.random() < 0.5:
        width, height = size, int(size * aspect)
    else:
        width, height = int(size * aspect), size
    image = _background(rng, height, width)
    _clutter(rng, image)
    occupied = np.zeros((height, width), dtype=np.uint8)
    words: List[Word] = []
    for _ in range(int(rng.integers(3, 16))):
        for _attempt in range(6):
            word = _make_word(rng, fonts, image, occupied, width, height)
            if word is not None:
                words.append(word)
                break
    return np.clip(image, 0, 255).astype(np.uint8), words


def _make_word(rng, fonts: FontBank, image, occupied, width, height) -> Optional[Word]:
    font_px = int(round(math.exp(rng.uniform(math.log(10), math.log(80)))))
    font = fonts.get(int(rng.integers(len(fonts.fonts))), font_px)
    text = _random_text(rng)
    stroke = int(rng.integers(0, 3)) if font_px >= 24 and rng.random() < 0.35 else 0  # bold weights
    mask, ink_box = render_word_mask(text, font, stroke)
    if ink_box[2] <= ink_box[0] or ink_box[3] <= ink_box[1]:
        return None
    curved = rng.random() < 0.2 and len(text) >= 4
    angle = float(rng.normal(0, 15)) if rng.random() < 0.7 else float(rng.uniform(-45, 45))
    angle = float(np.clip(angle, -45, 45))
    position = (rng.uniform(0, width), rng.uniform(0, height))
    if curved:
        alpha, polygon, origin = _curved_word(rng, mask, ink_box, angle, position)
    else:
        jitter = 0.08 * min(mask.shape)
        alpha, polygon, origin = _perspective_word(rng, mask, ink_box, angle, jitter, position)
    patch_h, patch_w = alpha.shape
    # fit inside the image
    shift = np.array([min(0, width - 1 - (origin[0] + patch_w)), min(0, height - 1 - (origin[1] + patch_h))])
    if patch_w >= width - 2 or patch_h >= height - 2:
        return None
    origin = (origin[0] + int(shift[0]), origin[1] + int(shift[1]))
    polygon = polygon + shift
    x, y = origin
    region = occupied[y:y + patch_h, x:x + patch_w]
    local_polygon = [np.round(polygon - origin).astype(np.int32)]
    footprint = np.zeros_like(region)
    cv2.fillPoly(footprint, local_polygon, 1)
    if np.any(region & footprint):
        return None
    cv2.fillPoly(region, local_polygon, 1)
    cv2.polylines(region, local_polygon, True, 1, 5)  # keep a gap to the next word
    # colour: legible words contrast with the local background; some are made illegible on purpose
    local = image[y:y + patch_h, x:x + patch_w].reshape(-1, 3).mean(axis=0)
    illegible = rng.random() < 0.08
    if illegible:
        color = np.clip(local + rng.uniform(-18, 18, 3), 0, 255)
    else:
        color = rng.uniform(0, 255, 3)
        for _ in range(8):
            if abs(float((color - local) @ (0.114, 0.587, 0.299))) > 70:
                break
            color = rng.uniform(0, 255, 3)
        else:
            color = np.where(local > 127, 20.0, 235.0)
    paint = alpha
    if rng.random() < 0.15:  # blur: defocus
        paint = cv2.GaussianBlur(alpha, (0, 0), float(rng.uniform(0.6, 1.5)))
    patch = image[y:y + patch_h, x:x + patch_w]
    patch += paint[..., None] * (color[None, None, :].astype(np.float32) - patch)
    ink_height = ink_box[3] - ink_box[1] + 1
    label = '###' if illegible or ink_height < 9 or font_px < 12 else text
    return Word(polygon=polygon, text=label, mask=alpha, origin=origin)


# ----------------------------------------------------------------------------------------------------------------
# The scene style (--style scene): real words on structured and photographic backgrounds, camera effects.

STYLES = ('basic', 'scene')
# A word is lower case, Title case or UPPER case letters only: CamelCase and snake_case tokens are identifiers.
_WORD_TOKEN = re.compile(r'[a-z]{2,14}|[A-Z][a-z]{1,13}|[A-Z]{2,14}')
_VOWEL = re.compile('[aeiouy]')
# used when the interpreter ships without pydoc_data (some minimal builds strip it)
FALLBACK_WORDS = tuple(sorted(set("""
    the and for with from you our all new big old hot open closed street road lane avenue square exit entrance
    sale shop store cafe coffee tea bar hotel bank park parking station centre center market food fresh daily
    hours free office service public line stop north south east west floor level gate please keep clear only
    push pull fire water power function value number time world people year day way home fashion beauty mall
    plaza tower court news book music kids sports travel money card mobile phone repair clinic dental school
    library museum ticket toilet lift stairs danger caution warning smoking of in to at by on up we no best
    city house restaurant pharmacy welcome bakery pizza noodle garden island bridge river hill lake airport bus
    train taxi metro police hospital emergency delivery online shopping special offer discount price limited
    """.split())))
HERSHEY_FACES = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
                 cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX_SMALL)
# scikit-image's bundled sample photographs (in the wheel, no download) that show no legible text. Left out:
# astronaut (mission patch, name tag), coins (inscriptions), motorcycle_left ('YAMAHA'), page, text, logo,
# and the synthetic or tiny ones (phantom, colorwheel, checkerboards, microaneurysms, clock_motion).
SKIMAGE_PHOTOS = ('brick.png', 'camera.png', 'cell.png', 'chelsea.png', 'coffee.png', 'grass.png', 'gravel.png',
                  'hubble_deep_field.jpg', 'ihc.png', 'moon.png', 'retina.jpg', 'rocket.jpg')
# common sign colours (BGR): white, black, red, yellow, blue, green, orange, dark grey
SIGN_COLORS = np.array([[245, 245, 245], [15, 15, 15], [40, 30, 200], [30, 210, 240], [170, 80, 20], [60, 140, 30],
                        [20, 120, 240], [60, 60, 60]], dtype=np.float64)
LUMA = np.array([0.114, 0.587, 0.299])  # BGR weights
MIN_LEGIBLE_HEIGHT = 7.0  # px of ink height below which a word is don't care (plus 2 px per px of blur)


def words_from_texts(texts: Iterable[str], min_texts: int = 2) -> List[str]:
    """Words (2-14 letters, lower-cased, sorted) of running English: white-space tokens with surrounding
    punctuation stripped that are lower, Title or UPPER case letters with a vowel, found in ``min_texts`` texts."""
    found_in: Counter[str] = Counter()
    for text in texts:
        found = set()
        for token in text.split():
            token = token.strip('.,;:!?()[]{}"\'`*')
            if _WORD_TOKEN.fullmatch(token):
                word = token.lower()
                if _VOWEL.search(word):
                    found.add(word)
        found_in.update(found)
    return sorted(word for word, count in found_in.items() if count >= min_texts)


@functools.lru_cache(maxsize=1)
def scene_words() -> Tuple[str, ...]:
    """The scene style's vocabulary: the English of the Python documentation that ships with the interpreter
    (``pydoc_data.topics``, about 1,700 words on CPython 3.11), or FALLBACK_WORDS without it. The list depends on
    the Python version, so scene output is deterministic for a seed, a font set and a Python version."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return FALLBACK_WORDS
    words = words_from_texts(topics.values())
    return tuple(words) if len(words) >= 200 else FALLBACK_WORDS


@functools.lru_cache(maxsize=1)
def photo_backgrounds() -> Tuple[np.ndarray, ...]:
    """BGR uint8 sample photographs bundled with scikit-image (read from its package folder: never downloaded);
    those that are missing or unreadable are skipped, and without scikit-image there are none."""
    try:
        spec = importlib.util.find_spec('skimage')
    except (ImportError, ValueError):
        return ()
    if spec is None or spec.origin is None:
        return ()
    folder = os.path.join(os.path.dirname(spec.origin), 'data')
    photos = []
    for name in SKIMAGE_PHOTOS:
        try:
            photo = cv2.imread(os.path.join(folder, name), cv2.IMREAD_COLOR)
        except cv2.error:
            photo = None
        if photo is not None and min(photo.shape[:2]) >= 256:
            photo.flags.writeable = False
            photos.append(photo)
    return tuple(photos)


def _luma(color: np.ndarray) -> float:
    return float(np.asarray(color, dtype=np.float64) @ LUMA)


def _contrasting_color(rng: np.random.Generator, against: np.ndarray, min_difference: float) -> np.ndarray:
    """A colour (half the time a common sign colour) whose luma differs from ``against`` by ``min_difference``."""
    for _ in range(8):
        if rng.random() < 0.5:
            color = np.clip(SIGN_COLORS[int(rng.integers(len(SIGN_COLORS)))] + rng.normal(0, 12, 3), 0, 255)
        else:
            color = rng.uniform(0, 255, 3)
        if abs(_luma(color) - _luma(against)) >= min_difference:
            return color
    return np.where(np.full(3, _luma(against) > 127), 15.0, 240.0) + rng.uniform(-10, 10, 3)


def _stands_out(behind_luma: np.ndarray, color: np.ndarray, outlined: bool) -> bool:
    """Whether ink of ``color`` is legible over the lumas of the pixels under it: an outline always is; otherwise
    most of it (60 %) must differ from what lies behind by 20 levels. No solid ink at all is not legible."""
    if outlined:
        return True
    return len(behind_luma) > 0 and float(np.mean(np.abs(behind_luma - _luma(color)) >= 20)) >= 0.6


def _number_token(rng: np.random.Generator) -> str:
    """Numbers as signs show them: counts, prices, phone numbers, dates, times, percentages, codes."""
    def digits(count: int) -> str:
        return str(int(rng.integers(0, 10 ** count))).zfill(count)

    kind = int(rng.integers(9))
    if kind == 0:
        return str(int(math.exp(rng.uniform(0, math.log(9999)))))
    if kind == 1:
        return f'${int(rng.integers(1, 500))}.{int(rng.integers(100)):02d}'
    if kind == 2:
        return f'{int(rng.integers(1, 100))}.{int(rng.integers(100)):02d}'
    if kind == 3:
        return f'{digits(3)}-{digits(4)}' if rng.random() < 0.5 else f'{digits(3)}-{digits(3)}-{digits(4)}'
    if kind == 4:
        day, month, year = int(rng.integers(1, 29)), int(rng.integers(1, 13)), int(rng.integers(1980, 2031))
        return (f'{day:02d}/{month:02d}/{year}', f'{day:02d}.{month:02d}.{year % 100:02d}',
                f'{year}-{month:02d}-{day:02d}')[int(rng.integers(3))]
    if kind == 5:
        return f'{int(rng.integers(0, 24)):02d}:{(0, 15, 30, 45)[int(rng.integers(4))]:02d}'
    if kind == 6:
        return f'{int(rng.integers(1, 10)) * 10}%'
    if kind == 7:
        return f'{string.ascii_uppercase[int(rng.integers(26))]}{int(rng.integers(1, 100))}'
    return f'{int(rng.integers(1, 1000))}{("m", "km", "kg", "ml", "h")[int(rng.integers(5))]}'


def _scene_tokens(rng: np.random.Generator, words: Sequence[str]) -> List[str]:
    """One line of text: a word, a number, or a phrase of 2-3 words (each becomes its own polygon)."""
    kind = rng.random()
    if kind < 0.18:
        return [_number_token(rng)]
    count = int(rng.integers(2, 4)) if kind < 0.45 else 1
    tokens = [words[int(rng.integers(len(words)))] for _ in range(count)]
    if count > 1 and rng.random() < 0.2:  # 'open 24h', 'call 555-0123'
        tokens[-1] = _number_token(rng)
    case = rng.random()
    if case < 0.4:
        return [token.upper() for token in tokens]
    if case < 0.75:
        return [token.capitalize() for token in tokens]
    return tokens


_HERSHEY_SCALE: Dict[int, float] = {}


def _hershey_scale(face: int, font_px: int) -> float:
    """The putText scale at which a capital is about 0.72 * font_px tall, as in a TrueType font of that size."""
    if face not in _HERSHEY_SCALE:
        (_, cap_height), _ = cv2.getTextSize('H', face, 1.0, 1)
        _HERSHEY_SCALE[face] = 1.0 / max(cap_height, 1)
    return 0.72 * font_px * _HERSHEY_SCALE[face]


@dataclass
class _TextLine:
    layers: np.ndarray  # (H, W, 3) uint8 canvas: text fill, text outline, sign panel
    columns: np.ndarray  # (W,) uint8: 1 + index of the word that owns each canvas column
    boxes: List[Tuple[int, int, int, int]]  # tight ink box (fill or outline) of each word on the canvas


def _render_line(tokens: Sequence[str], face: Tuple[str, int], font_px: int, fonts: FontBank, weight: int,
                 outline: int, margin: int) -> Optional[_TextLine]:
    """Draw the words of one line on a common baseline: ``face`` is ('pil', FontBank index) or ('hershey', cv2
    font face); ``weight`` thickens the glyphs, ``outline`` px of rim goes around them in the outline layer."""
    outer = weight + outline
    font: Optional[ImageFont.FreeTypeFont] = None
    scale = 0.0
    extents: List[Tuple[int, int, int, int]] = []  # ink extent of each word around its origin on the baseline
    if face[0] == 'pil':
        loaded = fonts.get(face[1], font_px)
        if not isinstance(loaded, ImageFont.FreeTypeFont):
            return None
        font = loaded
        for token in tokens:
            left, top, right, bottom = font.getbbox(token, stroke_width=outer, anchor='ls')
            extents.append((int(left), int(top), int(right), int(bottom)))
        thickness = 0
    else:
        scale = _hershey_scale(face[1], font_px)
        thickness = max(1, int(round(font_px / 16))) + weight
        for token in tokens:
            (text_w, text_h), below = cv2.getTextSize(token, face[1], scale, thickness + 2 * outline)
            grow = thickness + outline + 2
            extents.append((-grow, -text_h - grow, text_w + grow, below + grow))
    space = max(int(round(0.33 * font_px)), 2 * outer + 3)
    origins, cursor = [], margin
    for left, _, right, _ in extents:
        origins.append(cursor - left)
        cursor = origins[-1] + right + space
    width = cursor - space + margin
    baseline = margin - min(extent[1] for extent in extents)
    height = baseline + max(extent[3] for extent in extents) + margin
    planes = []
    for rim in ((0, outline) if outline else (0,)):
        if font is not None:
            canvas = Image.new('L', (width, height), 0)
            draw = ImageDraw.Draw(canvas)
            for token, x in zip(tokens, origins):
                draw.text((x, baseline), token, font=font, fill=255, anchor='ls', stroke_width=weight + rim,
                          stroke_fill=255)
            planes.append(np.asarray(canvas))
        else:
            plane = np.zeros((height, width), np.uint8)
            for token, x in zip(tokens, origins):
                cv2.putText(plane, token, (x, baseline), face[1], scale, 255, thickness + 2 * rim, cv2.LINE_AA)
            planes.append(plane)
    ink = np.maximum(planes[0], planes[-1])
    # each word owns the columns up to half way to its neighbours' extents
    bounds = [0] + [(origins[i] + extents[i][2] + origins[i + 1] + extents[i + 1][0]) // 2
                    for i in range(len(tokens) - 1)] + [width]
    columns = np.zeros(width, np.uint8)
    boxes = []
    for index, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        part = ink[:, lo:hi]
        xs, ys = np.flatnonzero(part.any(axis=0)), np.flatnonzero(part.any(axis=1))
        if len(xs) == 0:
            return None
        boxes.append((lo + int(xs[0]), int(ys[0]), lo + int(xs[-1]), int(ys[-1])))
        columns[lo:hi] = index + 1
    layers = np.zeros((height, width, 3), np.uint8)
    layers[..., 0] = planes[0]
    if outline:
        layers[..., 1] = planes[1]
    return _TextLine(layers, columns, boxes)


def _add_panel(rng: np.random.Generator, line: _TextLine, pad: Tuple[int, int]) -> None:
    """A sign board behind the words (layer 2): their ink box grown by ``pad`` (x, y), sometimes rounded."""
    x0 = min(box[0] for box in line.boxes) - pad[0]
    y0 = min(box[1] for box in line.boxes) - pad[1]
    x1 = max(box[2] for box in line.boxes) + pad[0]
    y1 = max(box[3] for box in line.boxes) + pad[1]
    panel = np.zeros(line.layers.shape[:2], np.uint8)
    corner = int(min(pad) * rng.uniform(0.3, 1.0)) if rng.random() < 0.4 else 0
    if corner > 1:
        cv2.rectangle(panel, (x0 + corner, y0), (x1 - corner, y1), 255, -1)
        cv2.rectangle(panel, (x0, y0 + corner), (x1, y1 - corner), 255, -1)
        for cx, cy in ((x0 + corner, y0 + corner), (x1 - corner, y0 + corner), (x1 - corner, y1 - corner),
                       (x0 + corner, y1 - corner)):
            cv2.circle(panel, (cx, cy), corner, 255, -1, cv2.LINE_AA)
    else:
        cv2.rectangle(panel, (x0, y0), (x1, y1), 255, -1)
    line.layers[..., 2] = panel


def _tilt_corners(rng: np.random.Generator, shape: Tuple[int, int], angle_deg: float, tilt_deg: float,
                  shear: float) -> np.ndarray:
    """Where the canvas corners land when the canvas is a plane turned by up to ``tilt_deg`` about its vertical
    axis (and 0.6 of it about its horizontal one), seen through a pinhole camera, then rolled by ``angle_deg``;
    ``shear`` leans the glyphs (a synthetic italic). Centred on the origin, (4, 2) float32."""
    height, width = shape
    x = np.array([0, width - 1, width - 1, 0], dtype=np.float64) - (width - 1) / 2.0
    y = np.array([0, 0, height - 1, height - 1], dtype=np.float64) - (height - 1) / 2.0
    x = x - shear * y
    yaw = math.radians(rng.uniform(-tilt_deg, tilt_deg))
    pitch = math.radians(rng.uniform(-0.6 * tilt_deg, 0.6 * tilt_deg))
    x, z = x * math.cos(yaw), x * math.sin(yaw)
    y, z = y * math.cos(pitch) - z * math.sin(pitch), y * math.sin(pitch) + z * math.cos(pitch)
    focal = rng.uniform(1.2, 3.0) * max(width, height)  # > any |z|, so every corner is in front of the camera
    x, y = focal * x / (focal + z), focal * y / (focal + z)
    theta = math.radians(angle_deg)
    return np.stack([x * math.cos(theta) - y * math.sin(theta),
                     x * math.sin(theta) + y * math.cos(theta)], axis=1).astype(np.float32)


def _word_height(polygon: np.ndarray) -> float:
    """Mean distance between a word polygon's top and bottom sides (points i and n-1-i), less the padding."""
    half = len(polygon) // 2
    top, bottom = polygon[:half], polygon[::-1][:half]
    return float(np.linalg.norm(top - bottom, axis=1).mean()) - 2 * PAD


@dataclass
class _LineLook:
    """How one line of text looks: drawn from the image's stream before the line is placed."""
    tokens: List[str]
    face: Tuple[str, int]  # ('pil', FontBank index) or ('hershey', cv2 font face)
    font_px: int
    weight: int = 0  # extra stroke width (bolder glyphs)
    outline: int = 0  # px of rim in a second colour; 0: none
    shadow: int = 0  # px offset of a drop shadow; 0: none
    curved: bool = False
    panel: Tuple[int, int] = (0, 0)  # (x, y) margin of a sign board behind the words; (0, 0): no board
    camouflaged: bool = False  # the colour of what lies behind: don't care
    low_contrast: bool = False  # readable, but only just
    own_colors: bool = False  # each word of a phrase its own colour
    defocus: float = 0.0  # Gaussian sigma of this line alone


def _draw_look(rng: np.random.Generator, fonts: FontBank, words: Sequence[str]) -> _LineLook:
    tokens = _scene_tokens(rng, words)
    font_px = int(round(math.exp(rng.uniform(math.log(10), math.log(64)))))
    if rng.random() < 0.15:
        face = ('hershey', int(HERSHEY_FACES[int(rng.integers(len(HERSHEY_FACES)))])
                | (cv2.FONT_ITALIC if rng.random() < 0.25 else 0))
    else:
        face = ('pil', int(rng.integers(len(fonts.fonts))))
    look = _LineLook(tokens, face, font_px)
    look.weight = int(rng.integers(1, 3)) if font_px >= 20 and rng.random() < 0.2 else 0
    look.curved = rng.random() < 0.12 and sum(len(token) for token in tokens) >= 4
    if not look.curved and rng.random() < 0.25:
        look.panel = (int(font_px * rng.uniform(0.3, 0.9)), int(font_px * rng.uniform(0.15, 0.5)))
    look.camouflaged = rng.random() < 0.08
    if not look.camouflaged:
        look.outline = max(1, int(round(font_px * rng.uniform(0.04, 0.09)))) if (
            font_px >= 16 and rng.random() < 0.15) else 0
        look.shadow = max(1, int(round(font_px * rng.uniform(0.04, 0.1)))) if rng.random() < 0.2 else 0
        look.low_contrast = rng.random() < 0.25
        look.own_colors = len(tokens) > 1 and rng.random() < 0.25
    look.defocus = rng.uniform(0.5, max(0.6, 0.12 * font_px)) if rng.random() < 0.1 else 0.0
    return look


def _place_line(rng: np.random.Generator, fonts: FontBank, look: _LineLook, image: np.ndarray,
                occupied: np.ndarray, blur: float) -> List[Word]:
    """Draw one line of words on ``image`` where ``occupied`` is free, and mark its footprint there; nothing if
    there is no room. ``blur`` (Gaussian sigma, px) is what the camera will blur the whole image by later."""
    height, width = image.shape[:2]
    tokens, shadow = look.tokens, look.shadow
    line = _render_line(tokens, look.face, look.font_px, fonts, look.weight, look.outline,
                        margin=4 + max(look.panel) + shadow)
    if line is None:
        return []
    if look.panel != (0, 0):
        _add_panel(rng, line, look.panel)
    angle = float(np.clip(rng.normal(0, 12) if rng.random() < 0.75 else rng.uniform(-40, 40), -40, 40))
    canvas_hw = line.layers.shape[:2]
    if look.curved:
        map_u, map_v, polygons = _arc_maps(rng, canvas_hw, line.boxes, angle, 7, (1.0, 4.0))
        patch_h, patch_w = map_u.shape
        outlines = polygons  # no panel on a curve
    else:
        tilt = 55.0 if rng.random() < 0.5 else 20.0
        shear = rng.uniform(0.1, 0.3) if rng.random() < 0.1 else 0.0
        homography, (patch_w, patch_h) = _fit_homography(canvas_hw, _tilt_corners(rng, canvas_hw, angle, tilt, shear))
        polygons = [cv2.perspectiveTransform(_box_quad(box)[None], homography)[0] for box in line.boxes]
        corners = np.array([[0, 0], [canvas_hw[1], 0], [canvas_hw[1], canvas_hw[0]], [0, canvas_hw[0]]], np.float64)
        outlines = [cv2.perspectiveTransform(corners[None], homography)[0]]  # whatever the canvas holds
    if patch_w >= width - 2 or patch_h >= height - 2:
        return []
    # the footprint (words, panel, shadow and a gap) must not overlap an earlier line: checked before any warp,
    # at a few positions, as rendering the line costs more than looking for room
    footprint: np.ndarray = np.zeros((patch_h, patch_w), np.uint8)
    cv2.fillPoly(footprint, [np.round(outline).astype(np.int32) for outline in outlines], 1)
    footprint = cv2.dilate(footprint, np.ones((2 * shadow + 5, 2 * shadow + 5), np.uint8))
    for _position in range(4):
        x, y = int(rng.uniform(0, width - patch_w)), int(rng.uniform(0, height - patch_h))
        region = occupied[y:y + patch_h, x:x + patch_w]
        if not np.any(region & footprint):
            break
    else:
        return []
    region |= footprint
    columns = np.ascontiguousarray(np.broadcast_to(line.columns, canvas_hw))
    if look.curved:
        layers = cv2.remap(line.layers, map_u, map_v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        owner = cv2.remap(columns, map_u, map_v, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    else:
        layers = cv2.warpPerspective(line.layers, homography, (patch_w, patch_h), flags=cv2.INTER_LINEAR)
        owner = cv2.warpPerspective(columns, homography, (patch_w, patch_h), flags=cv2.INTER_NEAREST)
    patch = image[y:y + patch_h, x:x + patch_w]
    alpha: np.ndarray = layers.astype(np.float32) * np.float32(1 / 255)
    behind = np.array(cv2.mean(patch)[:3])
    if look.panel != (0, 0):
        panel_color = _contrasting_color(rng, behind, 50)
        patch += alpha[..., 2:3] * (panel_color.astype(np.float32) - patch)
        behind = panel_color
    if look.camouflaged:
        colors = [np.clip(behind + rng.uniform(-15, 15, 3), 0, 255)]
    else:
        colors = [_contrasting_color(rng, behind, rng.uniform(35, 50) if look.low_contrast else 70)]
        if look.own_colors:
            colors += [_contrasting_color(rng, behind, 70) for _ in tokens[1:]]
    ink = alpha[..., 0] if not look.outline else np.maximum(alpha[..., 0], alpha[..., 1])
    masks = [ink * (owner == index + 1) for index in range(len(tokens))]
    # legibility is judged per pixel under each word's ink: on a busy background (tiles and grout, a photograph)
    # a colour far from the mean can match much of what lies behind it
    behind_luma = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)
    contrasted = [_stands_out(behind_luma[mask > 0.5], color, bool(look.outline))
                  for mask, color in zip(masks, colors if len(colors) > 1 else colors * len(tokens))]
    if look.defocus:
        alpha = cv2.GaussianBlur(alpha, (0, 0), look.defocus)
    if shadow:
        direction = rng.uniform(0, 2 * math.pi)
        dx, dy = int(round(shadow * math.cos(direction))), int(round(shadow * math.sin(direction)))
        cast = np.zeros_like(ink)
        cast[max(dy, 0):patch_h + min(dy, 0), max(dx, 0):patch_w + min(dx, 0)] = \
            ink[max(-dy, 0):patch_h + min(-dy, 0), max(-dx, 0):patch_w + min(-dx, 0)]
        cast = cv2.GaussianBlur(cast, (0, 0), rng.uniform(0.5, 0.5 + shadow)) * np.float32(rng.uniform(0.4, 0.8))
        patch += cast[..., None] * (np.float32(0.2) * patch - patch)
    if look.outline:
        rim_color = _contrasting_color(rng, colors[0], 90).astype(np.float32)
        patch += alpha[..., 1:2] * (rim_color - patch)
    if len(colors) == 1:
        fill_color = colors[0].astype(np.float32)[None, None, :]
    else:  # per-word colours looked up by the owner of each pixel (0: between words, any colour)
        fill_color = np.stack([colors[0]] + colors).astype(np.float32)[owner]
    patch += alpha[..., 0:1] * (fill_color - patch)
    placed = []
    for token, polygon, mask, clear in zip(tokens, polygons, masks, contrasted):
        word_height = _word_height(polygon)
        readable = (not look.camouflaged and clear and word_height >= MIN_LEGIBLE_HEIGHT + 2.0 * blur
                    and look.defocus <= 0.2 * word_height)
        placed.append(Word(polygon=polygon + (x, y), text=token if readable else '###', mask=mask, origin=(x, y)))
    return placed


def _plane_homography(rng: np.random.Generator, width: int, height: int, strength: float) -> np.ndarray:
    """A mild perspective of the image plane (corners moved by up to ``strength`` of the sides)."""
    src = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    dst = src + (rng.uniform(-strength, strength, (4, 2)) * (width, height)).astype(np.float32)
    return cv2.getPerspectiveTransform(src, dst)


def _map_points(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    shape = points.shape
    mapped = cv2.perspectiveTransform(points.reshape(1, -1, 2).astype(np.float64), homography)
    return np.round(mapped.reshape(shape)).astype(np.int32)


def _region(rng: np.random.Generator, width: int, height: int, whole: bool) -> Tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in plane coordinates: past the image on every side, or a random part of it."""
    if whole:
        return -0.3 * width, -0.3 * height, 1.3 * width, 1.3 * height
    region_w, region_h = rng.uniform(0.2, 0.6) * width, rng.uniform(0.2, 0.6) * height
    x0, y0 = rng.uniform(0, width - region_w), rng.uniform(0, height - region_h)
    return x0, y0, x0 + region_w, y0 + region_h


def _tiles(rng: np.random.Generator, image: np.ndarray, homography: np.ndarray, region, brick: bool) -> None:
    """Tiles or a staggered brick bond: cells of jittered colour separated by mortar lines."""
    x0, y0, x1, y1 = region
    tile_h = rng.uniform(10, 50)
    tile_w = tile_h * (rng.uniform(1.8, 3.2) if brick else rng.uniform(0.8, 1.5))
    cells = (x1 - x0) * (y1 - y0) / (tile_w * tile_h)
    if cells > 500:  # bounded cost
        tile_w, tile_h = tile_w * math.sqrt(cells / 500), tile_h * math.sqrt(cells / 500)
    gap = max(1.0, rng.uniform(0.05, 0.15) * tile_h)
    outline = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    cv2.fillPoly(image, [_map_points(homography, outline)], tuple(float(c) for c in rng.uniform(0, 255, 3)))
    quads = []
    for row in range(int((y1 - y0) / tile_h) + 1):
        top = y0 + row * tile_h
        shift = (row % 2) * tile_w / 2 if brick else 0.0
        for column in range(-1, int((x1 - x0) / tile_w) + 1):
            left = x0 + shift + column * tile_w
            quads.append([[left + gap, top + gap], [left + tile_w, top + gap], [left + tile_w, top + tile_h],
                          [left + gap, top + tile_h]])
    mapped = _map_points(homography, np.array(quads))
    base = rng.uniform(0, 255, 3)
    colors = np.clip(base + rng.normal(0, rng.uniform(4, 30), (len(quads), 3))
                     + rng.normal(0, rng.uniform(0, 25), (len(quads), 1)), 0, 255)
    for quad, color in zip(mapped, colors):
        cv2.fillConvexPoly(image, quad, (float(color[0]), float(color[1]), float(color[2])), cv2.LINE_AA)


def _grid(rng: np.random.Generator, image: np.ndarray, homography: np.ndarray, region) -> None:
    """Thin lines at a regular spacing (fences, windows, tables, paper): one or both directions."""
    x0, y0, x1, y1 = region
    spacing = rng.uniform(8, 60)
    segments = [[[x, y0], [x, y1]] for x in np.arange(x0, x1, spacing)]
    if rng.random() < 0.7:
        segments += [[[x0, y], [x1, y]] for y in np.arange(y0, y1, spacing * rng.uniform(0.5, 2.0))]
    lines = list(_map_points(homography, np.array(segments)))
    cv2.polylines(image, lines, False, tuple(float(c) for c in rng.uniform(0, 255, 3)), int(rng.integers(1, 4)),
                  cv2.LINE_AA)


def _stripes(rng: np.random.Generator, image: np.ndarray, homography: np.ndarray, region) -> None:
    """Repeated bands (awnings, blinds, crossings, barcodes) at a regular or random period."""
    x0, y0, x1, y1 = region
    period = rng.uniform(4, 40)
    duty = rng.uniform(0.2, 0.7)
    starts = np.arange(x0, x1, period)
    if rng.random() < 0.3:  # barcode-like: random widths
        starts = np.sort(rng.uniform(x0, x1, len(starts)))
    bands = np.array([[[s, y0], [s + duty * period, y0], [s + duty * period, y1], [s, y1]] for s in starts])
    if rng.random() < 0.5:  # horizontal bands
        center = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        bands = (bands - center)[..., ::-1] * ((y1 - y0) / (x1 - x0), (x1 - x0) / (y1 - y0)) + center
    cv2.fillPoly(image, list(_map_points(homography, bands)), tuple(float(c) for c in rng.uniform(0, 255, 3)),
                 cv2.LINE_AA)


def _facade(rng: np.random.Generator, image: np.ndarray, homography: np.ndarray, region) -> None:
    """Rows of framed rectangles (windows, shelves, panels): strong straight edges and corners."""
    x0, y0, x1, y1 = region
    cell_w, cell_h = rng.uniform(20, 90), rng.uniform(20, 90)
    fill_w, fill_h = cell_w * rng.uniform(0.5, 0.85), cell_h * rng.uniform(0.5, 0.85)
    columns, rows = int((x1 - x0) / cell_w), int((y1 - y0) / cell_h)
    if columns * rows > 300:
        return
    frame = tuple(float(c) for c in rng.uniform(0, 255, 3))
    base = rng.uniform(0, 255, 3)
    quads = np.array([[[x, y], [x + fill_w, y], [x + fill_w, y + fill_h], [x, y + fill_h]]
                      for x in x0 + cell_w * np.arange(columns) for y in y0 + cell_h * np.arange(rows)])
    if len(quads) == 0:
        return
    mapped = _map_points(homography, quads)
    shades = np.clip(base + rng.normal(0, 20, (len(quads), 1)), 0, 255)
    for quad, color in zip(mapped, shades):
        cv2.fillConvexPoly(image, quad, (float(color[0]), float(color[1]), float(color[2])), cv2.LINE_AA)
    cv2.polylines(image, list(mapped), True, frame, int(rng.integers(1, 4)), cv2.LINE_AA)


def _foliage(rng: np.random.Generator, image: np.ndarray, region) -> None:
    """Many small leaves of greens and browns: busy texture with no straight strokes."""
    x0, y0, x1, y1 = (max(v, 0.0) for v in region)
    height, width = image.shape[:2]
    x1, y1 = min(x1, width), min(y1, height)
    count = int(min(450, (x1 - x0) * (y1 - y0) / 500))
    hue = rng.uniform(0, 1)
    centers = np.stack([rng.uniform(x0, x1, count), rng.uniform(y0, y1, count)], 1).astype(int)
    axes = np.stack([rng.uniform(3, 14, count), rng.uniform(1.5, 6, count)], 1).astype(int)
    angles = rng.uniform(0, 180, count)
    light = rng.uniform(0.2, 1.0, count)
    leaf = np.array([40, 150 + 60 * hue, 90 - 50 * hue])  # BGR green to olive
    for center, axis, angle, shade in zip(centers, axes, angles, light):
        color = leaf * shade
        cv2.ellipse(image, (int(center[0]), int(center[1])), (int(axis[0]), int(axis[1])), float(angle), 0, 360,
                    (float(color[0]), float(color[1]), float(color[2])), -1)


def _symbols(rng: np.random.Generator, image: np.ndarray) -> None:
    """Pictograms and sign shapes that are not letters: arrows, rings, triangles, crosses, stars, frames, bars."""
    height, width = image.shape[:2]
    for _ in range(int(rng.integers(2, 9))):
        size = rng.uniform(8, 60)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        thickness = max(1, int(size * rng.uniform(0.06, 0.2)))
        turn = rng.uniform(0, 2 * math.pi)
        rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
        kind = int(rng.integers(7))
        if kind == 0:  # arrow
            shape = np.array([[-1, -0.2], [0.2, -0.2], [0.2, -0.6], [1, 0], [0.2, 0.6], [0.2, 0.2], [-1, 0.2]])
        elif kind == 1:  # triangle
            shape = np.array([[0, -1], [0.9, 0.6], [-0.9, 0.6]])
        elif kind == 2:  # star
            spikes = np.arange(10) * math.pi / 5
            shape = np.stack([np.sin(spikes), -np.cos(spikes)], 1) * np.where(np.arange(10) % 2, 0.45, 1.0)[:, None]
        elif kind == 3:  # chevrons
            shape = np.array([[-0.6, -1], [0.4, 0], [-0.6, 1], [-0.2, 1], [0.8, 0], [-0.2, -1]])
        else:
            shape = np.zeros((0, 2))
        points = np.round(shape @ rotation.T * size / 2 + (cx, cy)).astype(np.int32)
        if len(points):
            if rng.random() < 0.6:
                cv2.fillPoly(image, [points], color, cv2.LINE_AA)
            else:
                cv2.polylines(image, [points], True, color, thickness, cv2.LINE_AA)
        elif kind == 4:  # ring, or a no-entry disk
            cv2.circle(image, (int(cx), int(cy)), int(size / 2), color, thickness if rng.random() < 0.6 else -1,
                       cv2.LINE_AA)
            bar = (rotation @ np.array([size / 3, 0])).astype(int)
            cv2.line(image, (int(cx - bar[0]), int(cy - bar[1])), (int(cx + bar[0]), int(cy + bar[1])),
                     tuple(255.0 - c for c in color), thickness, cv2.LINE_AA)
        elif kind == 5:  # plus / cross
            for arm in (rotation[:, 0], rotation[:, 1]):
                end = arm * size / 2
                cv2.line(image, (int(cx - end[0]), int(cy - end[1])), (int(cx + end[0]), int(cy + end[1])), color,
                         thickness + 1, cv2.LINE_AA)
        else:  # rounded frame
            half = np.array([size / 2, size * rng.uniform(0.2, 0.5)])
            cv2.rectangle(image, (int(cx - half[0]), int(cy - half[1])), (int(cx + half[0]), int(cy + half[1])),
                          color, thickness, cv2.LINE_AA)


def _glyph_strokes(rng: np.random.Generator, image: np.ndarray) -> None:
    """Stroke figures the size of letters, alone or in small irregular groups: strokes joining random points of
    a 3 x 3 lattice and dots. Hard negatives: they are drawn as glyphs are but spell nothing."""
    height, width = image.shape[:2]
    lattice = np.array([[x, y] for y in (0.0, 0.5, 1.0) for x in (0.0, 0.5, 1.0)])
    for _ in range(int(rng.integers(2, 8))):
        size = rng.uniform(10, 50)
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        thickness = max(1, int(size * rng.uniform(0.06, 0.15)))
        for _figure in range(int(rng.integers(1, 4))):
            cell = size * np.array([rng.uniform(0.4, 0.9), 1.0])
            path = lattice[rng.choice(9, int(rng.integers(3, 6)), replace=False)] * cell + (x, y)
            cv2.polylines(image, [np.round(path).astype(np.int32)], False, color, thickness, cv2.LINE_AA)
            if rng.random() < 0.3:
                dot = lattice[int(rng.integers(9))] * cell + (x, y)
                cv2.circle(image, (int(dot[0]), int(dot[1])), thickness, color, -1, cv2.LINE_AA)
            x += size * rng.uniform(1.0, 2.5)  # wider and less regular spacing than letters
            y += size * rng.normal(0, 0.35)


def _lights(rng: np.random.Generator, image: np.ndarray) -> None:
    """Light sources, none of them text: ceiling lamps in a receding row (round, tube or panel lamps whose size
    and spacing shrink along the row, as a row of downlights does in perspective), single lamps and specular
    streaks, each a saturated core with a soft glow. Hard negatives: a row of bright blobs on a dark ceiling is
    the most frequent false detection of a scene-style model on ICDAR 2015 (docs/data.md)."""
    height, width = image.shape[:2]
    glow = np.zeros((height, width), np.float32)
    core = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(4))  # 0 round, 1 tube, 2 panel, 3 specular streak
        count = int(rng.integers(3, 9)) if rng.random() < 0.6 else 1
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        size = rng.uniform(6, 40)
        turn = rng.uniform(-0.35, 0.35) if kind != 3 else rng.uniform(0, math.pi)
        step = np.array([math.cos(turn), math.sin(turn)]) * size * rng.uniform(1.6, 4.0)
        shrink = rng.uniform(0.75, 1.0)  # perspective along the row
        angle = math.degrees(turn)
        for _lamp in range(count):
            half_w = size / 2 * (4.0 if kind == 1 else 1.6 if kind == 2 else 1.0)
            half_h = size / 2 * (0.35 if kind == 1 else 0.8 if kind == 2 else rng.uniform(0.35, 1.0))
            if kind == 3:
                half_w, half_h = size * rng.uniform(1.5, 4.0), size * rng.uniform(0.08, 0.2)
            centre = (int(round(x)), int(round(y)))
            axes = (max(1, int(round(half_w))), max(1, int(round(half_h))))
            if kind in (0, 3):
                cv2.ellipse(core, centre, axes, angle, 0, 360, 255, -1, cv2.LINE_AA)
            else:
                box = cv2.boxPoints(((x, y), (2 * half_w, 2 * half_h), angle))
                cv2.fillPoly(core, [np.round(box).astype(np.int32)], 255, cv2.LINE_AA)
            cv2.ellipse(glow, centre, (axes[0] * 2, axes[1] * 2), angle, 0, 360, float(rng.uniform(0.3, 0.8)), -1)
            x, y = x + step[0], y + step[1]
            step *= shrink
            size *= shrink
    halo = cv2.GaussianBlur(glow, (0, 0), max(2.0, min(height, width) / 80))
    alpha = np.clip(halo + core.astype(np.float32) / 255.0, 0.0, 1.0)[..., None]
    tint = np.array([rng.uniform(200, 255), rng.uniform(225, 255), 255.0], np.float32)  # white to warm white, BGR
    image *= 1.0 - alpha
    image += alpha * tint


def _photo_background(rng: np.random.Generator, photo: np.ndarray, height: int, width: int) -> np.ndarray:
    """A random crop of a photograph scaled to (height, width), flipped and colour-shifted; BGR float32."""
    photo_h, photo_w = photo.shape[:2]
    crop_w = min(photo_w, photo_h * width / height) * rng.uniform(0.5, 1.0)
    crop_h = crop_w * height / width
    x, y = int(rng.uniform(0, photo_w - crop_w)), int(rng.uniform(0, photo_h - crop_h))
    crop = photo[y:y + int(crop_h), x:x + int(crop_w)]
    image = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        image = cv2.flip(image, 1)
    if rng.random() < 0.15:
        image = cv2.flip(image, 0)
    shift = np.zeros((3, 4))  # per-channel gain, common offset (saturating in uint8)
    shift[:, :3] = np.diag(rng.uniform(0.75, 1.25, 3) * rng.uniform(0.6, 1.3))
    shift[:, 3] = rng.uniform(-30, 30)
    image = cv2.transform(image, shift).astype(np.float32)
    return image


def _scene_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photograph (where scikit-image ships some) or a gradient with a structure, plus things that look like
    text but are not: more structures, glyph-like strokes, pictograms. BGR float32."""
    photos = photo_backgrounds()
    whole_structure = True
    if photos and rng.random() < 0.45:
        image = _photo_background(rng, photos[int(rng.integers(len(photos)))], height, width)
        structures = int(rng.random() < 0.35)
        whole_structure = False
    else:
        image = _background(rng, height, width)
        structures = int(rng.integers(1, 3)) if rng.random() < 0.85 else 0
    for index in range(structures):
        whole = whole_structure and index == 0
        homography = _plane_homography(rng, width, height, 0.15)
        region = _region(rng, width, height, whole)
        kind = int(rng.integers(6))
        if kind == 0:
            _tiles(rng, image, homography, region, brick=True)
        elif kind == 1:
            _tiles(rng, image, homography, region, brick=False)
        elif kind == 2:
            _grid(rng, image, homography, region)
        elif kind == 3:
            _stripes(rng, image, homography, region)
        elif kind == 4:
            _facade(rng, image, homography, region)
        else:
            _foliage(rng, image, region)
    if rng.random() < 0.5:
        _clutter(rng, image)
    if rng.random() < 0.6:
        _symbols(rng, image)
    if rng.random() < 0.5:
        _glyph_strokes(rng, image)
    if rng.random() < 0.35:
        _lights(rng, image)
    return image


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """Unit Gaussian noise (1024 x 1024 float32) from a fixed seed: a random crop of it per image costs far less
    than drawing new normals, and the output stays a function of the image's stream."""
    bank = np.random.default_rng(20150101).standard_normal((1024, 1024), dtype=np.float32)
    bank.flags.writeable = False
    return bank


def _noise_crop(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A (height, width) crop of the noise bank (tiled for sides over 1024) at a random offset."""
    bank = _noise_bank()
    reps = (height // 1024 + 1, width // 1024 + 1)
    if reps != (1, 1):
        bank = np.tile(bank, reps)
    y, x = int(rng.integers(bank.shape[0] - height + 1)), int(rng.integers(bank.shape[1] - width + 1))
    return np.ascontiguousarray(bank[y:y + height, x:x + width])


def _camera(rng: np.random.Generator, image: np.ndarray, blur: float, motion: int) -> np.ndarray:
    """Photometric effects, none of which moves a polygon: uneven lighting and vignetting, a colour cast, defocus
    (``blur``, a Gaussian sigma) or motion blur (``motion`` px), sensor noise, and JPEG re-encoding."""
    height, width = image.shape[:2]
    small_h, small_w = max(height // 16, 2), max(width // 16, 2)
    yy, xx = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    yy, xx = yy / (small_h - 1) - 0.5, xx / (small_w - 1) - 0.5
    direction = rng.uniform(0, 2 * math.pi)
    gain = 1 + rng.uniform(0, 0.6) * (xx * math.cos(direction) + yy * math.sin(direction))
    if rng.random() < 0.5:  # vignetting
        cx, cy = rng.uniform(-0.2, 0.2, 2)
        gain *= 1 - rng.uniform(0.2, 1.2) * ((xx - cx) ** 2 + (yy - cy) ** 2)
    if rng.random() < 0.3:  # a highlight
        cx, cy = rng.uniform(-0.5, 0.5, 2)
        gain += rng.uniform(0.1, 0.5) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / rng.uniform(0.01, 0.08))
    gain = gain.astype(np.float32)[..., None] * rng.uniform(0.9, 1.1, 3).astype(np.float32)  # and a colour cast
    image = cv2.multiply(image, cv2.resize(gain, (width, height), interpolation=cv2.INTER_LINEAR), dst=image)
    if blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), blur)
    if motion > 1:
        kernel = np.zeros((motion, motion), np.float32)
        turn = rng.uniform(0, math.pi)
        half = (motion - 1) / 2.0
        end = (half * math.cos(turn), half * math.sin(turn))
        cv2.line(kernel, (int(round(half - end[0])), int(round(half - end[1]))),
                 (int(round(half + end[0])), int(round(half + end[1]))), 1.0, 1, cv2.LINE_AA)
        image = cv2.filter2D(image, -1, kernel / kernel.sum())
    if rng.random() < 0.75:  # sensor noise: luminance, sometimes colour too
        sigma = rng.uniform(1, 8)
        luminance = _noise_crop(rng, height, width) * np.float32(sigma)
        if rng.random() < 0.4:  # colour noise: blue and red depart from green
            chroma = np.float32(rng.uniform(0.2, 0.6) * sigma)
            noise = cv2.merge([luminance + _noise_crop(rng, height, width) * chroma, luminance,
                               luminance + _noise_crop(rng, height, width) * chroma])
        else:
            noise = cv2.cvtColor(luminance, cv2.COLOR_GRAY2BGR)
        image = cv2.add(image, noise)
    result: np.ndarray = np.clip(image, 0, 255, out=image).astype(np.uint8)
    if rng.random() < 0.75:
        quality = int(rng.integers(30, 91))
        ok, encoded = cv2.imencode('.jpg', result, [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            result = decoded
    return result


def generate_scene_image(rng: np.random.Generator, fonts: FontBank,
                         size: int = 640) -> Tuple[np.ndarray, List[Word]]:
    """One image of the scene style (uint8 BGR, longest side ``size``) and its words."""
    aspect = rng.uniform(0.56, 1.0)
    if rng.random() < 0.7:
        width, height = size, int(size * aspect)
    else:
        width, height = int(size * aspect), size
    blur = rng.uniform(0.4, 1.4) if rng.random() < 0.3 else 0.0
    motion = int(rng.integers(3, 10)) if rng.random() < 0.12 else 0
    image = _scene_background(rng, height, width)
    occupied = np.zeros((height, width), dtype=np.uint8)
    words: List[Word] = []
    vocabulary = scene_words()
    for _ in range(int(rng.integers(4, 16))):
        for _attempt in range(6):
            placed = _place_line(rng, fonts, _draw_look(rng, fonts, vocabulary), image, occupied,
                                 blur + motion / 4.0)
            if placed:
                words += placed
                break
    return _camera(rng, image, blur, motion), words


def format_gt_line(word: Word) -> str:
    coordinates = ','.join(str(int(round(v))) for v in word.polygon.reshape(-1))
    return f'{coordinates},{word.text}'


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_STREAM[split], int(index)]))


def write_split(out: str, split: str, count: int, seed: int, fonts: FontBank, size: int = 640,
                style: str = 'basic') -> List[str]:
    image_dir, gt_dir = os.path.join(out, f'{split}_images'), os.path.join(out, f'{split}_gts')
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(gt_dir, exist_ok=True)
    names = []
    for index in range(count):
        image, words = generate_image(image_rng(seed, split, index), fonts, size, style)
        name = f'img_{index + 1}.jpg'
        if not cv2.imwrite(os.path.join(image_dir, name), image, [cv2.IMWRITE_JPEG_QUALITY, 92]):
            raise OSError(f'cannot write {os.path.join(image_dir, name)}')
        with open(os.path.join(gt_dir, name + '.txt'), 'w', encoding='utf-8') as handle:
            handle.write(''.join(format_gt_line(word) + '\n' for word in words))
        names.append(name)
    with open(os.path.join(out, f'{split}_list.txt'), 'w', encoding='utf-8') as handle:
        handle.write(''.join(name + '\n' for name in names))
    return names


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='datasets/synthetic')
    parser.add_argument('--train', type=int, default=500)
    parser.add_argument('--test', type=int, default=100)
    parser.add_argument('--seed', type=int, default=0, help='seed of the training split')
    parser.add_argument('--test_seed', type=int, default=None,
                        help='seed of the test split (default: --seed + 1; the split stream differs anyway)')
    parser.add_argument('--size', type=int, default=640, help='longest image side in pixels')
    parser.add_argument('--fonts', choices=('all', 'builtin'), default='all')
    parser.add_argument('--style', choices=STYLES, default='basic',
                        help="'basic': random letters over textured gradients (make demo); 'scene': real words, "
                             'photographic and structured backgrounds, camera effects')
    args = parser.parse_args(argv)
    fonts = FontBank(find_fonts(args.fonts))
    start = time.perf_counter()
    test_seed = args.seed + 1 if args.test_seed is None else args.test_seed
    for split, count, seed in (('train', args.train, args.seed), ('test', args.test, test_seed)):
        write_split(args.out, split, count, seed, fonts, args.size, args.style)
    total = args.train + args.test
    elapsed = time.perf_counter() - start
    print(f'wrote {args.train} train + {args.test} test {args.style} images to {args.out} '
          f'with {len(fonts.fonts)} fonts in {elapsed:.1f} s ({1000 * elapsed / max(total, 1):.1f} ms/image)')


if __name__ == '__main__':
    main()
