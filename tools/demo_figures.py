"""The README's table of `make demo` runs, written from the runs' own figure files (no number typed by hand).

    python -m tools.main_demo --record docs/demo_runs [--seed N] [--precision fp32|bf16]   # one run, recorded
    python -m tools.demo_figures            # rewrites the table between the markers in README.md
    python -m tools.demo_figures --check    # exit status 1 when README.md's table differs from the records

Each record is the ``figures.json`` that ``tools.main_demo`` writes: the machine (CPU model, torch's kernel
capability, whether bf16 is native), precision, seed, the seconds of each stage and P/R/F per mode (and, in records
from 2026-12-07 on, the mode's box_thresh).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from concern.files import atomic_write
from tools.main_demo import EXPERIMENT

RECORDS = 'docs/demo_runs'
README = 'README.md'
BEGIN = '<!-- demo-figures:begin (python -m tools.demo_figures writes this table) -->'
END = '<!-- demo-figures:end -->'


def load_records(directory: str = RECORDS) -> List[Dict[str, Any]]:
    """The records in ``directory``, sorted by experiment, machine, precision and seed. ValueError naming a file
    that is not a figure record."""
    records = []
    for path in sorted(glob.glob(os.path.join(directory, '*.json'))):
        with open(path, encoding='utf-8') as stream:
            try:
                record = json.load(stream)
            except json.JSONDecodeError as error:
                raise ValueError(f'{path}: not JSON ({error})') from None
        missing = [key for key in ('machine', 'precision', 'seed', 'stages_seconds', 'results') if key not in record]
        if not missing:
            missing = [f'machine.{key}' for key in ('cpu', 'cpus', 'isa') if key not in record['machine']]
            missing += [f'results.{mode}.{key}' for mode in ('box', 'polygon') for key in ('precision', 'recall',
                                                                                           'fmeasure')
                        if key not in record['results'].get(mode, {})]
        if record.get('quick'):
            raise ValueError(f'{path}: a --quick run (reduced size) does not belong in the README table')
        if missing:
            raise ValueError(f'{path}: not a make-demo figure record (missing {", ".join(missing)})')
        record['_file'] = os.path.basename(path)
        records.append(record)
    return sorted(records, key=lambda r: (experiment_label(r), r['machine']['cpu'], r['machine']['isa'],
                                          r['precision'], r['seed']))


def experiment_label(record: Dict[str, Any]) -> str:
    """The file name of the experiment a record trained (records without one predate the field: the demo's) and,
    where the record has them, the version of the recipe, the first 7 hex digits of the compiled experiment's
    SHA-256 (``experiment_sha256``), and the number of test images measured (``test_images``), so that runs of a
    file before and after a change of its settings, or measured on another split, are neither shown as one recipe
    nor pooled into one spread."""
    label = os.path.basename(str(record.get('experiment') or EXPERIMENT))
    version = record.get('experiment_sha256')
    if version:
        label += f' @{str(version)[:7]}'
    # the test split is part of what the F-measures mean: records of 100 and 300 test images are never pooled
    # (records without the field, before 2026-12-07's twelfth session, measured 100)
    if record.get('test_images'):
        label += f", {record['test_images']} test images"
    return label


def _minutes(seconds: Optional[float]) -> str:
    return '-' if seconds is None else f'{seconds / 60:.1f}'


def machine_label(machine: Dict[str, Any]) -> str:
    caps = machine.get('isa_caps') or {}
    label = f"{machine['cpu']}, {machine['cpus']} CPUs, {machine['isa']}"
    if machine.get('gpu'):
        label += f", GPU {machine['gpu']}"
    if caps:
        label += ' (capped: ' + ', '.join(f'{key}={value}' for key, value in sorted(caps.items())) + ')'
    return label


def render(records: Sequence[Dict[str, Any]], directory: str = RECORDS) -> str:
    """The Markdown table (one row per record) and one line per experiment, machine and precision giving the spread
    of F."""
    if not records:
        return '(no recorded runs yet: `python -m tools.main_demo --record docs/demo_runs`)'
    lines = ['| experiment | machine | precision | seed | set-up | training | evaluation | `make demo` total '
             '| box P / R / F | polygon P / R / F | record |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for record in records:
        stages = record['stages_seconds']
        # 'op' (records from 2026-12-07 on): the check whether the model needs the deformable convolution op, and
        # its build when it does, part of the set-up
        total = sum(stages.get(key) or 0.0 for key in ('setup', 'op', 'data', 'training', 'evaluation', 'pictures'))
        setup = None if stages.get('setup') is None else stages['setup'] + (stages.get('op') or 0.0)
        reused = [part for part in ('data', 'model') if record.get(f'{part}_reused')]
        note = (' (no set-up)' if stages.get('setup') is None else '') + (
            f" ({' and '.join(reused)} reused)" if reused else '')
        cells = [experiment_label(record), machine_label(record['machine']), record['precision'], str(record['seed']),
                 _minutes(setup), _minutes(stages.get('training')), _minutes(stages.get('evaluation')),
                 _minutes(total) + note]
        for mode in ('box', 'polygon'):
            result = record['results'][mode]
            cells.append(f"{result['precision']:.3f} / {result['recall']:.3f} / **{result['fmeasure']:.3f}**")
        cells.append(f"[{record['_file']}]({directory}/{record['_file']})")
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines.append('')
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(f"{experiment_label(record)} on {machine_label(record['machine'])}, {record['precision']}",
                          []).append(record)
    for label, group in groups.items():
        lines.append(f'- {label}: {len(group)} run(s), {_spreads(group)}')
    # the measure: one recipe over seeds and precisions (and machines) together
    versions: Dict[str, List[Dict[str, Any]]] = {}
    for record in records:
        versions.setdefault(experiment_label(record), []).append(record)
    for label, group in versions.items():
        kinds = {(machine_label(r['machine']), r['precision']) for r in group}
        if len(kinds) > 1:
            lines.append(f'- {label}, all {len(group)} runs of its {len(kinds)} machine and precision rows together: '
                         f'{_spreads(group)}')
    lines.append('')
    lines.append('Minutes of wall time; "total" adds set-up, data generation, training, evaluation and pictures as '
                 'each run measured them (set-up is timed by `make demo` only, the deformable convolution op\'s build '
                 'included; a reused model counts the training time '
                 'of the run that trained it, a reused data set almost nothing). `@` and 7 hex digits: the version of '
                 'the experiment (its compiled settings\' SHA-256), so that a file changed between runs gives rows and '
                 'spreads of its own. A machine "capped" ran with the instruction-set caps named (the slower kind of '
                 'CPU, forced on a faster one).')
    return '\n'.join(lines)


def _spreads(group: Sequence[Dict[str, Any]]) -> str:
    """'box F lo-hi (spread d); polygon F lo-hi (spread d)' over the records of ``group``."""
    parts = []
    for mode in ('box', 'polygon'):
        values = [r['results'][mode]['fmeasure'] for r in group]
        parts.append(f'{mode} F {min(values):.3f}-{max(values):.3f} (spread {max(values) - min(values):.3f})')
    return '; '.join(parts)


def replace_table(text: str, table: str) -> str:
    """``text`` with the part between the markers replaced by ``table``. ValueError when the markers are missing."""
    if BEGIN not in text or END not in text.split(BEGIN, 1)[1]:
        raise ValueError(f'{README}: the markers {BEGIN!r} ... {END!r} are missing')
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f'{head}{BEGIN}\n{table}\n{END}{tail}'


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--records', default=RECORDS)
    parser.add_argument('--readme', default=README)
    parser.add_argument('--check', action='store_true', help='only compare; exit status 1 when they differ')
    args = parser.parse_args(argv)
    with open(args.readme, encoding='utf-8') as stream:
        text = stream.read()
    records = load_records(args.records)
    updated = replace_table(text, render(records, args.records))
    if args.check:
        if updated != text:
            print(f'{args.readme}: the demo table differs from {args.records} (run python -m tools.demo_figures)',
                  file=sys.stderr)
            return 1
        return 0
    if updated != text:
        atomic_write(args.readme, updated)
        print(f'{args.readme}: demo table rewritten from {len(records)} record(s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
