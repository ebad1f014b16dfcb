"""Evaluation speed per image: the IoU (ICDAR 2015) and DetEval protocols, and the 13-threshold sweep
(geometry once, matching per threshold) against evaluating each threshold from scratch.

Synthetic ICDAR-like images: 20 ground-truth quadrilaterals (2 don't care) and 25 detections (18 noisy copies,
7 false positives) each. Prints a Markdown table of medians after warm-up and returns the rows.
Run: ``python -m benchmarks.bench_eval [--repeats N]``.
"""
from __future__ import annotations

import argparse
from typing import Dict, List

import cv2
import numpy as np

from benchmarks.common import machine, median_ms, print_table
from structure.measurers import QuadMeasurer, sweep_box_thresh
from structure.measurers.sweep import DEFAULT_THRESHOLDS


def synthetic_images(count: int, seed: int = 0) -> List[Dict]:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        gts = [cv2.boxPoints(((float(x), float(y)), (float(rng.uniform(30, 200)), float(rng.uniform(10, 40))),
                              float(rng.uniform(-30, 30)))) for x, y in rng.uniform(0, 1200, (20, 2))]
        dets = [np.round(gt + rng.normal(0, 3, gt.shape)).astype(np.int32) for gt in gts[:18]]
        dets += [np.round(cv2.boxPoints(((float(x), float(y)), (60.0, 20.0), 0.0))).astype(np.int32)
                 for x, y in rng.uniform(0, 1200, (7, 2))]
        images.append({'polygons': gts, 'ignore_tags': np.arange(20) < 2, 'boxes': dets,
                       'scores': rng.uniform(0.3, 1.0, len(dets)).tolist()})
    return images


def main(repeats: int = 10, warmup: int = 2, count: int = 20) -> List[Dict[str, str]]:
    images = synthetic_images(count)
    rows = []
    for protocol in ('iou', 'deteval'):
        measurer = QuadMeasurer(protocol=protocol)

        def measure(threshold: float = 0.6) -> None:
            for image in images:
                # the measurer takes no threshold: the detections at box_thresh are the representer's selection
                kept = [index for index, score in enumerate(image['scores']) if score >= threshold]
                boxes = [image['boxes'][index] for index in kept]
                scores = [image['scores'][index] for index in kept]
                measurer.validate_measure({'polygons': [image['polygons']], 'ignore_tags': [image['ignore_tags']]},
                                          ([boxes], [scores]))

        def separate() -> None:
            for threshold in DEFAULT_THRESHOLDS:
                measure(threshold)

        per_image = median_ms(measure, repeats, warmup) / count
        sweep = median_ms(lambda: sweep_box_thresh(images, protocol=protocol), repeats, warmup) / count
        scratch = median_ms(separate, max(1, repeats // 3), 1) / count
        rows.append({'protocol': protocol, 'one image ms': f'{per_image:.2f}',
                     f'sweep of {len(DEFAULT_THRESHOLDS)} ms / image': f'{sweep:.2f}',
                     f'{len(DEFAULT_THRESHOLDS)} separate evaluations ms / image': f'{scratch:.2f}'})
    print(f'Evaluation, {count} images of 20 ground truths and 25 detections, medians after warm-up. {machine()}\n')
    print_table(rows)
    return rows


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=10)
    arguments = parser.parse_args()
    main(repeats=arguments.repeats)
