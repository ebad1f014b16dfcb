"""Detect text in your own images: ``python demo.py EXP.yaml --resume CKPT --image_path PATH``.

Only the model and the post-processing are built from the experiment: no data set is needed.
"""
from __future__ import annotations

import glob
import os
import sys
from typing import List, Optional, Sequence

from concern.cli import apply_representer_flags, compile_experiment, demo_parser, select_device
from concern.config import ConfigError, dump_config

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def list_images(image_path: str) -> List[str]:
    if os.path.isdir(image_path):
        return sorted(os.path.join(image_path, name) for name in os.listdir(image_path)
                      if name.lower().endswith(IMAGE_EXTENSIONS))
    if os.path.isfile(image_path):
        return [image_path]
    return sorted(path for path in glob.glob(image_path) if path.lower().endswith(IMAGE_EXTENSIONS))


def read_image_as_seen(path: str):
    """BGR uint8 with the EXIF orientation applied (what a person sees), or None if unreadable."""
    import cv2
    import numpy as np
    from PIL import Image, ImageOps
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert('RGB')
            return cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    except (OSError, ValueError):
        return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = demo_parser().parse_args(argv)
    try:
        config = compile_experiment(args, apply_representer_flags)
        if args.print_config_only:
            print(dump_config(config), end='')
            return 0
        from experiment import Experiment
        experiment = Experiment.build(config, ('structure',))
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    images = list_images(args.image_path)
    if not images:
        print(f'error: no images found at {args.image_path!r}', file=sys.stderr)
        return 2

    import cv2
    from tqdm import tqdm
    from concern.inference import (detections_to_lines, image_to_tensor, inference_size, load_trained_model,
                                   probability_map)
    device = select_device(args.device)
    try:
        model = load_trained_model(experiment.structure.builder, args.resume, device)
    except (FileNotFoundError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    representer = experiment.structure.representer
    os.makedirs(args.result_dir, exist_ok=True)
    skipped = 0
    for path in tqdm(images, desc='demo', unit='image'):
        image = read_image_as_seen(path)
        if image is None:
            tqdm.write(f'warning: cannot read image {path}; skipped')
            skipped += 1
            continue
        height, width = image.shape[:2]
        new_height, new_width, capped = inference_size(height, width, args.image_short_side)
        if capped:
            tqdm.write(f'note: {path} is {width}x{height}; its long side was capped, input {new_width}x{new_height}')
        pred = probability_map(model, image_to_tensor(image, (new_height, new_width)).to(device))
        boxes_batch, scores_batch = representer.represent({'shape': [(height, width)]}, pred,
                                                          is_output_polygon=args.polygon)
        boxes, scores = boxes_batch[0], scores_batch[0]
        stem = os.path.splitext(os.path.basename(path))[0]
        with open(os.path.join(args.result_dir, f'{stem}.txt'), 'w') as stream:
            stream.write(''.join(line + '\n' for line in detections_to_lines(boxes, scores)))
        if args.visualize:
            drawn = image.copy()
            for box, score in zip(boxes, scores):
                points = box.reshape(-1, 1, 2).astype('int32')
                cv2.polylines(drawn, [points], True, (0, 0, 255), 2)
                x, y = points[:, 0, 0].min(), points[:, 0, 1].min()
                cv2.putText(drawn, f'{score:.2f}', (int(x), max(int(y) - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                            0.4, (0, 255, 255), 1, cv2.LINE_AA)
            cv2.imwrite(os.path.join(args.result_dir, f'{stem}.jpg'), drawn)
        if args.heatmap:
            prob = pred[0, 0].float().cpu().numpy()
            heat = cv2.applyColorMap((prob * 255).clip(0, 255).astype('uint8'), cv2.COLORMAP_JET)
            cv2.imwrite(os.path.join(args.result_dir, f'{stem}_heatmap.jpg'), cv2.resize(heat, (width, height)))
    print(f'{len(images) - skipped} image(s) written to {os.path.abspath(args.result_dir)}'
          + (f'; {skipped} unreadable image(s) skipped' if skipped else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
