"""Detect text in your own images: ``python demo.py EXP.yaml --resume CKPT --image_path PATH`` (see docs/inference.md).

Only the model and the post-processing are built from the experiment: no data set is needed. With
``--onnx model.onnx`` the network runs in onnxruntime instead of PyTorch (the experiment still supplies the
post-processing settings); preprocessing and post-processing are NumPy / OpenCV either way.
"""
from __future__ import annotations

import glob
import os
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from concern.cli import apply_representer_flags, compile_experiment, demo_parser, select_device
from concern.config import ConfigError, dump_config

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def list_images(image_path: str) -> List[str]:
    """One image, the images of a folder (sorted), or the images matching a glob (sorted)."""
    if os.path.isdir(image_path):
        return sorted(os.path.join(image_path, name) for name in os.listdir(image_path)
                      if name.lower().endswith(IMAGE_EXTENSIONS))
    if os.path.isfile(image_path):
        return [image_path]
    return sorted(path for path in glob.glob(image_path) if path.lower().endswith(IMAGE_EXTENSIONS))


def image_batches(paths: Sequence[str], short_side: int, max_long_side: int, report: Any) -> Iterator[Dict[str, Any]]:
    """One batch per readable image: network input, original size and the original image (for drawing)."""
    from concern.inference import inference_size, prepare_image, read_image_as_seen
    for path in paths:
        image = read_image_as_seen(path)
        if image is None:
            report(f'warning: cannot read image {path}; skipped')
            continue
        height, width = image.shape[:2]
        new_height, new_width, capped = inference_size(height, width, short_side, max_long_side)
        if capped:
            report(f'note: {path} is {width}x{height}; the long side is capped at {max_long_side} '
                   f'(--max_long_side), network input {new_width}x{new_height}')
        yield {'image': prepare_image(image, (new_height, new_width)), 'shape': [(height, width)],
               'filename': [path], 'original': image}


def draw_detections(image: np.ndarray, boxes: Sequence[Any], scores: Sequence[float]) -> np.ndarray:
    """Polygons outlined in red, scores written small above their top-left point."""
    import cv2
    drawn = image.copy()
    thickness = max(1, round(min(image.shape[:2]) / 400))
    for box, score in zip(boxes, scores):
        points = np.asarray(box, dtype=np.int32).reshape(-1, 1, 2)
        cv2.polylines(drawn, [points], True, (0, 0, 255), thickness)
        x, y = int(points[:, 0, 0].min()), int(points[:, 0, 1].min())
        cv2.putText(drawn, f'{score:.2f}', (x, max(y - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1,
                    cv2.LINE_AA)
    return drawn


def heatmap(prob: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The probability map in JET colours, at the original size, blended half and half with the image."""
    import cv2
    height, width = image.shape[:2]
    grey = np.clip(np.round(prob * 255.0), 0, 255).astype(np.uint8)
    colours = cv2.applyColorMap(cv2.resize(grey, (width, height), interpolation=cv2.INTER_LINEAR), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 0.5, colours, 0.5, 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = demo_parser().parse_args(argv)
    if not args.onnx and not args.resume:
        print('error: a checkpoint (--resume PATH) or an exported model (--onnx PATH) is required', file=sys.stderr)
        return 2
    try:
        config = compile_experiment(args, apply_representer_flags)
        if args.print_config_only:
            print(dump_config(config), end='')
            return 0
        from experiment import Experiment
        experiment = Experiment.build(config, ('structure',))
    except (ConfigError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    if experiment.structure.representer is None:
        print(f'error: {args.exp}: structure.representer is required', file=sys.stderr)
        return 2
    if args.image_short_side % 32 or args.image_short_side < 32:
        print(f'error: --image_short_side {args.image_short_side}: expected a positive multiple of 32', file=sys.stderr)
        return 2
    images = list_images(args.image_path)
    if not images:
        print(f'error: no images found at {args.image_path!r} (extensions {", ".join(IMAGE_EXTENSIONS)})',
              file=sys.stderr)
        return 2

    import cv2
    from tqdm import tqdm
    from concern.inference import InferenceEngine, OnnxRunner, TorchRunner, load_trained_model
    from structure.measurers import result_lines
    try:
        if args.onnx:
            runner = OnnxRunner(args.onnx)
        else:
            device = select_device(args.device)
            runner = TorchRunner(load_trained_model(experiment.structure.builder, args.resume, device), device,
                                 args.precision, args.channels_last)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    engine = InferenceEngine(runner, experiment.structure.representer, is_output_polygon=args.polygon)
    os.makedirs(args.result_dir, exist_ok=True)
    problems: List[str] = []

    def report(message: str) -> None:
        problems.append(message)
        tqdm.write(message)

    written = 0
    batches = image_batches(images, args.image_short_side, args.max_long_side, report)
    with tqdm(total=len(images), desc='demo', unit='image') as progress:
        for result in engine.run(batches, pipelined=args.pipelined):
            path, image = result.batch['filename'][0], result.batch['original']
            boxes, scores = result.boxes[0], result.scores[0]
            stem = os.path.splitext(os.path.basename(path))[0]
            with open(os.path.join(args.result_dir, f'{stem}.txt'), 'w', encoding='utf-8') as stream:
                stream.write(''.join(line + '\n' for line in result_lines(boxes, scores)))
            if args.visualize:
                cv2.imwrite(os.path.join(args.result_dir, f'{stem}.jpg'), draw_detections(image, boxes, scores))
            if args.heatmap:
                cv2.imwrite(os.path.join(args.result_dir, f'{stem}_heatmap.jpg'), heatmap(result.prob[0, 0], image))
            written += 1
            progress.update(written + _skipped(problems) - progress.n)  # skipped images count as done
        progress.update(len(images) - progress.n)
    skipped = _skipped(problems)
    print(f'{written} image(s) processed, results in {os.path.abspath(args.result_dir)}'
          + (f'; {skipped} unreadable image(s) skipped' if skipped else ''))
    return 0


def _skipped(problems: Sequence[str]) -> int:
    return sum(message.startswith('warning: cannot read image') for message in problems)


if __name__ == '__main__':
    sys.exit(main())
