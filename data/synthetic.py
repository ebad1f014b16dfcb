"""Synthetic scene-text data set in the original's converted on-disk layout (no downloads).

    python -m data.synthetic --out datasets/synthetic --train 500 --test 100 --seed 0

writes ``train_images/``, ``train_gts/`` (``<image name>.txt``: ``x1,y1,...,xn,yn,label`` per word,
``###`` = don't care), ``test_images/``, ``test_gts/``, ``train_list.txt`` and ``test_list.txt``.
Each image is drawn from its own stream (seed, split, index), so output is deterministic for a seed
and a font set (``--fonts builtin`` uses only Pillow's bundled font, identical on every machine).
"""
import argparse
import glob
import math
import os
import string
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

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


def _perspective_word(rng, mask, ink_box, angle_deg, jitter,
                      position) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int]]:
    """Rotate + mildly perspective-warp a word mask; returns (patch alpha, polygon, patch origin)."""
    height, width = mask.shape
    src = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32)
    dst = src + rng.uniform(-jitter, jitter, (4, 2)).astype(np.float32)
    center = dst.mean(axis=0)
    theta = math.radians(angle_deg)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=np.float32)
    dst = (dst - center) @ rotation.T
    lo = np.floor(dst.min(axis=0)) - 2
    dst -= lo
    patch_w, patch_h = (np.ceil(dst.max(axis=0)) + 3).astype(int)
    homography = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    alpha = cv2.warpPerspective(mask, homography, (int(patch_w), int(patch_h)), flags=cv2.INTER_LINEAR)
    x0, y0, x1, y1 = ink_box
    quad = np.array([[x0 - PAD, y0 - PAD], [x1 + PAD, y0 - PAD], [x1 + PAD, y1 + PAD], [x0 - PAD, y1 + PAD]],
                    dtype=np.float64)
    warped_quad = cv2.perspectiveTransform(quad[None], homography)[0]
    origin = (int(position[0]), int(position[1]))
    return alpha.astype(np.float32) / 255.0, warped_quad + origin, origin


def _curved_word(rng, mask, ink_box, angle_deg, position, points_per_side=7):
    """Bend a word mask along a circular arc; polygon of 2 * points_per_side points."""
    height, width = mask.shape
    radius = float(rng.uniform(1.0, 3.0)) * width
    side = 1.0 if rng.random() < 0.5 else -1.0  # +1: centre below the text, -1: above
    theta = math.radians(angle_deg)
    cos_t, sin_t = math.cos(theta), math.sin(theta)

    def forward(u, v):
        """Word-mask coordinates -> patch-local coordinates (arc centre at origin, then rotated)."""
        phi = (u - width / 2.0) / radius
        r = radius + side * (height / 2.0 - v)
        x, y = r * np.sin(phi), -side * r * np.cos(phi)
        return x * cos_t - y * sin_t, x * sin_t + y * cos_t

    x0, y0, x1, y1 = ink_box
    us = np.linspace(x0 - PAD, x1 + PAD, points_per_side)
    step = (us[1] - us[0]) / radius
    top_v, bottom_v = y0 - PAD, y1 + PAD
    r_top, r_bottom = radius + side * (height / 2.0 - top_v), radius + side * (height / 2.0 - bottom_v)
    # The outer side's chords would cut into the arc: push its vertices out so the chords circumscribe it.
    grow = 1.0 / math.cos(step / 2.0)
    top_scale, bottom_scale = (grow, 1.0) if r_top > r_bottom else (1.0, grow)
    top = np.stack(forward(us, np.full_like(us, top_v)), axis=1)
    bottom = np.stack(forward(us[::-1], np.full_like(us, bottom_v)), axis=1)
    polygon = np.concatenate([top * top_scale, bottom * bottom_scale])  # centre-relative, so scaling is radial
    corners = np.stack(forward(np.array([0, width - 1, width - 1, 0.0]), np.array([0, 0, height - 1, height - 1.0])), 1)
    extent = np.concatenate([polygon, corners, np.stack(forward(np.linspace(0, width, 9), np.zeros(9)), 1),
                             np.stack(forward(np.linspace(0, width, 9), np.full(9, height - 1.0)), 1)])
    lo = np.floor(extent.min(axis=0)) - 2
    patch_w, patch_h = (np.ceil(extent.max(axis=0) - lo) + 3).astype(int)
    # inverse map for cv2.remap: patch pixel -> word-mask pixel
    ys, xs = np.mgrid[0:patch_h, 0:patch_w].astype(np.float32)
    px, py = xs + lo[0], ys + lo[1]
    x, y = px * cos_t + py * sin_t, -px * sin_t + py * cos_t
    r = np.hypot(x, y)
    phi = np.arctan2(x, -side * y)
    map_u = (phi * radius + width / 2.0).astype(np.float32)
    map_v = (height / 2.0 - side * (r - radius)).astype(np.float32)
    alpha = cv2.remap(mask, map_u, map_v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    origin = (int(position[0]), int(position[1]))
    return alpha.astype(np.float32) / 255.0, polygon - lo + origin, origin


def _random_text(rng: np.random.Generator) -> str:
    length = int(rng.integers(2, 11))
    text = ''.join(rng.choice(list(ALPHABET), size=length))
    style = rng.random()
    return text.upper() if style < 0.3 else text.capitalize() if style < 0.6 else text


def generate_image(rng: np.random.Generator, fonts: FontBank, size: int = 640) -> Tuple[np.ndarray, List[Word]]:
    """One synthetic image (uint8 BGR, longest side ``size``) and its words."""
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


def format_gt_line(word: Word) -> str:
    coordinates = ','.join(str(int(round(v))) for v in word.polygon.reshape(-1))
    return f'{coordinates},{word.text}'


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_STREAM[split], int(index)]))


def write_split(out: str, split: str, count: int, seed: int, fonts: FontBank, size: int = 640) -> List[str]:
    image_dir, gt_dir = os.path.join(out, f'{split}_images'), os.path.join(out, f'{split}_gts')
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(gt_dir, exist_ok=True)
    names = []
    for index in range(count):
        image, words = generate_image(image_rng(seed, split, index), fonts, size)
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
    args = parser.parse_args(argv)
    fonts = FontBank(find_fonts(args.fonts))
    start = time.perf_counter()
    test_seed = args.seed + 1 if args.test_seed is None else args.test_seed
    for split, count, seed in (('train', args.train, args.seed), ('test', args.test, test_seed)):
        write_split(args.out, split, count, seed, fonts, args.size)
    total = args.train + args.test
    elapsed = time.perf_counter() - start
    print(f'wrote {args.train} train + {args.test} test images to {args.out} with {len(fonts.fonts)} fonts '
          f'in {elapsed:.1f} s ({1000 * elapsed / max(total, 1):.1f} ms/image)')


if __name__ == '__main__':
    main()
