"""Post-processing speed: SegDetectorRepresenter vs the straightforward per-contour reference.

A 736x1280 probability map with 60 text regions (structure.representers.reference.random_probability_map),
box and polygon mode, default options. Each repeat times both versions back to back on the same maps
(interleaved, so that load from other processes hits both alike) and checks that their boxes and scores are
identical. Prints a Markdown table of medians after warm-up and returns the rows.
Run: ``python -m benchmarks.bench_postprocess [--repeats N]``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Dict, List

import numpy as np

from benchmarks.common import machine, print_table
from structure.representers import SegDetectorRepresenter
from structure.representers.reference import ReferenceRepresenter, random_probability_map

HEIGHT, WIDTH, REGIONS = 736, 1280, 60


def same_output(fast_output, reference_output) -> bool:
    (boxes, scores), (expected_boxes, expected_scores) = fast_output, reference_output
    return (list(scores) == list(expected_scores) and len(boxes) == len(expected_boxes)
            and all(np.array_equal(a, b) for a, b in zip(boxes, expected_boxes)))


def main(repeats: int = 30, warmup: int = 3, maps: int = 4) -> List[Dict[str, str]]:
    probs = [random_probability_map(HEIGHT, WIDTH, REGIONS, seed=seed) for seed in range(maps)]
    fast, reference = SegDetectorRepresenter(), ReferenceRepresenter()
    rows = []
    for polygon in (False, True):
        mode = 'polygon' if polygon else 'box'
        run_fast = fast.polygons_from_map if polygon else fast.boxes_from_map
        fast_times, reference_times, detections = [], [], 0
        for prob in probs:
            if not same_output(run_fast(prob, HEIGHT, WIDTH), reference.represent_map(prob, HEIGHT, WIDTH, polygon)):
                raise AssertionError(f'{mode} mode: fast and reference outputs differ')
            detections += len(run_fast(prob, HEIGHT, WIDTH)[1])
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
                     'reference ms': f'{reference_ms:.2f}', 'fast ms': f'{fast_ms:.2f}',
                     'speed-up': f'{reference_ms / fast_ms:.2f}x', 'identical': 'yes'})
    print(f'Post-processing, {HEIGHT}x{WIDTH} map, {REGIONS} regions, {maps} maps, median of {repeats} '
          f'after {warmup} warm-up. {machine()}\n')
    print_table(rows)
    return rows


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=30)
    arguments = parser.parse_args()
    main(repeats=arguments.repeats)
