"""Evaluate a trained DBNet: ``python eval.py EXP.yaml --resume CKPT [flags]`` (see docs/inference.md).

Only the model, the post-processing and the evaluation loaders are built: no training data is needed.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from concern.cli import apply_eval_flags, compile_experiment, eval_parser, run_name, select_device
from concern.config import ConfigError, dump_config


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = eval_parser().parse_args(argv)
    try:
        config = compile_experiment(args, apply_eval_flags)
        if args.print_config_only:
            print(dump_config(config), end='')
            return 0
        from experiment import Experiment
        experiment = Experiment.build(config, ('structure', 'evaluation'))
    except (ConfigError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    if experiment.evaluation is None:
        print(f'error: {args.exp}: the experiment has no evaluation (or validation) data loaders', file=sys.stderr)
        return 2
    structure = experiment.structure
    for part in ('representer', 'measurer'):
        if getattr(structure, part) is None:
            print(f'error: {args.exp}: structure.{part} is required for evaluation', file=sys.stderr)
            return 2

    from concern.inference import InferenceEngine, TorchRunner, load_trained_model
    device = select_device(args.device)
    try:
        model = load_trained_model(structure.builder, args.resume, device)
    except (FileNotFoundError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    runner = TorchRunner(model, device, args.precision, args.channels_last)
    representer = structure.representer
    # The evaluation settings may fix the measuring threshold and the output mode (as validation during
    # training uses them); --box_thresh and --polygon override.
    settings_thresh = getattr(experiment.evaluation, 'box_thresh', None)
    box_thresh = args.box_thresh if args.box_thresh is not None else \
        (settings_thresh if settings_thresh is not None else representer.box_thresh)
    representer.box_thresh = box_thresh
    args.polygon = bool(args.polygon or getattr(experiment.evaluation, 'is_output_polygon', False))
    args.sweep = bool(args.sweep or getattr(experiment.evaluation, 'sweep', False))
    if args.sweep:
        from structure.measurers import DEFAULT_THRESHOLDS
        # Detections down to the lowest swept threshold; the sweep and the main figure re-filter by score.
        representer.box_thresh = min(box_thresh, min(DEFAULT_THRESHOLDS))
    engine = InferenceEngine(runner, representer, is_output_polygon=args.polygon)
    workspace = os.path.join('workspace', run_name(args))
    summary: Dict[str, Dict[str, float]] = {}
    for name, loader in experiment.evaluation.data_loaders.items():
        outputs, metrics = evaluate(engine, loader, structure, args, box_thresh, workspace, name)
        summary[name] = metrics
        print(f"{name}: precision {metrics['precision']:.4f}  recall {metrics['recall']:.4f}  "
              f"fmeasure {metrics['fmeasure']:.4f}  ({len(outputs)} images, box_thresh {box_thresh})")
        if args.sweep:
            from structure.measurers import format_sweep, sweep_box_thresh
            options = getattr(structure.measurer, 'protocol_options', {'protocol': 'iou'})
            print(f'{name}: box_thresh sweep\n' + format_sweep(sweep_box_thresh(outputs, **options)))
        if args.result_dir:
            from structure.measurers import write_result_files
            kept = [{'filename': output['filename'], 'boxes': output['kept_boxes'], 'scores': output['kept_scores']}
                    for output in outputs]
            paths = write_result_files(args.result_dir, kept)
            print(f'{name}: {len(paths)} result file(s) written to {os.path.abspath(args.result_dir)}')
    os.makedirs(workspace, exist_ok=True)
    with open(os.path.join(workspace, 'eval.log'), 'a', encoding='utf-8') as stream:
        for name, metrics in summary.items():
            stream.write(f'{args.resume} {name} box_thresh={box_thresh} '
                         + ' '.join(f'{key}={value:.4f}' for key, value in metrics.items()) + '\n')
    return 0


def evaluate(engine: Any, loader: Any, structure: Any, args: Any, box_thresh: float, workspace: str,
             name: str) -> tuple:
    """One loader: (per-image outputs, {'precision', 'recall', 'fmeasure'}); --speed and --visualize here."""
    from concern.inference import StageTimer, format_speed, same_detections
    from structure.measurers import filter_by_score
    timer = StageTimer() if args.speed else None
    if args.speed and args.warmup > 0:
        first = next(iter(loader))
        for _ in range(args.warmup):
            engine.postprocess(first, engine.runner(first['image']))
    results = []
    outputs: List[Dict[str, Any]] = []
    measures: List[Any] = []
    visual_dir = os.path.join(workspace, 'visualize', name)
    for result in engine.run(loader, pipelined=args.pipelined and not args.speed, timer=timer):
        batch = result.batch
        # With --sweep the representer ran at a lower box_thresh; re-filtering by score gives exactly what it
        # returns at box_thresh (scores are computed before, and independently of, the threshold).
        kept = [filter_by_score(boxes, scores, box_thresh) for boxes, scores in zip(result.boxes, result.scores)]
        kept_boxes, kept_scores = [boxes for boxes, _ in kept], [scores for _, scores in kept]
        measures.extend(structure.measurer.validate_measure(batch, (kept_boxes, kept_scores),
                                                            is_output_polygon=args.polygon, box_thresh=box_thresh))
        for index in range(len(result.boxes)):
            outputs.append({'filename': batch['filename'][index], 'boxes': result.boxes[index],
                            'scores': result.scores[index], 'kept_boxes': kept_boxes[index],
                            'kept_scores': kept_scores[index], 'polygons': batch['polygons'][index],
                            'ignore_tags': batch['ignore_tags'][index]})
        if args.visualize:
            write_visualization(structure.visualizer, batch, (kept_boxes, kept_scores), result.prob, visual_dir)
        if args.speed:
            results.append(_detections_only(result))
    if args.speed:
        pipelined_timer = StageTimer()
        pipelined = [_detections_only(result) for result in engine.run(loader, pipelined=True, timer=pipelined_timer)]
        sizes = sorted({tuple(output_shape) for output_shape in _input_sizes(results)})
        header = {
            'speed': f'{name}, {timer.images} images, {args.warmup} warm-up iteration(s) untimed',
            'model': engine.runner.describe(),
            'input size (H x W)': ', '.join(f'{h}x{w}' for h, w in sizes[:5]) + (' ...' if len(sizes) > 5 else ''),
            'batch size': getattr(loader, 'batch_size', '?'),
            'data loader workers': getattr(loader, 'num_workers', 0),
            'pipelined detections identical to sequential': 'yes' if same_detections(results, pipelined) else 'NO',
        }
        print(format_speed(timer, pipelined_timer, header))
    return outputs, structure.measurer.gather_measure(measures)


def write_visualization(visualizer: Any, batch: Any, detections: tuple, prob: Any, directory: str) -> None:
    """Ground truth (green, don't care grey) and detections (red) on the original image."""
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
    return _Detections(result.boxes, result.scores, tuple(result.prob.shape[-2:]))


def _input_sizes(results: Sequence[_Detections]) -> List[tuple]:
    return [result.input_size for result in results]


if __name__ == '__main__':
    sys.exit(main())
