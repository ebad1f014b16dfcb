"""Data pipeline benchmark: training sample pipeline, label generation, border map fast vs naive.

    python -m benchmarks.bench_data
"""
import os
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import cv2
import numpy as np
import pyclipper
import torch

from data.image_io import read_image
from data.processes import (AugmentDetectionData, FilterKeys, MakeBorderMap, MakeICDARData, MakeSegDetectionData,
                            NormalizeImage, RandomCropData)
from benchmarks.common import interleaved_median_ms, machine, median_ms
from data.rng import reseed
from data.synthetic import FontBank, find_fonts, generate_image, image_rng

ORIGINAL_AUGMENTATION = [['Fliplr', 0.5], {'cls': 'Affine', 'rotate': [-10, 10]}, ['Resize', [0.5, 3.0]]]


def icdar_like_lines(rng: np.random.Generator, count: int, width: int, height: int) -> List[Dict]:
    lines = []
    for index in range(count):
        w, h = rng.uniform(40, 160), rng.uniform(14, 45)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        skew = rng.uniform(-4, 4)
        lines.append({'poly': [[x, y], [x + w, y + skew], [x + w, y + h + skew], [x, y + h]],
                      'text': '###' if index % 4 == 3 else 'word'})
    return lines


def training_processes():
    return [AugmentDetectionData(ORIGINAL_AUGMENTATION, only_resize=False, keep_ratio=False),
            RandomCropData(size=[640, 640], max_tries=10), MakeICDARData(), MakeSegDetectionData(), MakeBorderMap(),
            NormalizeImage(), FilterKeys(superfluous=['polygons', 'filename', 'shape', 'ignore_tags', 'is_training'])]


def dilation_distance(polygon: np.ndarray, shrink_ratio: float) -> float:
    """D = A (1 - r^2) / L, written out here so that the references do not share the code they time."""
    x, y = polygon[:, 0], polygon[:, 1]
    area = 0.5 * abs(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
    perimeter = np.sum(np.hypot(np.roll(x, -1) - x, np.roll(y, -1) - y))
    return area * (1 - shrink_ratio ** 2) / perimeter


def naive_border_map(polygons: List[np.ndarray], height: int, width: int, shrink_ratio: float = 0.4) -> np.ndarray:
    """The original's approach (per edge over the whole dilated bounding box), with a correct distance."""
    canvas = np.zeros((height, width), dtype=np.float32)
    for polygon in polygons:
        polygon = polygon.astype(np.float64)
        distance = dilation_distance(polygon, shrink_ratio)
        offset = pyclipper.PyclipperOffset()  # the mask step of the original (bounding box taken exactly below)
        offset.AddPath([tuple(p) for p in polygon], pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
        offset.Execute(distance)
        xmin, ymin = np.floor(polygon.min(axis=0) - distance).astype(int)
        xmax, ymax = np.ceil(polygon.max(axis=0) + distance).astype(int)
        box_w, box_h = xmax - xmin + 1, ymax - ymin + 1
        local = polygon - (xmin, ymin)
        xs = np.broadcast_to(np.arange(box_w, dtype=np.float64)[None, :], (box_h, box_w))
        ys = np.broadcast_to(np.arange(box_h, dtype=np.float64)[:, None], (box_h, box_w))
        per_edge = np.zeros((len(local), box_h, box_w), dtype=np.float32)
        for i in range(len(local)):
            a, b = local[i], local[(i + 1) % len(local)]
            edge = b - a
            t = np.clip(((xs - a[0]) * edge[0] + (ys - a[1]) * edge[1]) / max(edge @ edge, 1e-12), 0, 1)
            per_edge[i] = np.clip(np.hypot(xs - a[0] - t * edge[0], ys - a[1] - t * edge[1]) / distance, 0, 1)
        nearest = per_edge.min(axis=0)
        x0, y0 = max(xmin, 0), max(ymin, 0)
        x1, y1 = min(xmax, width - 1), min(ymax, height - 1)
        if x1 < x0 or y1 < y0:
            continue
        patch = 1 - nearest[y0 - ymin:y1 - ymin + 1, x0 - xmin:x1 - xmin + 1]
        canvas[y0:y1 + 1, x0:x1 + 1] = np.fmax(patch, canvas[y0:y1 + 1, x0:x1 + 1])
    return canvas


def original_style_border_map(polygons: List[np.ndarray], height: int, width: int,
                              shrink_ratio: float = 0.4) -> np.ndarray:
    """Cost model of the original implementation: float64 grids over the whole dilated box, and per edge
    a law-of-cosines distance (its known flaw kept, as only the timing is compared)."""
    canvas = np.zeros((height, width), dtype=np.float32)
    for polygon in polygons:
        polygon = polygon.astype(np.float64)
        distance = dilation_distance(polygon, shrink_ratio)
        offset = pyclipper.PyclipperOffset()
        offset.AddPath([tuple(p) for p in polygon], pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
        dilated = np.array(offset.Execute(distance)[0])
        xmin, xmax = dilated[:, 0].min(), dilated[:, 0].max()
        ymin, ymax = dilated[:, 1].min(), dilated[:, 1].max()
        box_w, box_h = xmax - xmin + 1, ymax - ymin + 1
        local = polygon - (xmin, ymin)
        xs = np.broadcast_to(np.linspace(0, box_w - 1, num=box_w).reshape(1, box_w), (box_h, box_w))
        ys = np.broadcast_to(np.linspace(0, box_h - 1, num=box_h).reshape(box_h, 1), (box_h, box_w))
        per_edge = np.zeros((len(local), box_h, box_w), dtype=np.float32)
        for i in range(len(local)):
            a, b = local[i], local[(i + 1) % len(local)]
            to_a = np.square(xs - a[0]) + np.square(ys - a[1])
            to_b = np.square(xs - b[0]) + np.square(ys - b[1])
            edge2 = np.square(a[0] - b[0]) + np.square(a[1] - b[1])
            cosine = (edge2 - to_a - to_b) / (2 * np.sqrt(to_a * to_b) + 1e-12)
            sine2 = np.nan_to_num(1 - np.square(cosine))
            result = np.sqrt(to_a * to_b * sine2 / edge2)
            result[cosine < 0] = np.sqrt(np.fmin(to_a, to_b))[cosine < 0]
            per_edge[i] = np.clip(result / distance, 0, 1)
        nearest = per_edge.min(axis=0)
        x0, y0 = min(max(0, xmin), width - 1), min(max(0, ymin), height - 1)
        x1, y1 = min(max(0, xmax), width - 1), min(max(0, ymax), height - 1)
        canvas[y0:y1 + 1, x0:x1 + 1] = np.fmax(
            1 - nearest[y0 - ymin:y1 - ymax + box_h, x0 - xmin:x1 - xmax + box_w], canvas[y0:y1 + 1, x0:x1 + 1])
    return canvas


def main() -> List[Dict[str, str]]:
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    reseed(0)
    fonts = FontBank(find_fonts('builtin'))
    background, _ = generate_image(image_rng(0, 'train', 0), fonts, size=1280)
    image = cv2.resize(background, (1280, 720))
    lines = icdar_like_lines(rng, 15, 1280, 720)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'img.jpg')
        cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        processes = training_processes()

        def pipeline(read: bool):
            image_read = read_image(path, orientation='stored') if read else image
            data = {'filename': path, 'data_id': 'img.jpg', 'image': image_read,
                    'lines': [dict(line) for line in lines], 'is_training': True}
            for process in processes:
                data = process.process(data)
            return data

        rows.append(('training sample: read JPEG + augment + crop + labels + normalize (1280x720, 15 quads)',
                     median_ms(lambda: pipeline(True), 200)))
        rows.append(('training sample without the JPEG read', median_ms(lambda: pipeline(False), 200)))
        rows.append(('JPEG read alone (1280x720)', median_ms(lambda: read_image(path, orientation='stored'), 100)))

    label_input = {'image': np.zeros((640, 640, 3), np.uint8), 'is_training': True}
    label_lines = icdar_like_lines(rng, 15, 640, 640)

    def labels():
        data = dict(label_input, lines=[dict(line) for line in label_lines])
        for process in (MakeICDARData(), MakeSegDetectionData(), MakeBorderMap()):
            data = process.process(data)
        return data

    rows.append(('label generation (MakeICDARData + MakeSegDetectionData + MakeBorderMap, 640x640, 15 quads)',
                 median_ms(labels, 100)))
    polygons = [np.asarray(line['poly'], np.float32) for line in icdar_like_lines(rng, 25, 640, 640)]
    border = MakeBorderMap()

    def fast():
        distance = np.ones((640, 640), np.float32)
        mask = np.zeros((640, 640), np.float32)
        for polygon in polygons:
            border.draw_border_map(polygon, distance, mask)
        return 1.0 - distance

    fast_ms = median_ms(fast, 100)
    naive_ms = median_ms(lambda: naive_border_map(polygons, 640, 640), 30)
    original_ms = median_ms(lambda: original_style_border_map(polygons, 640, 640), 30)
    difference = float(np.abs(fast() - naive_border_map(polygons, 640, 640)).max())
    rows.append(('border map, original-style per-edge whole-box NumPy (law of cosines; 640x640, 25 polygons)',
                 original_ms))
    rows.append(('border map, naive per-edge whole-box NumPy with the exact segment distance', naive_ms))
    rows.append((f'border map, fast MakeBorderMap (mask + map; max abs diff vs exact naive {difference:.1e})',
                 fast_ms))
    # the network input of one image: the original's float32-then-resize (default) against the 8-bit resize,
    # interleaved (docs/inference.md, "The preprocessing")
    from data.input_size import InputSize
    from inference.preprocess import prepare_image
    rule = InputSize('short_side', 736, 2560)
    for height, width in ((720, 1280), (3000, 4000), (10000, 300)):
        photo = cv2.resize(background, (width, height), interpolation=cv2.INTER_LINEAR)
        size = rule(height, width)
        def prepare(dtype: str, photo: np.ndarray = photo, size: Tuple[int, int] = size) -> Callable[[], object]:
            return lambda: prepare_image(photo, size, dtype)

        times = interleaved_median_ms({dtype: prepare(dtype) for dtype in ('uint8', 'float32')}, 15)
        for dtype in ('uint8', 'float32'):
            how = 'float32, then resize (default)' if dtype == 'float32' else 'uint8 resize (--resize_dtype uint8)'
            rows.append((f'network input {width}x{height} -> {size[1]}x{size[0]}: {how} + normalise', times[dtype]))
    fonts = FontBank(find_fonts('all'))
    for index in range(10):
        generate_image(image_rng(1, 'train', index), fonts)
    start = time.perf_counter()
    for index in range(10, 60):
        generate_image(image_rng(1, 'train', index), fonts)
    rows.append((f'synthetic image generation (640 px, {len(fonts.fonts)} fonts, no file writing)',
                 1000.0 * (time.perf_counter() - start) / 50))
    table = [{'benchmark': name, 'median ms': f'{value:.2f}'} for name, value in rows]
    print(f'Machine: {machine()} (single-threaded OpenCV / torch)\n')
    print('| benchmark | median ms |\n|---|---|')
    for row in table:
        print(f"| {row['benchmark']} | {row['median ms']} |")
    print(f'\nborder map speed-up: {original_ms / fast_ms:.1f}x vs original-style, '
          f'{naive_ms / fast_ms:.1f}x vs exact naive')
    return table


if __name__ == '__main__':
    main()
