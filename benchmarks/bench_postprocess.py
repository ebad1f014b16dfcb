"""Post-processing speed: SegDetectorRepresenter against the original code base's per-contour code path.

The baseline is `structure.representers.reference.ReferenceRepresenter`, which follows the original
(MhLiao/DB) `SegDetectorRepresenter` call for call: findContours on the (bitmap * 255) uint8 image, per contour
minAreaRect / boxPoints / a Python sort of the corners, `box_score_fast` with its NumPy scalar clipping, shapely
area / length and a pyclipper offset per candidate, the same re-fit and size checks, in the same order and data
types; only its last step is the one both versions share (`to_image_polygons`: scaling, rounding and clipping as
the original did, plus the validity check and repair). Its deviations from the original are listed in its module
docstring; it is no slower than the original (checked with a scratch copy of the original's functions).

Maps: ``--maps`` different 736x1280 probability maps with 60 text regions each (seeds 0, 1, ...;
`random_probability_map`), box and polygon mode, default options, output size = map size. Before timing, both
versions run on every map and their boxes / polygons and scores must be identical (bit for bit); then each repeat
times both back to back on one map, the maps in turn (interleaved, so that load from other processes hits both
alike). Prints the machine, a Markdown table of medians after warm-up, and returns the rows.
Run: ``python -m benchmarks.bench_postprocess [--repeats N] [--maps M]``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Dict, List

import numpy as np
import torch

from benchmarks.common import machine, print_table
from structure.representers import SegDetectorRepresenter
from structure.representers.reference import ReferenceRepresenter, random_probability_map

HEIGHT, WIDTH, REGIONS = 736, 1280, 60


def same_output(fast_output, reference_output) -> bool:
    (boxes, scores), (expected_boxes, expected_scores) = fast_output, reference_output
    return (list(scores) == list(expected_scores) and len(boxes) == len(expected_boxes)
            and all(np.array_equal(a, b) for a, b in zip(boxes, expected_boxes)))


def main(repeats: int = 50, warmup: int = 10, maps: int = 10) -> List[Dict[str, str]]:
    probs = [random_probability_map(HEIGHT, WIDTH, REGIONS, seed=seed) for seed in range(maps)]
    fast, reference = SegDetectorRepresenter(), ReferenceRepresenter()
    rows = []
    for polygon in (False, True):
        mode = 'polygon' if polygon else 'box'
        run_fast = fast.polygons_from_map if polygon else fast.boxes_from_map
        fast_times, reference_times, detections = [], [], 0
        for seed, prob in enumerate(probs):
            output = run_fast(prob, HEIGHT, WIDTH)
            if not same_output(output, reference.represent_map(prob, HEIGHT, WIDTH, polygon)):
                raise AssertionError(f'{mode} mode, map {seed}: fast and baseline outputs differ')
            detections += len(output[1])
        for step in range(warmup + repeats):
            prob = probs[step % maps]
            start = time.perf_counter()
            reference.represent_map(prob, HEIGHT, WIDTH, polygon)
            middle = time.perf_counter()
            run_fast(prob, HEIGHT, WIDTH)
            end = time.perf_counter()
            if step >= warmup:
                reference_times.append((middle - start) * 1e3)
                fast_times.append((end - middle) * 1e3)
        reference_ms, fast_ms = statistics.median(reference_times), statistics.median(fast_times)
        rows.append({'mode': mode, 'detections / map': f'{detections / maps:.1f}',
                     'baseline (original code path) ms': f'{reference_ms:.2f}', 'fast ms': f'{fast_ms:.2f}',
                     'speed-up': f'{reference_ms / fast_ms:.2f}x', 'identical': 'yes'})
    description = machine()
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in description:
        description += f', torch CPU capability {capability}'
    print(f'Post-processing per map: fast SegDetectorRepresenter against a baseline that follows the original '
          f"code base's SegDetectorRepresenter call for call (structure/representers/reference.py). "
          f'{HEIGHT}x{WIDTH} maps, {REGIONS} regions each, {maps} maps (seeds 0-{maps - 1}), '
          f'median of {repeats} interleaved repeats after {warmup} warm-up; outputs identical on every map. '
          f'{description}\n')
    print_table(rows)
    return rows


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=50)
    parser.add_argument('--maps', type=int, default=10)
    arguments = parser.parse_args()
    main(repeats=arguments.repeats, maps=arguments.maps)
