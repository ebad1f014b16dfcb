"""Tiled inference on generated pages with known words: recall and precision against the ground truth, for the
tiled run, for native-size inference (the whole image at the same scale, where it fits in memory) and for the
capped input a user got before tiling; time and peak memory of each, each run in its own process.

    python -m benchmarks.bench_tiling EXP.yaml --resume CKPT [--pages strip sheet page poster] [--threads 1]

Pages: ``strip`` a receipt strip 300 px wide and 10000 px tall (one or two words a line), ``sheet`` a 2000x2500
page (small enough for native-size inference here), ``page`` a 6000x8000 page, ``poster`` a 10000x10000 page;
lines of random words (22-36 px fonts, dark on light paper with noise), every word's box known. A detection
matches a word at IoU > 0.5 (the ICDAR 2015 rule, greedy, one detection a word); ``twice`` counts words that two
or more detections match (a word cut by a tile border and found in pieces or twice would show here or as a lost
match).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

PAGES = {'strip': (10000, 300), 'sheet': (2500, 2000), 'page': (8000, 6000), 'poster': (10000, 10000)}  # (h, w)


def generate_page(kind: str, seed: int = 0) -> Tuple[np.ndarray, List[np.ndarray]]:
    """(uint8 BGR image, word boxes (4, 2) float) of one of PAGES."""
    return text_page(*PAGES[kind], seed=seed)


def text_page(height: int, width: int, seed: int = 0) -> Tuple[np.ndarray, List[np.ndarray]]:
    """(uint8 BGR image, word boxes (4, 2) float): a page of lines of random words, 22-36 px fonts."""
    from data.synthetic import FontBank, find_fonts, render_word_mask
    rng = np.random.default_rng(seed)
    paper = rng.uniform(215, 245, 3)
    image = np.empty((height, width, 3), dtype=np.float32)
    image[:] = paper
    fonts = FontBank(find_fonts('builtin'))
    words: List[np.ndarray] = []
    y = 40
    alphabet = np.array(list('ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789'))
    while y < height - 80:
        font_px = int(rng.integers(22, 37))
        font = fonts.get(0, font_px)
        x = int(rng.integers(20, 60))
        line_height = 0
        while True:
            text = ''.join(rng.choice(alphabet, size=int(rng.integers(3, 10))))
            mask, (x0, y0, x1, y1) = render_word_mask(text, font, 0)
            if x + mask.shape[1] >= width - 20:
                break
            ink = rng.uniform(10, 70, 3)
            region = image[y:y + mask.shape[0], x:x + mask.shape[1]]
            alpha = (mask.astype(np.float32) / 255.0)[..., None]
            region += alpha * (ink - region)
            words.append(np.array([[x + x0 - 2, y + y0 - 2], [x + x1 + 2, y + y0 - 2], [x + x1 + 2, y + y1 + 2],
                                   [x + x0 - 2, y + y1 + 2]], dtype=np.float64))
            line_height = max(line_height, mask.shape[0])
            x += mask.shape[1] + int(rng.integers(font_px // 2, 3 * font_px))
        y += line_height + int(rng.integers(font_px // 2, font_px + 8))
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(6)
    return np.clip(image, 0, 255).astype(np.uint8), words


def write_training_set(out: str, count: int, size: int = 640, seed: int = 1000) -> None:
    """``count`` pages of ``size`` px (seeds ``seed``...; the benchmark's pages use 0) in the converted layout
    (``train_images/``, ``train_gts/``, ``train_list.txt``; the last tenth also as ``test_*``): the model of the
    table is trained on these (see docs/inference.md)."""
    import cv2
    from data.synthetic import format_gt_line, Word
    for split, first, number in (('train', 0, count), ('test', count, max(1, count // 10))):
        os.makedirs(os.path.join(out, f'{split}_images'), exist_ok=True)
        os.makedirs(os.path.join(out, f'{split}_gts'), exist_ok=True)
        names = []
        for index in range(first, first + number):
            rng = np.random.default_rng(seed + index)
            height, width = size, int(size * rng.uniform(0.6, 1.0))
            image, words = text_page(height, width, seed=seed + index)
            name = f'page_{index}.jpg'
            cv2.imwrite(os.path.join(out, f'{split}_images', name), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            with open(os.path.join(out, f'{split}_gts', name + '.txt'), 'w', encoding='utf-8') as handle:
                handle.write(''.join(format_gt_line(Word(polygon=box, text='word', mask=np.zeros(1), origin=(0, 0)))
                                     + '\n' for box in words))
            names.append(name)
        with open(os.path.join(out, f'{split}_list.txt'), 'w', encoding='utf-8') as handle:
            handle.write(''.join(name + '\n' for name in names))


def match(words: Sequence[np.ndarray], detections: Sequence[np.ndarray]) -> Dict[str, Any]:
    """The ICDAR 2015 rule (the project's ``DetectionIoUEvaluator``: greedy, one to one, IoU > 0.5) and ``twice``,
    the words that two or more detections overlap at IoU > 0.5."""
    from structure.measurers.protocols.icdar2015_eval.iou import DetectionIoUEvaluator
    evaluator = DetectionIoUEvaluator()
    gt = [{'points': np.asarray(word, dtype=np.float64), 'ignore': False} for word in words]
    pred = [{'points': np.asarray(box, dtype=np.float64)} for box in detections]
    tables = evaluator.prepare(gt, pred)
    result = evaluator.match(tables)
    twice = int(((tables.iou > evaluator.iou_constraint).sum(axis=1) >= 2).sum())
    recall = result['matched'] / max(1, len(words))
    precision = result['matched'] / len(detections) if len(detections) else 0.0
    return {'words': len(words), 'detections': len(detections), 'matched': result['matched'], 'recall': recall,
            'precision': precision, 'twice': twice}


def run_one(args: argparse.Namespace) -> Dict[str, Any]:
    """One configuration in this process: detections, seconds, peak resident memory."""
    import torch
    torch.set_num_threads(args.threads)
    from inference.detector import TextDetector
    image, words = generate_page(args.page, args.seed)
    # a page holds thousands of words: the experiment's max_candidates (1000) would cap the detections
    options: Dict[str, Any] = dict(device='cpu', max_pixels=None, tile_size=args.tile_size,
                                   tile_overlap=args.tile_overlap,
                                   opts=[f'structure.representer.max_candidates={args.max_candidates}'])
    if args.mode == 'capped':  # what a user got before tiling: the short-side rule, long side capped at 2560
        options.update(tiling='off')
    elif args.mode == 'tiled':
        options.update(tiling='on', image_scale=args.scale)
    else:  # whole: the same scale in one piece
        options.update(tiling='off', image_scale=args.scale, max_long_side=None)
    detector = TextDetector(args.exp, args.resume, **options)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = detector.detect(image)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak_mib = _peak_mib()  # the detector's peak, before the scoring's tables
    numbers = match(words, result.polygons)
    numbers.update(seconds=seconds, cpu_seconds=cpu_seconds, input=f'{result.input_size[1]}x{result.input_size[0]}',
                   tiles=result.tiles, peak_mib=peak_mib)
    return numbers


def _peak_mib() -> float:
    with open('/proc/self/status', encoding='utf-8') as handle:
        for line in handle:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('exp')
    parser.add_argument('--resume', required=True)
    parser.add_argument('--pages', nargs='+', default=list(PAGES), choices=list(PAGES))
    parser.add_argument('--scale', type=float, default=1.0, help='the tiled and whole runs: image_scale')
    parser.add_argument('--tile_size', type=int, default=1024)
    parser.add_argument('--tile_overlap', type=int, default=256)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--whole_limit', type=float, default=6e6,
                        help='run native-size inference only for inputs up to this many pixels (memory)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--max_candidates', type=int, default=100000,
                        help="the representer's max_candidates for every run (the experiment's 1000 caps a page)")
    parser.add_argument('--write_training_set', metavar='DIR', default=None,
                        help='write pages for training the model of the table to DIR, and stop')
    parser.add_argument('--page', help=argparse.SUPPRESS)
    parser.add_argument('--mode', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_training_set:
        write_training_set(args.write_training_set, 400)
        return 0
    if args.mode:
        print(json.dumps(run_one(args)))
        return 0
    from benchmarks.common import machine
    print(machine())
    print(f'threads {args.threads}; scale {args.scale}; tiles {args.tile_size} px, overlap {args.tile_overlap} px; '
          f'max_candidates {args.max_candidates}; '
          'time of the detector call (page generation excluded): process CPU seconds (robust to other load) and '
          'wall seconds; peak resident memory of the process')
    print('| page | run | network input | tiles | words | recall | precision | words matched twice | CPU s | wall s | '
          'peak MiB |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for page in args.pages:
        height, width = PAGES[page]
        modes = ['tiled', 'capped']
        if height * width * args.scale ** 2 <= args.whole_limit:
            modes.insert(1, 'whole')
        from concern.config import project_module
        for mode in modes:
            command = [sys.executable, '-m', project_module('benchmarks.bench_tiling'), args.exp, '--resume',
                       args.resume, '--page', page, '--mode', mode, '--scale', str(args.scale), '--tile_size',
                       str(args.tile_size), '--tile_overlap', str(args.tile_overlap), '--threads', str(args.threads),
                       '--seed', str(args.seed), '--max_candidates', str(args.max_candidates)]
            done = subprocess.run(command, capture_output=True, text=True,
                                  env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
            if done.returncode:
                print(f'| {page} {width}x{height} | {mode} | failed: {done.stderr.strip().splitlines()[-1:]} |')
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {page} {width}x{height} | {mode} | {row['input']} | {row['tiles']} | {row['words']} | "
                  f"{row['recall']:.3f} | {row['precision']:.3f} | {row['twice']} | {row['cpu_seconds']:.1f} | "
                  f"{row['seconds']:.1f} | "
                  f"{row['peak_mib']:.0f} |", flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
