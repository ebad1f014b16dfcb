"""``python -m tools.plot RUN_DIR_or_metrics.jsonl [--out DIR]``: a run's curves from its ``metrics.jsonl`` as PNGs.

Written into ``--out`` (default ``RUN_DIR/plots/``; for a file, ``plots/`` beside it), and nowhere else:

- ``loss.png``: the loss and each named loss term against the iteration (a dotted line where a run was resumed);
- ``lr.png``: the learning rate, and the samples per second, against the iteration;
- ``validation.png``: precision, recall and F-measure of each validation loader against the iteration, the best
  F-measure marked;
- ``pr_curve.png``: from ``sweep`` lines (``eval.py --sweep --metrics PATH``): precision against recall, one curve per
  checkpoint and loader (the newest sweep of each), each point labelled with its box_thresh, the best F-measure
  (the hmean) marked, with grey lines of equal F-measure.

A figure is written only when the file has lines for it. The file format: training/metrics_file.py.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from training.metrics_file import METRICS_FILE, read_metrics

# the fields of a train line that are not loss terms
TRAIN_FIELDS = {'type', 'epoch', 'iteration', 'lr', 'loss', 'samples_per_second', 'time', 'skipped'}
DPI = 110


def _pyplot() -> Any:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _once_per_iteration(records: List[Dict[str, Any]], kind: str) -> List[Dict[str, Any]]:
    """The records of ``kind``, the last one per (iteration, loader) (a file the trainer wrote has one), by
    iteration."""
    chosen: Dict[Tuple[int, Any], Dict[str, Any]] = {}
    for record in records:
        if record.get('type') == kind and isinstance(record.get('iteration'), int):
            chosen[(record['iteration'], record.get('loader'))] = record
    return [chosen[key] for key in sorted(chosen, key=lambda key: (key[0], str(key[1])))]


def _series(records: List[Dict[str, Any]], key: str) -> Tuple[List[int], List[float]]:
    points = [(record['iteration'], record[key]) for record in records
              if isinstance(record.get(key), (int, float)) and not isinstance(record.get(key), bool)]
    return [x for x, _ in points], [float(y) for _, y in points]


def _resumes(records: List[Dict[str, Any]]) -> List[int]:
    return sorted({record['iteration'] for record in records
                   if record.get('type') == 'start' and record.get('resumed_from')
                   and isinstance(record.get('iteration'), int)})


def _mark_resumes(axis: Any, resumes: Sequence[int]) -> None:
    for index, iteration in enumerate(resumes):
        axis.axvline(iteration, color='grey', linestyle=':', linewidth=1,
                     label='resumed' if index == 0 else None)


def plot_loss(plt: Any, train: List[Dict[str, Any]], resumes: Sequence[int], path: str, title: str) -> str:
    terms = sorted({key for record in train for key in record if key not in TRAIN_FIELDS})
    rows = 2 if terms else 1
    figure, axes = plt.subplots(rows, 1, figsize=(9, 3.4 * rows), sharex=True, squeeze=False)
    top = axes[0][0]
    x, y = _series(train, 'loss')
    top.plot(x, y, color='black', linewidth=1.4, label='loss')
    top.set_ylabel('loss')
    top.set_title(f'{title}: training loss')
    _mark_resumes(top, resumes)
    top.grid(alpha=0.3)
    top.legend(loc='upper right')
    if terms:
        bottom = axes[1][0]
        for term in terms:
            x, y = _series(train, term)
            bottom.plot(x, y, linewidth=1.2, label=term)
        bottom.set_ylabel('loss terms')
        if all(value > 0 for term in terms for value in _series(train, term)[1]):
            bottom.set_yscale('log')  # terms of very different sizes stay readable
        _mark_resumes(bottom, resumes)
        bottom.grid(alpha=0.3, which='both')
        bottom.legend(loc='upper right', fontsize='small', ncol=min(len(terms), 3))
    axes[-1][0].set_xlabel('iteration')
    return _save(plt, figure, path)


def plot_lr(plt: Any, train: List[Dict[str, Any]], resumes: Sequence[int], path: str, title: str) -> str:
    throughput = _series(train, 'samples_per_second')
    rows = 2 if throughput[0] else 1
    figure, axes = plt.subplots(rows, 1, figsize=(9, 3.0 * rows), sharex=True, squeeze=False)
    x, y = _series(train, 'lr')
    axes[0][0].plot(x, y, color='tab:blue', linewidth=1.4)
    axes[0][0].set_ylabel('learning rate')
    axes[0][0].set_title(f'{title}: learning rate' + (' and throughput' if rows == 2 else ''))
    axes[0][0].ticklabel_format(axis='y', style='sci', scilimits=(-3, 3))
    if rows == 2:
        axes[1][0].plot(*throughput, color='tab:green', linewidth=1.2)
        axes[1][0].set_ylabel('samples / s')
        axes[1][0].set_ylim(bottom=0)
    for row in axes:
        _mark_resumes(row[0], resumes)
        row[0].grid(alpha=0.3)
    axes[-1][0].set_xlabel('iteration')
    return _save(plt, figure, path)


def plot_validation(plt: Any, validation: List[Dict[str, Any]], resumes: Sequence[int], path: str,
                    title: str) -> str:
    loaders = list(dict.fromkeys(str(record.get('loader')) for record in validation))
    figure, axes = plt.subplots(len(loaders), 1, figsize=(9, 3.4 * len(loaders)), sharex=True, squeeze=False)
    for (axis,), loader in zip(axes, loaders):
        records = [record for record in validation if str(record.get('loader')) == loader]
        for key, color, style in (('precision', 'tab:blue', '--'), ('recall', 'tab:orange', '--'),
                                  ('fmeasure', 'black', '-')):
            x, y = _series(records, key)
            axis.plot(x, y, style, color=color, marker='o', markersize=3, linewidth=1.3, label=key)
        x, y = _series(records, 'fmeasure')
        if y:
            best = max(range(len(y)), key=lambda index: (y[index], -x[index]))
            axis.plot([x[best]], [y[best]], marker='*', markersize=14, color='tab:red', linestyle='none',
                      label=f'best fmeasure {y[best]:.4f} (iteration {x[best]})')
        axis.set_ylim(0, 1.02)
        axis.set_ylabel(loader)
        axis.set_title(f'{title}: validation on {loader}')
        _mark_resumes(axis, resumes)
        axis.grid(alpha=0.3)
        axis.legend(loc='lower right', fontsize='small')
    axes[-1][0].set_xlabel('iteration')
    return _save(plt, figure, path)


def latest_sweeps(records: List[Dict[str, Any]]) -> Dict[Tuple[str, str], List[Dict[str, Any]]]:
    """(checkpoint, loader) -> the rows of its newest sweep (the lines of one eval.py call share their ``time``),
    by box_thresh."""
    groups: Dict[Tuple[str, str, Any], List[Dict[str, Any]]] = {}
    for record in records:
        if record.get('type') == 'sweep' and all(isinstance(record.get(key), (int, float))
                                                 for key in ('box_thresh', 'precision', 'recall', 'fmeasure')):
            key = (str(record.get('checkpoint')), str(record.get('loader')), record.get('time'))
            groups.setdefault(key, []).append(record)
    newest: Dict[Tuple[str, str], Tuple[Any, List[Dict[str, Any]]]] = {}
    for (checkpoint, loader, when), rows in groups.items():
        if (checkpoint, loader) not in newest or (when or 0) >= (newest[(checkpoint, loader)][0] or 0):
            newest[(checkpoint, loader)] = (when, rows)
    return {key: sorted(rows, key=lambda row: row['box_thresh']) for key, (_, rows) in newest.items()}


def plot_pr_curve(plt: Any, sweeps: Dict[Tuple[str, str], List[Dict[str, Any]]], path: str, title: str) -> str:
    import numpy as np
    figure, axis = plt.subplots(figsize=(7.5, 7))
    grid = np.linspace(0.01, 1, 200)
    for level in (0.2, 0.4, 0.6, 0.8, 0.9):  # lines of equal F-measure: P = F R / (2R - F)
        recall = grid[2 * grid > level]
        precision = level * recall / (2 * recall - level)
        keep = precision <= 1.0
        axis.plot(recall[keep], precision[keep], color='0.85', linewidth=0.8, zorder=0)
        axis.annotate(f'F={level}', (recall[keep][-1], precision[keep][-1]), fontsize=7, color='0.6',
                      xytext=(-22, 3), textcoords='offset points')
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for index, ((checkpoint, loader), rows) in enumerate(sorted(sweeps.items())):
        color = colors[index % len(colors)]
        recalls = [row['recall'] for row in rows]
        precisions = [row['precision'] for row in rows]
        label = f'{os.path.basename(checkpoint) or checkpoint} / {loader}' if len(sweeps) > 1 else loader
        axis.plot(recalls, precisions, marker='o', markersize=4, color=color, linewidth=1.3, label=label)
        for row in rows:
            axis.annotate(f"{row['box_thresh']:.2f}", (row['recall'], row['precision']), fontsize=7, color=color,
                          xytext=(4, 4), textcoords='offset points')
        best = max(rows, key=lambda row: (row['fmeasure'], -row['box_thresh']))
        axis.plot([best['recall']], [best['precision']], marker='*', markersize=16, color=color,
                  markeredgecolor='black', linestyle='none',
                  label=f"best hmean {best['fmeasure']:.4f} at box_thresh {best['box_thresh']:.2f}")
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel('recall')
    axis.set_ylabel('precision')
    axis.set_title(f'{title}: precision-recall over box_thresh')
    axis.grid(alpha=0.3)
    axis.legend(loc='lower left', fontsize='small')
    return _save(plt, figure, path)


def _save(plt: Any, figure: Any, path: str) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def metrics_path(source: str) -> str:
    """The metrics file of ``source``: the file itself, or ``metrics.jsonl`` in a run's folder."""
    return os.path.join(source, METRICS_FILE) if os.path.isdir(source) else source


def plot(source: str, out: Optional[str] = None) -> List[str]:
    """Write the figures of ``source`` (a run's folder or a metrics file) into ``out`` (default: ``plots/`` in the
    run's folder, or beside the file); returns the paths written. FileNotFoundError / ValueError when there is
    nothing to plot."""
    path = metrics_path(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no metrics file (a training run writes workspace/<name>/{METRICS_FILE})')
    records = read_metrics(path)
    out = out or os.path.join(os.path.dirname(os.path.abspath(path)), 'plots')
    train = _once_per_iteration(records, 'train')
    validation = _once_per_iteration(records, 'validation')
    sweeps = latest_sweeps(records)
    if not (train or validation or sweeps):
        raise ValueError(f'{path}: no train, validation or sweep lines to plot')
    os.makedirs(out, exist_ok=True)
    plt = _pyplot()
    title = os.path.basename(os.path.dirname(os.path.abspath(path))) or 'run'
    resumes = _resumes(records)
    written = []
    if train:
        written.append(plot_loss(plt, train, resumes, os.path.join(out, 'loss.png'), title))
        written.append(plot_lr(plt, train, resumes, os.path.join(out, 'lr.png'), title))
    if validation:
        written.append(plot_validation(plt, validation, resumes, os.path.join(out, 'validation.png'), title))
    if sweeps:
        written.append(plot_pr_curve(plt, sweeps, os.path.join(out, 'pr_curve.png'), title))
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m tools.plot', description=__doc__.split('\n\n')[0])
    parser.add_argument('source', help=f'a run folder (workspace/<name>, holding {METRICS_FILE}) or a metrics file')
    parser.add_argument('--out', default=None, help='folder for the PNGs (default: plots/ in the run folder)')
    args = parser.parse_args(argv)
    try:
        written = plot(args.source, args.out)
    except (FileNotFoundError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
