"""Train a DBNet text detector: ``python train.py EXP.yaml [flags]`` (see README)."""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from tools.cli import apply_train_flags, compile_experiment, run_name, train_parser
from concern.config import ConfigError, dump_config


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = train_parser().parse_args(argv)
    try:
        config = compile_experiment(args, apply_train_flags)
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    if args.print_config_only:
        print(dump_config(config), end='')
        return 0

    from experiment import Experiment
    from training.run_options import RunOptions
    from training.trainer import Trainer, TrainingStartError

    parts = ('structure', 'train', 'logger') + (('validation',) if args.validate else ())
    try:
        experiment = Experiment.build(config, parts)
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    name = run_name(args)
    local_rank = args.local_rank if args.local_rank is not None else int(os.environ.get('LOCAL_RANK', 0))
    options = RunOptions(name=name, workspace=os.path.join('workspace', name), device=args.device,
                         validate=args.validate, visualize=args.visualize, amp=args.amp, seed=args.seed,
                         benchmark=args.benchmark, debug=args.debug, distributed=args.distributed,
                         num_gpus=args.num_gpus, local_rank=local_rank, grad_clip=args.grad_clip,
                         sync_bn=args.sync_bn, channels_last=args.channels_last)
    try:
        Trainer(experiment, options).train()
    except TrainingStartError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
