"""Evaluate a trained DBNet: ``python eval.py EXP.yaml --resume CKPT [flags]`` (see README).

Only the model, the post-processing and the evaluation loaders are built: no training data is needed.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

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
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    if experiment.evaluation is None:
        print(f'error: {args.exp}: the experiment has no evaluation (or validation) data loaders', file=sys.stderr)
        return 2

    from concern.inference import detections_to_lines, evaluate_loader, load_trained_model
    device = select_device(args.device)
    try:
        model = load_trained_model(experiment.structure.builder, args.resume, device)
    except (FileNotFoundError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    structure = experiment.structure
    box_thresh = structure.representer.box_thresh
    workspace = os.path.join('workspace', run_name(args))
    summary = {}
    for name, loader in experiment.evaluation.data_loaders.items():
        measures, outputs = evaluate_loader(model, loader, structure, device, args.polygon, box_thresh)
        metrics = structure.measurer.gather_measure(measures)
        summary[name] = metrics
        print(f"{name}: precision {metrics['precision']:.4f}  recall {metrics['recall']:.4f}  "
              f"fmeasure {metrics['fmeasure']:.4f}  ({len(outputs)} images, box_thresh {box_thresh})")
        if args.result_dir:
            os.makedirs(args.result_dir, exist_ok=True)
            for output in outputs:
                stem = os.path.splitext(os.path.basename(output['filename']))[0]
                with open(os.path.join(args.result_dir, f'res_{stem}.txt'), 'w') as stream:
                    keep = [i for i, s in enumerate(output['scores']) if args.polygon or s >= box_thresh]
                    lines = detections_to_lines([output['boxes'][i] for i in keep],
                                                [output['scores'][i] for i in keep])
                    stream.write(''.join(line + '\n' for line in lines))
    os.makedirs(workspace, exist_ok=True)
    with open(os.path.join(workspace, 'eval.log'), 'a') as stream:
        for name, metrics in summary.items():
            stream.write(f'{args.resume} {name} ' + ' '.join(f'{k}={v:.4f}' for k, v in metrics.items()) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
