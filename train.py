"""Train a DBNet text detector: ``python train.py EXP.yaml [flags]`` (see README).

Exit status: 0 done (or stopped by a signal, with a checkpoint), 2 the experiment or the start was refused before
anything was written, 1 the run failed. An expected failure (disk full, permission, non-finite stop, a log or
TensorBoard write) is one line in the run's log and on the console, without a traceback; a bug keeps its traceback,
which goes to the run's log as well.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional, Sequence

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
        print_model_size(config)
        return 0

    from experiment import Experiment
    from training.run_options import RunOptions
    from training.trainer import Trainer

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
                         sync_bn=args.sync_bn, channels_last=args.channels_last,
                         threads=args.threads)
    return run_training(lambda: Trainer(experiment, options))


def print_model_size(config: Any) -> None:
    """The model's parameters and forward FLOPs at the training input size (tools/flops.py), as YAML comments after
    the printed experiment (which stays valid YAML); a model that cannot be built is one comment saying why."""
    from tools.flops import describe_experiment
    try:
        lines = describe_experiment(config)
    except (ConfigError, ValueError, RuntimeError, OSError) as error:
        lines = ['model not built: ' + ' '.join(str(error).split())]
    print('\n'.join('# ' + line for line in lines))


def run_training(make_trainer: Callable[[], Any]) -> int:
    """Build the trainer and train; the exit status. An expected failure (``training.trainer.EXPECTED_FAILURES``)
    ends with its one line (printed here only when the run's logger has not written it already) and status 1 (2
    for a refused start); any other exception propagates with its traceback unless the run's log and console have
    it already (then status 1)."""
    from concern.log import was_reported
    from training.trainer import EXPECTED_FAILURES, TrainingStartError
    try:
        make_trainer().train()
    except EXPECTED_FAILURES as error:
        if not was_reported(error):
            print(f'error: {error}', file=sys.stderr)
        return 2 if isinstance(error, TrainingStartError) else 1
    except Exception as error:
        if was_reported(error):
            return 1
        raise
    return 0


if __name__ == '__main__':
    sys.exit(main())
