"""Detect text in your own images: ``python demo.py EXP.yaml --resume CKPT --image_path PATH`` (see docs/inference.md).

A command line over the Python API (``inference.detector.TextDetector``): only the model and the post-processing are
built from the experiment, no data set is needed. With ``--onnx model.onnx`` the network runs in onnxruntime
instead of PyTorch, and the experiment file may be left out: the exported model carries its post-processing settings,
normalisation and input-size rule (convert_to_onnx.py); an experiment given overrides them, with one note per
differing setting. ``--json`` also writes ``<name>.json`` per image (``Detections.to_dict`` with ``"producer": "dbnet
demo"``). An existing file is replaced only when it is an earlier result of demo.py (``check_no_foreign_file_replaced``,
before any work): annotations or other files in --result_dir are never overwritten.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence

from tools.cli import apply_representer_flags, compile_experiment, demo_parser
from concern.config import ConfigError, dump_config
from data.image_io import IMAGE_EXTENSIONS


def list_images(image_path: str) -> List[str]:
    """One image, the images of a folder (sorted), or the images matching a glob (sorted)."""
    if os.path.isdir(image_path):
        return sorted(os.path.join(image_path, name) for name in os.listdir(image_path)
                      if name.lower().endswith(IMAGE_EXTENSIONS))
    if os.path.isfile(image_path):
        return [image_path]
    return sorted(path for path in glob.glob(image_path) if path.lower().endswith(IMAGE_EXTENSIONS))


def output_names(images: Sequence[str]) -> Dict[str, str]:
    """Per image the base name of its outputs (``<base>.txt``, ``<base>.json``, ``<base>.jpg``,
    ``<base>_heatmap.jpg``): the file
    stem, or ``<stem>_<extension>`` for images sharing a stem (``photo.jpg`` and ``photo.png`` give
    ``photo_jpg`` and ``photo_png``). ValueError naming both images when two still share a name (the same file
    name in two folders). Names compare case-insensitively, as on macOS and Windows file systems."""
    stems: Dict[str, List[str]] = {}
    for path in images:
        stems.setdefault(os.path.splitext(os.path.basename(path))[0].lower(), []).append(path)
    names: Dict[str, str] = {}
    taken: Dict[str, str] = {}
    for path in images:
        stem, extension = os.path.splitext(os.path.basename(path))
        name = stem if len(stems[stem.lower()]) == 1 else f'{stem}_{extension.lstrip(".")}'
        if name.lower() in taken:
            raise ValueError(f'{path} and {taken[name.lower()]} would write the same result files: run them '
                             'separately or rename one')
        taken[name.lower()] = path
        names[path] = name
    return names


def check_outputs_distinct(images: Sequence[str], names: Dict[str, str], result_dir: str, visualize: bool,
                           heatmap: bool, json_output: bool = False) -> None:
    """ValueError when two images would write one output file (``x.png`` with ``--heatmap`` and
    ``x_heatmap.png`` with ``--visualize`` both write ``x_heatmap.jpg``), compared case-insensitively."""
    written: Dict[str, str] = {}
    for path in images:
        for output in output_paths(names[path], result_dir, visualize, heatmap, json_output).values():
            key = os.path.normcase(output).lower()
            if key in written and written[key] != path:
                raise ValueError(f'{path} and {written[key]} would both write {output}: run them separately or '
                                 'rename one')
            written[key] = path


def output_paths(name: str, result_dir: str, visualize: bool, heatmap: bool,
                 json_output: bool = False) -> Dict[str, str]:
    """The files one image writes, by kind: 'txt' always, 'json' (``--json``), 'jpg' (``--visualize``),
    'heatmap' (``--heatmap``)."""
    paths = {'txt': os.path.join(result_dir, f'{name}.txt')}
    if json_output:
        paths['json'] = os.path.join(result_dir, f'{name}.json')
    if visualize:
        paths['jpg'] = os.path.join(result_dir, f'{name}.jpg')
    if heatmap:
        paths['heatmap'] = os.path.join(result_dir, f'{name}_heatmap.jpg')
    return paths


def check_no_input_overwritten(images: Sequence[str], names: Dict[str, str], result_dir: str, visualize: bool,
                               heatmap: bool, json_output: bool = False) -> None:
    """ValueError when an output file would replace one of the input images (e.g. ``--result_dir`` is the image
    folder and ``--visualize`` writes ``photo.jpg``). Paths compare case-insensitively (``IMG.JPG`` and ``IMG.jpg``
    are one file on macOS and Windows) and, for existing files, by identity (links)."""
    inputs = {os.path.realpath(path).lower(): path for path in images}
    for path in images:
        for output in output_paths(names[path], result_dir, visualize, heatmap, json_output).values():
            replaced = inputs.get(os.path.realpath(output).lower())
            if replaced is None and os.path.exists(output):
                replaced = next((image for image in images if os.path.samefile(image, output)), None)
            if replaced is not None:
                raise ValueError(f'--result_dir {result_dir}: writing {output} would overwrite the input image '
                                 f'{replaced}; choose another --result_dir')


# demo.py's JSON results carry this marker ('producer'), so that a later run knows the file as its own
DEMO_PRODUCER = 'dbnet demo'
# a line of demo.py's result files: integer coordinates (at least 3 points) and the score with 6 decimals
_RESULT_LINE = re.compile(r'-?[0-9]+(?:,-?[0-9]+){5,},[01]\.[0-9]{6}')
_MAX_RESULT_BYTES = 16 * 2 ** 20  # larger than any result file demo.py writes


def _read_small(path: str) -> Optional[bytes]:
    """The bytes of ``path``, or None when it is larger than any result file or cannot be read."""
    try:
        if os.path.getsize(path) > _MAX_RESULT_BYTES:
            return None
        with open(path, 'rb') as stream:
            return stream.read()
    except OSError:
        return None


def is_demo_text(path: str) -> bool:
    """Whether ``path`` reads as a result file demo.py writes: empty, or lines of integer coordinates (an even
    count, at least 6) and a score with 6 decimals."""
    content = _read_small(path)
    if content is None:
        return False
    try:
        lines = content.decode('utf-8').split('\n')
    except UnicodeDecodeError:
        return False
    if lines and lines[-1] == '':
        lines.pop()
    return all(_RESULT_LINE.fullmatch(line) and line.count(',') % 2 == 0 for line in lines)


def is_demo_json(path: str) -> bool:
    """Whether ``path`` is a JSON result demo.py wrote: an object whose 'producer' is ``DEMO_PRODUCER``."""
    content = _read_small(path)
    if content is None:
        return False
    try:
        data = json.loads(content.decode('utf-8'))
    except ValueError:  # not UTF-8, not JSON
        return False
    return isinstance(data, dict) and data.get('producer') == DEMO_PRODUCER


def check_no_foreign_file_replaced(images: Sequence[str], names: Dict[str, str], result_dir: str, visualize: bool,
                                   heatmap: bool, json_output: bool = False) -> None:
    """ValueError when an output would replace an existing file that is not an earlier result of demo.py (e.g.
    labelme's ``<stem>.json`` annotations beside the images, ground-truth ``.txt`` files, photos): an existing
    ``<name>.txt`` must read as demo.py's result lines (``is_demo_text``), ``<name>.json`` must carry demo.py's
    marker (``is_demo_json``), and ``<name>.jpg`` / ``<name>_heatmap.jpg`` are replaced only beside such a
    ``<name>.txt``, from the earlier run that drew them. A link or a folder in an output's place is refused."""
    for path in images:
        outputs = output_paths(names[path], result_dir, visualize, heatmap, json_output)
        for kind, output in outputs.items():
            if not os.path.lexists(output):
                continue
            if os.path.islink(output) or not os.path.isfile(output):
                why = 'a link' if os.path.islink(output) else 'not a regular file'
            elif kind == 'txt':
                why = '' if is_demo_text(output) else 'not result lines demo.py writes'
            elif kind == 'json':
                why = '' if is_demo_json(output) else f'no "producer": "{DEMO_PRODUCER}" in it'
            else:
                why = '' if is_demo_text(outputs['txt']) else f'no result {os.path.basename(outputs["txt"])} of ' \
                                                               'demo.py beside it'
            if why:
                raise ValueError(f'--result_dir {result_dir}: {output} exists and is not an earlier result of demo.py '
                                 f'({why}); it would be replaced: choose another --result_dir or move the file')


def check_flags(args: argparse.Namespace) -> None:
    """ValueError naming the flag, before any work."""
    if args.image_short_side is not None and (args.image_short_side < 32 or args.image_short_side % 32):
        raise ValueError(f'--image_short_side {args.image_short_side}: expected a positive multiple of 32')
    if args.batch_size < 1:
        raise ValueError(f'--batch_size {args.batch_size}: expected at least 1')
    if args.workers < 0:
        raise ValueError(f'--workers {args.workers}: expected 0 or more')
    if args.max_long_side < 32:
        raise ValueError(f'--max_long_side {args.max_long_side}: expected at least 32')
    if args.max_image_pixels < 0:
        raise ValueError(f'--max_image_pixels {args.max_image_pixels}: expected a positive number of pixels, or 0 '
                         'for no limit')


def size_note(result: Any, args: argparse.Namespace) -> str:
    """The one-line note for an image whose input the long-side cap shrank or that ran in tiles ('' otherwise):
    the image and input sizes, the scale, and what to change."""
    image = f'{result.source} is {result.image_size[1]}x{result.image_size[0]}'
    network = f'network input {result.input_size[1]}x{result.input_size[0]} (scale {result.scale:.2f}x)'
    if result.tiles > 1:
        limited = ', scaled down to the tiled-input pixel limit' if result.capped else ''
        return (f'note: {image}: {network} in {result.tiles} tiles of {args.tile_size} px (--tile {args.tile})'
                + limited)
    if not result.capped:
        return ''
    if args.tile == 'off':
        return (f'note: {image}: the long side is capped at {args.max_long_side} (--max_long_side): {network}; small '
                'text may be lost: --tile auto runs it at full scale in tiles')
    return (f'note: {image}: {network}, scaled down to the tiled-input pixel limit; small text may be lost: lower '
            '--image_short_side / --image_scale or cut the image')


def missing_experiment(args: argparse.Namespace) -> str:
    """Why the command line needs the experiment YAML it lacks ('' when it has one, or needs none)."""
    if args.exp is not None:
        return ''
    if not args.onnx:
        return ('a checkpoint (--resume) needs its experiment YAML (the model and the post-processing settings): '
                'python demo.py EXP.yaml --resume CKPT ...; only an exported model (--onnx) runs without one')
    needing = [flag for flag, given in (('--opt', args.opt), ('--print-config-only', args.print_config_only)) if given]
    if needing:
        return f'{", ".join(needing)}: needs the experiment YAML (demo.py EXP.yaml --onnx ...)'
    return ''


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = demo_parser().parse_args(argv)
    if not args.onnx and not args.resume:
        print('error: a checkpoint (--resume PATH) or an exported model (--onnx PATH) is required', file=sys.stderr)
        return 2
    problem = missing_experiment(args)
    if problem:
        print(f'error: {problem}', file=sys.stderr)
        return 2
    from structure.measurers.result_files import prepare_result_dir
    try:
        # without an experiment (--onnx only) the model's stored settings apply and --thresh / --box_thresh go to
        # TextDetector; with one, the flags are applied to it (compile_experiment) and it overrides the stored ones
        config = compile_experiment(args, apply_representer_flags) if args.exp is not None else None
        if config is not None and args.print_config_only:
            print(dump_config(config), end='')
            return 0
        images = list_images(args.image_path)
        if not images:
            raise ValueError(f'no images found at {args.image_path!r} (extensions {", ".join(IMAGE_EXTENSIONS)})')
        check_flags(args)
        names = output_names(images)
        result_dir = os.path.abspath(args.result_dir)
        check_outputs_distinct(images, names, result_dir, args.visualize, args.heatmap, args.json)
        check_no_input_overwritten(images, names, result_dir, args.visualize, args.heatmap, args.json)
        check_no_foreign_file_replaced(images, names, result_dir, args.visualize, args.heatmap, args.json)
        prepare_result_dir(args.result_dir, create=False)
        from inference.detector import TextDetector
        thresholds = {} if config is not None else {'thresh': args.thresh, 'box_thresh': args.box_thresh}
        detector = TextDetector(config, args.resume, onnx=args.onnx, device=args.device, precision=args.precision,
                                channels_last=args.channels_last, image_short_side=args.image_short_side,
                                max_long_side=args.max_long_side, polygon=args.polygon,
                                orientation=args.orientation, max_pixels=args.max_image_pixels or None,
                                image_scale=args.image_scale, tiling=args.tile, tile_size=args.tile_size,
                                tile_overlap=args.tile_overlap, resize_dtype=args.resize_dtype,
                                threads=args.threads, **thresholds)
        prepare_result_dir(args.result_dir)
        print(f'model: {detector.runner.describe()}; settings from {detector.settings_source}', flush=True)
    except (ConfigError, ValueError, FileNotFoundError, ImportError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2

    import cv2
    from tqdm import tqdm
    from structure.visualizers.drawing import draw_detections, heatmap
    skipped: List[str] = []

    def report(source: str, error: Exception) -> None:
        skipped.append(source)
        tqdm.write(f'warning: {error}; skipped')

    written = 0
    with tqdm(total=len(images), desc='demo', unit='image') as progress:
        for result in detector.detect_many(images, pipelined=args.pipelined, on_error=report,
                                           batch_size=args.batch_size, workers=args.workers):
            note = size_note(result, args)
            if note:
                tqdm.write(note)
            paths = output_paths(names[result.source], result_dir, args.visualize, args.heatmap, args.json)
            assert result.image is not None and result.probability is not None  # detect_many keeps both
            with open(paths['txt'], 'w', encoding='utf-8') as stream:
                stream.write(''.join(line + '\n' for line in result.lines()))
            if args.json:
                with open(paths['json'], 'w', encoding='utf-8') as stream:
                    json.dump({'producer': DEMO_PRODUCER, **result.to_dict()}, stream)
                    stream.write('\n')
            if args.visualize:
                cv2.imwrite(paths['jpg'], draw_detections(result.image, result.polygons, result.scores))
            if args.heatmap:
                cv2.imwrite(paths['heatmap'], heatmap(result.probability, result.image))
            written += 1
            progress.update(written + len(skipped) - progress.n)  # skipped images count as done
        progress.update(len(images) - progress.n)
    print(f'{written} image(s) processed, results in {result_dir}'
          + (f'; {len(skipped)} unreadable image(s) skipped' if skipped else ''))
    return 0 if written else 1  # every image unreadable: nothing was detected


if __name__ == '__main__':
    sys.exit(main())
