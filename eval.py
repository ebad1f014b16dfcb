"""Evaluate a trained DBNet: ``python eval.py EXP.yaml --resume CKPT [flags]`` (see docs/evaluation.md).

Only the model, the post-processing and the evaluation loaders are built: no training data is needed. The
measuring is the one evaluation loop (``inference.evaluation.evaluate_on_dataset`` feeding a
``structure.measurers.DetectionEvaluator``), as in validation during training and ``make demo``; box_thresh is
the representer's (``--box_thresh`` > ``--opt`` > the experiment file: ``concern.config.set_representer_thresholds``).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from concern.config import ConfigError, dump_config
from concern.device import select_device
from tools.cli import apply_eval_flags, compile_experiment, eval_parser, run_name


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = eval_parser().parse_args(argv)
    grid_requested = args.sweep_thresh is not None or args.sweep_unclip is not None
    if args.speed and grid_requested:
        print('error: --speed times the experiment\'s post-processing alone: run the grid (--sweep_thresh / '
              '--sweep_unclip) without it', file=sys.stderr)
        return 2
    from data.image_io import DataError
    from structure.measurers.result_files import prepare_result_dir
    try:
        config = compile_experiment(args, apply_eval_flags)
        if args.print_config_only:
            print(dump_config(config), end='')
            return 0
        result_dir = prepare_result_dir(args.result_dir) if args.result_dir else None
        check_metrics_path(args, config)
        from experiment import Experiment
        experiment = Experiment.build(config, ('structure', 'evaluation'))
        if experiment.evaluation is not None:
            check_metrics_path(args, config, experiment.evaluation.data_loaders)
    except (ConfigError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    if experiment.evaluation is None:
        print(f'error: {args.exp}: the experiment has no evaluation (or validation) data loaders', file=sys.stderr)
        return 2
    structure = experiment.structure
    assert structure is not None  # built: 'structure' is among the parts
    for part in ('representer', 'measurer'):
        if getattr(structure, part) is None:
            print(f'error: {args.exp}: structure.{part} is required for evaluation', file=sys.stderr)
            return 2

    from inference.runners import TorchRunner
    from structure.weights import load_trained_model
    from structure.measurers import DetectionEvaluator
    from structure.measurers.result_files import check_unique_result_names
    loaders = experiment.evaluation.data_loaders
    try:
        if result_dir:  # two images (of any loaders) writing one result file: refused before any work
            check_unique_result_names([entry[0] for loader in loaders.values()
                                       for entry in getattr(loader.dataset, 'entries', None) or []])
        device = select_device(args.device)
        model = load_trained_model(structure.builder, args.resume, device)
    except (FileNotFoundError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    # --speed times a fixed count: 'auto' then leaves torch's count as it is (a number is still honoured)
    threads = None if args.speed and args.threads == 'auto' else args.threads
    runner: Any = TorchRunner(model, device, args.precision, args.channels_last, threads=threads)
    if args.tile != 'off':
        from inference.tiling import TiledRunner
        try:
            runner = TiledRunner(runner, args.tile_size, args.tile_overlap,
                                 whole_up_to=None if args.tile == 'on' else args.max_long_side)
        except ValueError as error:
            print(f'error: --tile_size / --tile_overlap: {error}', file=sys.stderr)
            return 2
    workspace = os.path.join('workspace', run_name(args))
    summary: Dict[str, Dict[str, float]] = {}
    thresholds: Dict[str, float] = {}
    records: List[Dict[str, Any]] = []
    started = round(time.time(), 3)
    for name, loader in loaders.items():
        evaluator = DetectionEvaluator.from_settings(structure, experiment.evaluation, keep_outputs=bool(result_dir))
        cells: List[Any] = []
        try:
            if grid_requested:
                from structure.measurers import grid_cells
                cells = grid_cells(structure.representer, structure.measurer, evaluator.is_output_polygon,
                                   args.sweep_thresh, args.sweep_unclip,
                                   getattr(experiment.evaluation, 'sweep_thresholds', None))
            metrics = evaluate(runner, evaluator, loader, structure, args, workspace, name,
                               [cell.evaluator for cell in cells])
        except DataError as error:
            print(f'error: {name}: {_first_line(error)}\n(the evaluation stops at a bad sample rather than measure '
                  'another set; --skip_bad_samples leaves such samples out and names them)', file=sys.stderr)
            return 2
        except ValueError as error:
            print(f'error: {name}: {error}', file=sys.stderr)
            return 2
        summary[name] = {key: metrics[key] for key in ('precision', 'recall', 'fmeasure')}
        thresholds[name] = evaluator.box_thresh  # the mode's (polygon_box_thresh with --polygon where set)
        print(f"{name}: precision {metrics['precision']:.4f}  recall {metrics['recall']:.4f}  "
              f"fmeasure {metrics['fmeasure']:.4f}  ({metrics['images']} images, box_thresh {evaluator.box_thresh})")
        for message in metrics['skipped']:
            print(f'{name}: left out (--skip_bad_samples): {message}')
        if metrics.get('sweep') is not None:
            from structure.measurers import format_sweep
            print(f'{name}: box_thresh sweep\n' + format_sweep(metrics['sweep']))
        grid = None
        if cells:
            from structure.measurers import format_grid, grid_results
            grid = grid_results(cells)
            print(f'{name}: post-processing grid (each setting at its best box_thresh)\n'
                  + format_grid(grid, evaluator.is_output_polygon))
        records += metrics_records(args, name, evaluator.box_thresh, metrics, started, grid,
                                   evaluator.is_output_polygon)
        if result_dir:
            from structure.measurers import write_result_files
            paths = write_result_files(result_dir, evaluator.outputs, with_score=not args.no_score)
            print(f'{name}: {len(paths)} result file(s) written to {result_dir}')
    if args.metrics:
        from training.metrics_file import append_metrics
        append_metrics(args.metrics, records)
        print(f'{len(records)} line(s) appended to {args.metrics}')
    os.makedirs(workspace, exist_ok=True)
    with open(os.path.join(workspace, 'eval.log'), 'a', encoding='utf-8') as stream:
        for name, metrics in summary.items():
            stream.write(f'{args.resume} {name} box_thresh={thresholds[name]} '
                         + ' '.join(f'{key}={value:.4f}' for key, value in metrics.items()) + '\n')
    return 0


def check_metrics_path(args: Any, config: Any = None, loaders: Optional[Mapping[str, Any]] = None) -> None:
    """``--metrics PATH`` is appended to, never truncated, and never one of this command's inputs nor a folder:
    ValueError naming it, before any work. The inputs, compared by real path (and as the same file, a hard link):
    the experiment file and every YAML file it imports (``config.files``), the checkpoint (``--resume``), and each
    evaluation loader's ``data_list`` files and ``data_dir`` folders (``loaders``; any path inside such a folder)."""
    path = args.metrics
    if not path:
        return
    if os.path.isdir(path):
        raise ValueError(f'--metrics {path}: is a folder; give a file (e.g. workspace/<name>/metrics.jsonl)')
    real = os.path.realpath(path)
    files = [('the experiment file', args.exp), ('--resume', args.resume)]
    files += [(f'{source}, a file of the experiment (import:)', source)
              for source in getattr(config, 'files', None) or []]
    folders: List[Any] = []
    for name, loader in (loaders or {}).items():
        for dataset in _datasets(getattr(loader, 'dataset', None)):
            files += [(f'a data_list of evaluation loader {name!r}', item)
                      for item in _as_paths(getattr(dataset, 'data_list', None))]
            folders += [(f'inside {item}, a data_dir of evaluation loader {name!r}', item)
                        for item in _as_paths(getattr(dataset, 'data_dir', None))]
    for what, source in files:
        if source and (os.path.realpath(source) == real
                       or os.path.exists(source) and os.path.exists(path) and os.path.samefile(source, path)):
            raise ValueError(f'--metrics {path}: is {what}, an input of this evaluation; give another file')
    for what, folder in folders:
        if folder and (real + os.sep).startswith(os.path.realpath(folder).rstrip(os.sep) + os.sep):
            raise ValueError(f'--metrics {path}: is {what}, an input of this evaluation; give a file outside it')
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f'--metrics {path}: the folder {parent} does not exist')


def _datasets(dataset: Any) -> List[Any]:
    """``dataset`` and the data sets it is made of (``datasets``: a concatenation), depth first."""
    if dataset is None:
        return []
    found = [dataset]
    for part in getattr(dataset, 'datasets', None) or []:
        found += _datasets(part)
    return found


def _as_paths(value: Any) -> List[str]:
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    return [os.fspath(item) for item in value or [] if isinstance(item, (str, os.PathLike))]


def metrics_records(args: Any, loader: str, box_thresh: float, metrics: Dict[str, Any], now: float,
                    grid: Optional[Mapping[str, Any]] = None, polygon: Optional[bool] = None) -> List[Dict[str, Any]]:
    """The JSON lines of one loader's result (``--metrics``): an ``evaluation`` line, with ``--sweep`` a
    ``sweep`` line per box_thresh (``best`` true on the row of the highest fmeasure), and with a post-processing
    ``grid`` (``structure.measurers.grid_results``) a ``grid`` line per setting (thresh, the mode's unclip ratio
    under its own name, ``unclip_ratio`` or ``polygon_unclip_ratio``, its best box_thresh and P/R/F; ``best`` as for
    the sweep); every line of one eval.py call carries the same ``time`` (``now``, its start in Unix seconds), which
    tells the calls apart. ``polygon``: the evaluation's mode (None: ``args.polygon``; the experiment's
    ``is_output_polygon`` can set it too)."""
    polygon = bool(args.polygon) if polygon is None else bool(polygon)
    common = {'checkpoint': args.resume, 'loader': loader, 'polygon': polygon, 'time': now}
    records: List[Dict[str, Any]] = [{'type': 'evaluation', **common, 'box_thresh': box_thresh,
                                      'images': metrics.get('images'),
                                      **{key: metrics[key] for key in ('precision', 'recall', 'fmeasure')}}]
    sweep = metrics.get('sweep')
    if sweep is not None:
        for row in sweep['rows']:
            records.append({'type': 'sweep', **common, 'box_thresh': row['box_thresh'],
                            'precision': row['precision'], 'recall': row['recall'], 'fmeasure': row['fmeasure'],
                            'best': row is sweep['best']})
    if grid is not None:
        from structure.measurers.grid import unclip_setting
        for row in grid['rows']:
            records.append({'type': 'grid', **common, 'thresh': row['thresh'],
                            unclip_setting(polygon): row['unclip_ratio'],
                            **{key: row[key] for key in ('box_thresh', 'precision', 'recall', 'fmeasure')},
                            'best': row is grid['best']})
    return records


def _first_line(error: Exception) -> str:
    """A DataError raised in a DataLoader worker arrives with the worker's traceback in its message: keep the
    error's own message (its last line)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and 'Traceback' in str(error):
        last = lines[-1]
        from concern.config import project_module
        qualified = project_module('data.image_io') + '.DataError'  # dbnet.data.image_io... when installed
        return last.split(': ', 1)[1] if last.startswith(('DataError', qualified)) else last
    return str(error)


def evaluate(runner: Any, evaluator: Any, loader: Any, structure: Any, args: Any, workspace: str,
             name: str, also: Sequence[Any] = ()) -> Dict[str, Any]:
    """One loader through the evaluation loop into the evaluator: its ``evaluate()``; --speed and --visualize
    here. ``also``: more evaluators fed from the same network pass (the post-processing grid's), left for the
    caller to read."""
    from inference.engine import StageTimer
    from inference.evaluation import evaluate_on_dataset, usable_batches
    from inference.report import format_speed, same_detections
    from structure.measurers import DetectionEvaluator
    timer = StageTimer() if args.speed else None
    if args.speed and args.warmup > 0:
        first = next(usable_batches(loader, evaluator), None)
        if first is None:
            raise ValueError('no images to time (--speed): the evaluation list is empty or every sample was '
                             'left out')
        for _ in range(args.warmup):
            evaluator.detect(first, runner(first['image']))
    results: List[_Detections] = []
    visual_dir = os.path.join(workspace, 'visualize', name)

    def on_result(result: Any, measured: List[Any]) -> None:
        if args.visualize:
            write_visualization(structure.visualizer, result.batch, measured[0], result.prob, visual_dir)
        if args.speed:
            results.append(_detections_only(result))

    evaluate_on_dataset(runner, loader, [evaluator, *also], pipelined=args.pipelined and not args.speed,
                        timer=timer, on_result=on_result)
    if args.speed:
        assert timer is not None  # made for args.speed
        if not results:
            raise ValueError('no images to time (--speed): the evaluation list is empty or every sample was '
                             'left out')
        pipelined_timer = StageTimer()
        pipelined: List[_Detections] = []
        # a second pass, pipelined, into a scratch evaluator: its detections must be those of the first
        scratch = DetectionEvaluator(evaluator.representer, evaluator.measurer, evaluator.is_output_polygon,
                                     evaluator.sweep_thresholds)
        evaluate_on_dataset(runner, loader, [scratch], pipelined=True, timer=pipelined_timer,
                            on_result=lambda result, measured: pipelined.append(_detections_only(result)))
        sizes = sorted({result.input_size for result in results})
        header = {
            'speed': f'{name}, {timer.images} images, {args.warmup} warm-up iteration(s) untimed',
            'model': runner.describe(),
            'input size (H x W)': ', '.join(f'{h}x{w}' for h, w in sizes[:5]) + (' ...' if len(sizes) > 5 else ''),
            'batch size': getattr(loader, 'batch_size', '?'),
            'data loader workers': getattr(loader, 'num_workers', 0),
            'pipelined detections identical to sequential': 'yes' if same_detections(results, pipelined) else 'NO',
        }
        print(format_speed(timer, pipelined_timer, header))
    return evaluator.evaluate()


def write_visualization(visualizer: Any, batch: Any, detections: tuple, prob: Any, directory: str) -> None:
    """Ground truth (green, don't care grey) and detections (red) on the image as evaluated (stored pixels)."""
    import cv2
    if visualizer is None:
        from structure.visualizers import SegDetectorVisualizer
        visualizer = SegDetectorVisualizer()
    os.makedirs(directory, exist_ok=True)
    images = visualizer.visualize(batch, detections, prob)
    for key, image in images.items():
        if key.endswith('_output'):
            cv2.imwrite(os.path.join(directory, f'{key[:-len("_output")]}.jpg'), image)


class _Detections:
    __slots__ = ('boxes', 'scores', 'input_size')

    def __init__(self, boxes, scores, input_size):
        self.boxes, self.scores, self.input_size = boxes, scores, input_size


def _detections_only(result: Any) -> _Detections:
    """The first evaluator's detections of an evaluation-loop result, and the network input size."""
    boxes, scores = result.output[0]
    return _Detections(boxes, scores, tuple(result.prob.shape[-2:]))


if __name__ == '__main__':
    sys.exit(main())
