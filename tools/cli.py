"""Command-line flags of train.py, eval.py, demo.py and convert_to_onnx.py (the entry floor; the Python API never
imports this module), and how each one changes the compiled experiment.

Every flag acts on the compiled configuration tree before anything is built, so what a flag sets is
exactly what the built objects hold, is printed by ``--print-config-only`` and is saved with the run.
"""
from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any, Callable, List

if TYPE_CHECKING:
    pass

from concern.config import (CompiledConfig, ConfigError, ensure_component, accepts_argument, add_override_argument,
                            apply_overrides,
                            get_path, has_path, load_config, require_key, set_if_accepted, set_representer_thresholds)
from data.input_size import DEFAULT_MAX_TILED_PIXELS
from data.normalization import RESIZE_DTYPES
from inference.tiling import DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE, TILE_MODES


def _common_arguments(parser: argparse.ArgumentParser, exp_help: str = 'experiment YAML file',
                      exp_optional: bool = False) -> None:
    if exp_optional:
        parser.add_argument('exp', type=str, nargs='?', default=None, help=exp_help)
    else:
        parser.add_argument('exp', type=str, help=exp_help)
    parser.add_argument('--name', type=str, default=None,
                        help='run name; outputs go to workspace/<name>/ (default: the experiment file stem)')
    parser.add_argument('--device', type=str, default=None,
                        help="'cpu', 'cuda' or 'cuda:N' (default: cuda when available, else cpu)")
    parser.add_argument('--thresh', type=float, default=None,
                        help='binarization threshold of the probability map (representer thresh)')
    parser.add_argument('--box_thresh', type=float, default=None,
                        help='minimum mean probability of a kept detection (representer box_thresh)')
    parser.add_argument('--verbose', action='store_true', help='verbose logging')
    parser.add_argument('--print-config-only', dest='print_config_only', action='store_true',
                        help='print the compiled experiment and exit')
    parser.add_argument('--threads', type=str, default='auto', metavar='auto|N',
                        help='CPU threads of torch: auto (default) measures step times and drops to fewer threads '
                             'while another process holds a core (concern/threads.py); N: fixed, never changed')
    add_override_argument(parser)


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Train a DBNet text detector.')
    _common_arguments(parser)
    parser.add_argument('--batch_size', type=int, default=None, help='global training batch size')
    parser.add_argument('--num_workers', type=int, default=None, help='data loading workers per loader')
    parser.add_argument('--resume', type=str, default=None, metavar='PATH|auto',
                        help='full checkpoint of this project to continue from (a plain state dict, e.g. the '
                             "original's released models, is fine-tuned from instead, and the log says so); auto: "
                             "this run's newest checkpoint, workspace/<name>/model/latest, or a fresh start when "
                             'there is none (the log says which)')
    parser.add_argument('--weights', type=str, default=None,
                        help='fine-tune from the weights of this file (a full checkpoint or a state dict): no '
                             'optimizer state or counters are restored; every tensor must fit unless '
                             '--weights_non_strict')
    parser.add_argument('--weights_non_strict', action='store_true',
                        help='with --weights: load only the tensors whose names and shapes fit (fine-tuning another '
                             'head, e.g. DBNet++ from a DBNet checkpoint); the others keep their initialisation and '
                             "the load report in the run's log names them")
    parser.add_argument('--accept_skipped_samples', action='store_true',
                        help='with --resume: continue even where the new --batch_size or world size would leave '
                             'samples of the interrupted epoch untrained (refused by default, naming them)')
    parser.add_argument('--epochs', type=int, default=None,
                        help='training length and decay schedule length (a per-iteration schedule with '
                             'iterations: null follows the run by itself)')
    parser.add_argument('--start_epoch', type=int, default=None)
    parser.add_argument('--start_iter', type=int, default=None)
    parser.add_argument('--lr', type=float, default=None, help='base learning rate (optimizer and schedule)')
    parser.add_argument('--validate', action='store_true', help='validate during training')
    parser.add_argument('--visualize', action='store_true', help='write validation visualizations')
    parser.add_argument('--sweep', action='store_true',
                        help='with --validate: also report P/R/F over box_thresh 0.3..0.9 at each validation')
    parser.add_argument('--debug', action='store_true', help='anomaly detection and extra checks')
    parser.add_argument('--benchmark', action='store_true', help='set torch.backends.cudnn.benchmark')
    parser.add_argument('-d', '--distributed', action='store_true', help='DistributedDataParallel (torchrun)')
    parser.add_argument('--local_rank', '--local-rank', dest='local_rank', type=int, default=None,
                        help='set by the launcher; torchrun sets LOCAL_RANK instead')
    parser.add_argument('-g', '--num_gpus', type=int, default=1, help='DataParallel over N GPUs in one process')
    parser.add_argument('--seed', type=int, default=None, help='seed Python, NumPy, torch and loader workers')
    parser.add_argument('--amp', nargs='?', const='auto', default=None, choices=('auto', 'bf16', 'fp16'),
                        help='automatic mixed precision: bf16 where the device supports it, else fp16 with a gradient '
                             'scaler (auto, the value of a bare --amp); or bf16 / fp16 explicitly')
    parser.add_argument('--sync_bn', action='store_true', help='SyncBatchNorm under --distributed')
    parser.add_argument('--channels_last', action='store_true',
                        help='channels-last (NHWC) memory format for the model and images (faster on CPUs)')
    parser.add_argument('--grad_clip', type=float, default=None, help='clip the gradient norm to this value')
    return parser


def _inference_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--precision', choices=('fp32', 'fp16', 'bf16', 'auto'), default='fp32',
                        help='inference precision (default fp32); auto: bf16 on a CPU that runs it natively, else '
                             'fp32; fp16 on CUDA')
    parser.add_argument('--channels_last', action='store_true', help='channels-last (NHWC) memory format')
    parser.add_argument('--pipelined', action='store_true',
                        help='overlap data preparation, model and post-processing in three threads')
    parser.add_argument('--warmup', type=int, default=3, help='untimed warm-up iterations before --speed timing')
    parser.add_argument('--resize_dtype', choices=RESIZE_DTYPES, default='float32',
                        help="float32 (default): the original's preprocessing, the image converted to float32 and "
                             'then resized, so that released checkpoints give its detections; uint8: the 8-bit image '
                             'resized (faster on large photos, inputs up to 0.8/255 away: other detections)')
    parser.add_argument('--tile_size', type=int, default=DEFAULT_TILE_SIZE,
                        help='with --tile: side of a tile in px of the network input (multiple of 32)')
    parser.add_argument('--tile_overlap', type=int, default=DEFAULT_TILE_OVERLAP,
                        help='with --tile: px shared by neighbouring tiles (multiple of 32, at most half a tile)')


def eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Evaluate a DBNet text detector on the evaluation loaders.')
    _common_arguments(parser)
    parser.add_argument('--resume', type=str, required=True, help='checkpoint to evaluate')
    parser.add_argument('--polygon', action='store_true', help='output polygons instead of boxes')
    parser.add_argument('--result_dir', type=str, default=None,
                        help='write res_<image>.txt files here (ICDAR submission format)')
    parser.add_argument('--no_score', action='store_true',
                        help='result files without the score column (8 integers a line: RRC submissions)')
    parser.add_argument('--visualize', action='store_true', help='write images with ground truth and detections')
    parser.add_argument('--speed', action='store_true', help='time data, model and post-processing separately')
    parser.add_argument('--sweep', action='store_true', help='report P/R/F over box_thresh 0.3..0.9')
    parser.add_argument('--sweep_thresh', type=float, nargs='+', default=None, metavar='T',
                        help='also report the post-processing grid over these binarisation thresholds (thresh) '
                             'from the same network pass, each with its own box_thresh sweep (with --sweep_unclip: '
                             'every pair; alone: at the experiment\'s unclip ratio)')
    parser.add_argument('--sweep_unclip', type=float, nargs='+', default=None, metavar='R',
                        help="the grid's unclip ratios (box mode: unclip_ratio; with --polygon: polygon_unclip_ratio); "
                             "alone: at the experiment's thresh")
    parser.add_argument('--metrics', type=str, default=None, metavar='PATH',
                        help='append the results as JSON lines to PATH (never truncated; e.g. the run\'s '
                             'workspace/<name>/metrics.jsonl, for python -m tools.plot): one "evaluation" line per '
                             'loader, with --sweep one "sweep" line per box_thresh, with --sweep_thresh / '
                             '--sweep_unclip one "grid" line per setting')
    parser.add_argument('--skip_bad_samples', action='store_true',
                        help='leave out (and name) unreadable images / malformed ground truth instead of stopping; '
                             'P/R/F are then over the readable samples only')
    parser.add_argument('--batch_size', type=int, default=None, help='evaluation batch size')
    parser.add_argument('--num_workers', type=int, default=None, help='data loading workers')
    parser.add_argument('--image_short_side', type=int, default=None,
                        help="input size by demo.py's rule instead of the experiment's: the short side at this value "
                             '(multiple of 32), the long side following the aspect ratio up to --max_long_side')
    parser.add_argument('--max_long_side', type=int, default=2560,
                        help='with --image_short_side: cap on the long side of the network input')
    parser.add_argument('--tile', choices=TILE_MODES, default='off',
                        help="off (default): the experiment's input sizes, long side capped; auto: inputs the cap "
                             'would shrink run uncapped in overlapping tiles; on: every input uncapped, in tiles '
                             'when larger than --tile_size (see docs/inference.md)')
    _inference_arguments(parser)
    return parser


def demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Detect text in your own images.')
    _common_arguments(parser, exp_optional=True,
                      exp_help='experiment YAML file; optional with --onnx (the exported model carries its settings; '
                               'a YAML given overrides them)')
    parser.add_argument('--resume', type=str, default=None, help='checkpoint to run (or give --onnx)')
    parser.add_argument('--onnx', type=str, default=None,
                        help='run this exported model with onnxruntime instead of PyTorch (no --resume needed)')
    parser.add_argument('--image_path', type=str, required=True, help='an image, a folder or a glob')
    parser.add_argument('--result_dir', type=str, default='demo_results/', help='where results are written')
    parser.add_argument('--image_short_side', type=int, default=None,
                        help='short side of the network input (multiple of 32); the long side follows the aspect '
                             'ratio, rounded up to a multiple of 32 (default: the one stored in the --onnx model, '
                             'else 736)')
    parser.add_argument('--polygon', action='store_true', help='output polygons instead of boxes')
    parser.add_argument('--json', action='store_true',
                        help='also write <image>.json beside <image>.txt: sizes, scale, tiles and per detection its '
                             'points and score (Detections.to_dict)')
    parser.add_argument('--batch_size', type=int, default=1,
                        help='consecutive images of the same input size go through the network together, up to this '
                             'many (the batch-1 detections up to the backend\'s rounding: docs/inference.md)')
    parser.add_argument('--workers', type=int, default=0,
                        help='threads that read and resize images ahead of the network and post-process a batch '
                             '(default 0: the calling thread)')
    parser.add_argument('--visualize', action='store_true', help='write <image>.jpg with the detections drawn')
    parser.add_argument('--heatmap', action='store_true', help='also write the probability map as a heat map')
    parser.add_argument('--max_long_side', type=int, default=2560,
                        help='cap on the long side of the network input (memory bound for huge photos); with --tile '
                             'auto an image the cap would shrink runs at its uncapped size in tiles instead')
    parser.add_argument('--image_scale', type=float, default=None,
                        help='network input = the image times this factor (1: its own pixels, for scanned pages and '
                             'screenshots whose text the short-side rule would shrink) instead of --image_short_side')
    parser.add_argument('--tile', choices=TILE_MODES, default='auto',
                        help='auto (default): an image the --max_long_side cap would shrink runs at its uncapped size '
                             'in overlapping tiles; on: every image uncapped, tiled when larger than --tile_size; '
                             "off: the cap applies (the original's behaviour)")
    parser.add_argument('--orientation', choices=('displayed', 'stored'), default='displayed',
                        help="EXIF orientation: 'displayed' applies it (the photo as a viewer shows it), 'stored' "
                             'uses the pixels as stored (as eval.py does: ground truth is annotated on them)')
    parser.add_argument('--max_image_pixels', type=int, default=178956970,
                        help='refuse (and skip) images with more pixels than this (decompression bombs); 0: no limit')
    _inference_arguments(parser)
    return parser


# ----------------------------------------------------------------------------------------------
# Flag -> config


# Components the trainer builds with their defaults when an experiment leaves them out; a flag that sets
# one of their arguments adds them to the compiled experiment first, so that the flag still acts.
DEFAULT_COMPONENTS = {
    'train.checkpoint': 'Checkpoint',
    'train.scheduler': 'OptimizerScheduler',
    'train.model_saver': 'ModelSaver',
    'logger': 'Logger',
}


def _set_if_present(config: CompiledConfig, dotted: str, value: Any) -> bool:
    """``set_if_accepted`` with the trainer's default components (``DEFAULT_COMPONENTS``)."""
    return set_if_accepted(config, dotted, value, DEFAULT_COMPONENTS)


def _loader_paths(config: CompiledConfig, section: str) -> List[str]:
    loaders = get_path(config, f'{section}.data_loaders') if has_path(config, f'{section}.data_loaders') else {}
    return [f'{section}.data_loaders.{name}' for name in (loaders or {})]


def _walk_class_dicts(node: Any, visit: Callable[[dict], None]) -> None:
    if isinstance(node, dict):
        if 'class' in node:
            visit(node)
        for value in node.values():
            _walk_class_dicts(value, visit)
    elif isinstance(node, list):
        for value in node:
            _walk_class_dicts(value, visit)


def _set_schedule_argument(config: CompiledConfig, key: str, value: Any) -> int:
    """Set ``key`` on every learning-rate object of the schedule that takes it (wrapped ones included)."""
    if not has_path(config, 'train.scheduler.learning_rate'):
        return 0
    changed = []

    def visit(node: dict) -> None:
        if key in node or accepts_argument(node, key, config.packages, f'train.scheduler.learning_rate: {key}'):
            node[key] = value
            changed.append(node)

    _walk_class_dicts(get_path(config, 'train.scheduler.learning_rate'), visit)
    return len(changed)


def apply_representer_flags(config: CompiledConfig, args: argparse.Namespace) -> None:
    """--thresh / --box_thresh (``concern.config.set_representer_thresholds``: their owner and precedence)."""
    set_representer_thresholds(config, getattr(args, 'thresh', None), getattr(args, 'box_thresh', None))


def apply_train_flags(config: CompiledConfig, args: argparse.Namespace) -> None:
    apply_representer_flags(config, args)
    if args.batch_size is not None:
        require_key(_set_if_present(config, 'train.data_loader.batch_size', args.batch_size),
                 '--batch_size', 'train.data_loader.batch_size', config)
    if args.num_workers is not None:
        for path in ['train.data_loader'] + _loader_paths(config, 'validation') + _loader_paths(config, 'evaluation'):
            _set_if_present(config, f'{path}.num_workers', args.num_workers)
    if args.resume is not None and args.weights is not None and args.resume != 'auto':
        raise ConfigError(f'--resume {args.resume} and --weights {args.weights}: --resume continues a run from a full '
                          'checkpoint, --weights starts a new run (epoch 0, fresh optimizer) from the weights of a '
                          'file: give one (or --resume auto --weights FILE: this run\'s newest checkpoint where it '
                          'has one, else the weights)')
    for flag in ('resume', 'weights', 'start_epoch', 'start_iter'):
        value = getattr(args, flag)
        if value is not None:
            require_key(_set_if_present(config, f'train.checkpoint.{flag}', value),
                     f'--{flag}', f'train.checkpoint.{flag}', config)
    if args.weights_non_strict:
        require_key(_set_if_present(config, 'train.checkpoint.weights_strict', False), '--weights_non_strict',
                    'train.checkpoint.weights_strict', config)
    if args.accept_skipped_samples:
        require_key(_set_if_present(config, 'train.checkpoint.accept_skipped_samples', True),
                    '--accept_skipped_samples', 'train.checkpoint.accept_skipped_samples', config)
    if args.epochs is not None:
        require_key(_set_if_present(config, 'train.epochs', args.epochs), '--epochs', 'train.epochs', config)
        _set_schedule_argument(config, 'epochs', args.epochs)
    if args.lr is not None:
        if ensure_component(config, 'train.scheduler', DEFAULT_COMPONENTS):
            scheduler = get_path(config, 'train.scheduler')
            if isinstance(scheduler, dict) and 'optimizer_args' not in scheduler:
                # spell out the defaults, so that only the rate changes
                from training.optimizer_scheduler import default_optimizer_args
                scheduler['optimizer_args'] = default_optimizer_args(scheduler.get('optimizer', 'SGD'))
        touched = _set_if_present(config, 'train.scheduler.optimizer_args.lr', args.lr)
        touched = _set_schedule_argument(config, 'lr', args.lr) > 0 or touched
        require_key(touched, '--lr', 'train.scheduler.optimizer_args.lr', config)
    if args.visualize and has_path(config, 'validation'):
        _set_if_present(config, 'validation.visualize', True)
    if args.sweep:
        if not args.validate:
            raise ConfigError('--sweep reports the box_thresh sweep of validation during training: it needs --validate')
        require_key(_set_if_present(config, 'validation.sweep', True), '--sweep', 'validation.sweep', config)
    if args.verbose:
        _set_if_present(config, 'logger.verbose', True)


def apply_eval_flags(config: CompiledConfig, args: argparse.Namespace) -> None:
    apply_representer_flags(config, args)
    section = 'evaluation' if has_path(config, 'evaluation') else 'validation'
    if args.polygon:
        require_key(_set_if_present(config, f'{section}.is_output_polygon', True), '--polygon',
                 f'{section}.is_output_polygon', config)
    if args.sweep:
        require_key(_set_if_present(config, f'{section}.sweep', True), '--sweep', f'{section}.sweep', config)
    for path in _loader_paths(config, section):
        if args.batch_size is not None:
            _set_if_present(config, f'{path}.batch_size', args.batch_size)
        if args.num_workers is not None:
            _set_if_present(config, f'{path}.num_workers', args.num_workers)
        processes = f'{path}.dataset.processes'
        if args.image_short_side is not None:
            if args.image_short_side < 32 or args.image_short_side % 32:
                raise ConfigError(f'--image_short_side {args.image_short_side}: must be a positive multiple of 32')
            _set_on_resize_processes(config, processes, '--image_short_side',
                                     short_side=args.image_short_side, max_long_side=args.max_long_side)
        if args.tile != 'off':  # the cap is lifted; tiles bound the network's memory instead (eval.py)
            _set_on_resize_processes(config, processes, '--tile', max_long_side=None,
                                     max_pixels=DEFAULT_MAX_TILED_PIXELS)
        if args.resize_dtype != 'float32':
            _set_on_resize_processes(config, processes, '--resize_dtype', resize_dtype=args.resize_dtype)
        if args.skip_bad_samples:
            require_key(_set_if_present(config, f'{path}.dataset.on_bad_sample', 'skip'), '--skip_bad_samples',
                     f'{path}.dataset.on_bad_sample', config)
    if args.verbose:
        _set_if_present(config, 'logger.verbose', True)


def _set_on_resize_processes(config: CompiledConfig, processes_path: str, flag: str, **values: Any) -> None:
    """``values`` (``short_side`` / ``max_long_side`` for demo.py's size rule, ``resize_dtype``) on each only_resize
    AugmentDetectionData of the pipeline: the evaluation input; ConfigError naming ``flag`` when there is none."""
    changed = 0
    for process in (get_path(config, processes_path) if has_path(config, processes_path) else None) or []:
        if isinstance(process, dict) and str(process.get('class', '')).endswith('AugmentDetectionData') \
                and process.get('only_resize'):
            process.update(values)
            changed += 1
    if not changed:
        raise ConfigError(f"{config.source}: define '{config.define}': {flag} found no only_resize "
                          f'AugmentDetectionData in {processes_path}')


def compile_experiment(args: argparse.Namespace, apply_flags: Callable[[CompiledConfig, argparse.Namespace], None]
                       ) -> CompiledConfig:
    """Load ``args.exp`` and apply the ``--opt`` overrides and the entry point's flags.

    Precedence: a dedicated flag (``--box_thresh``, ``--batch_size``, ...) > ``--opt`` > the experiment file. The
    flags run twice: first so that ``--opt`` can reach the default components a flag adds, then after ``--opt``
    so that they win (setting a value is idempotent).
    """
    config = load_config(args.exp)
    apply_flags(config, args)
    apply_overrides(config, args.opt or [])
    apply_flags(config, args)
    return config


def run_name(args: argparse.Namespace) -> str:
    return args.name or os.path.splitext(os.path.basename(args.exp))[0]
