"""README, "Train on your own data", end to end on a tiny labelme folder: the commands are read from the README
section itself (between its own-data markers) and run in order, through each command's ``main``, from a working
directory in tmp_path; only the sizes are made tiny (TINY below, the overrides of the other fast training tests:
64 px crops, batch 2, no loader workers), so README and test cannot drift apart. Each step's output is checked
as the README describes it: the converted layout, check's overlays, the run's checkpoints and metrics.jsonl (a run
interrupted after two steps, continued by the same command's ``--resume auto``, ended by early stopping), eval's
sweep lines, the plot PNGs and demo's result files. The whole path is a slow test (about a minute, more on a busy
machine); the fast one runs convert, check, the training command for 2 iterations and the plot."""
import json
import os
import shlex

import cv2
import numpy as np
import pytest

import demo
import eval as evaluate
import train
from data.convert.__main__ import main as convert_main
from data.readers import read_converted
from tools import plot
from training.checkpoint import read_checkpoint_file
from training.metrics_file import read_metrics
from training.trainer import Trainer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO_ROOT, 'README.md')
BEGIN, END = '<!-- own-data:begin', '<!-- own-data:end -->'
EXPERIMENT = 'experiments/seg_detector/own_data_resnet18_deform_thre.yaml'
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
MAINS = {'data.convert': convert_main, 'train': train.main, 'eval': evaluate.main, 'tools.plot': plot.main,
         'demo': demo.main}

# The tiny-run overrides, appended to the README's command of each entry point. Early stopping is made certain:
# validation at every iteration, and no F-measure can beat the best by more than 1.0, so the run stops at the
# third validation (patience 2); --epochs 4 (8 iterations) would end it later. A train line every iteration.
SMALL_VALIDATION = "dataset.processes.0.augmenter_args=[['Resize', {'width': 64, 'height': 64}]]"
TINY = {
    'train': ['--num_workers', '0', '--batch_size', '2', '--epochs', '4', '--seed', '0', '--device', 'cpu',
              '--opt', 'train.data_loader.dataset.processes.1.size=[64, 64]',
              f'validation.data_loaders.mine.{SMALL_VALIDATION}', 'validation.interval=1',
              'train.early_stopping.patience=2', 'train.early_stopping.min_delta=1.0', 'logger.log_interval=1'],
    'eval': ['--num_workers', '0', '--device', 'cpu',
             '--opt', f'evaluation.data_loaders.mine.{SMALL_VALIDATION}'],
    'demo': ['--image_short_side', '64', '--device', 'cpu'],
}

# The labelme folders: name -> words (x0, y0, x1, y1, label); '###' is don't care. Words are rows of dark blocks.
TRAIN = {'street.jpg': [(10, 10, 90, 34, 'OPEN'), (20, 70, 140, 100, 'BAKERY'), (100, 10, 150, 26, '###')],
         'sign.jpg': [(30, 20, 130, 52, 'EXIT'), (10, 80, 70, 104, 'LEFT')],
         'shop.jpg': [(5, 40, 155, 70, 'PHARMACY'), (60, 90, 120, 112, 'OPEN')],
         'menu.jpg': [(15, 15, 75, 35, 'TEA'), (85, 15, 150, 35, 'CAKE'), (15, 60, 120, 90, 'COFFEE')]}
TEST = {'door.jpg': [(20, 30, 120, 60, 'PUSH'), (40, 80, 100, 100, '###')],
        'board.jpg': [(10, 10, 80, 40, 'MENU'), (30, 70, 150, 100, 'SPECIALS')]}
SIZE = (160, 120)  # width, height


def readme_commands():
    """(entry point, arguments) of each ``python ...`` line of the README section, continuation lines joined."""
    with open(README, encoding='utf-8') as stream:
        text = stream.read()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, 'README: the own-data markers, once each'
    section = text[text.index(BEGIN):text.index(END)]
    assert section.count('```bash\n') == 1 and section.count('```') == 2, 'README: one bash block in the section'
    block = section.split('```')[1][len('bash\n'):].replace('\\\n', ' ')
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assert words[0] == 'python', f'README own-data section: not a python command: {line!r}'
        if words[1] == '-m':
            entry, arguments = words[2], words[3:]
        else:
            entry, arguments = os.path.splitext(words[1])[0], words[2:]
        assert entry in MAINS, f'README own-data section: no entry point {entry!r} known to the test'
        commands.append((entry, arguments))
    return commands


def write_picture(path, words, seed):
    """A light, grainy picture with each word drawn as a row of dark letter-like blocks filling its box."""
    rng = np.random.default_rng(seed)
    width, height = SIZE
    pixels = np.full((height, width, 3), 215, np.uint8) + rng.integers(0, 30, (height, width, 3), dtype=np.uint8)
    for x0, y0, x1, y1, label in words:
        letters = max(len(label), 3)
        step = (x1 - x0) / letters
        for index in range(letters):
            left = int(round(x0 + index * step + step * 0.15))
            right = int(round(x0 + (index + 1) * step - step * 0.15))
            cv2.rectangle(pixels, (left, y0 + 2), (right, y1 - 2), tuple(int(v) for v in rng.integers(0, 70, 3)), -1)
    assert cv2.imwrite(str(path), pixels)


def write_labelme_folder(folder, pictures, seed):
    """labelme's own files: the picture and <stem>.json beside it; rectangles (two corners) and 4-point polygons."""
    os.makedirs(folder)
    for index, (name, words) in enumerate(sorted(pictures.items())):
        write_picture(os.path.join(folder, name), words, seed + index)
        shapes = []
        for number, (x0, y0, x1, y1, label) in enumerate(words):
            rectangle = number % 2 == 0
            points = [[x0, y0], [x1, y1]] if rectangle else [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
            shapes.append({'label': label, 'points': [[float(x), float(y)] for x, y in points], 'group_id': None,
                           'description': '', 'shape_type': 'rectangle' if rectangle else 'polygon', 'flags': {},
                           'mask': None})
        content = {'version': '5.4.1', 'flags': {}, 'shapes': shapes, 'imagePath': name, 'imageData': None,
                   'imageHeight': SIZE[1], 'imageWidth': SIZE[0]}
        with open(os.path.join(folder, os.path.splitext(name)[0] + '.json'), 'w', encoding='utf-8') as stream:
            json.dump(content, stream, indent=2)


def run(entry, arguments, capsys, extra=()):
    code = MAINS[entry](arguments + TINY.get(entry, []) + list(extra))
    out = capsys.readouterr().out
    assert code == 0, f'{entry} {arguments}: exit status {code}\n{out}'
    return out


class StopAfterTwoSteps:
    """Trainer.run_step that stops the run after two steps as SIGINT does (the step ends, ``latest`` is written)."""

    def __init__(self, run_step):
        self.run_step, self.steps = run_step, 0

    def __call__(self, trainer, batch):
        result = self.run_step(trainer, batch)
        self.steps += 1
        if self.steps >= 2:
            trainer.stop_reason = 'interrupted by the test'
        return result


def check_converted(split, pictures):
    with open(f'datasets/mine/{split}_list.txt', encoding='utf-8') as stream:
        assert sorted(stream.read().split()) == sorted(pictures)
    for name, words in pictures.items():
        assert os.path.isfile(f'datasets/mine/{split}_images/{name}')
        lines = read_converted(f'datasets/mine/{split}_gts/{name}.txt')
        assert [line['text'] for line in lines] == [label for *_, label in words]
        for line, (x0, y0, x1, y1, _) in zip(lines, words):
            points = np.asarray(line['poly'], dtype=float)
            assert points.min(axis=0).tolist() == [x0, y0] and points.max(axis=0).tolist() == [x1, y1]


def start(tmp_path, monkeypatch):
    """The README's commands (checked for their order), from a working directory holding the labelme folders and
    a photo."""
    commands = readme_commands()
    assert [entry for entry, _ in commands] == ['data.convert'] * 4 + ['train', 'eval', 'tools.plot', 'demo']
    monkeypatch.chdir(tmp_path)
    write_labelme_folder('my_labels/train', TRAIN, seed=0)
    write_labelme_folder('my_labels/test', TEST, seed=100)
    write_picture('photo.jpg', TEST['board.jpg'], seed=7)
    return commands


def arguments_of(commands, entry):
    return next(arguments for name, arguments in commands if name == entry)


def convert_and_check(commands, capsys):
    """Step 1: both splits converted into datasets/mine, then checked (the overlays of the train split)."""
    converts = [arguments for entry, arguments in commands if entry == 'data.convert']
    for arguments, (split, pictures) in zip(converts[:2], (('train', TRAIN), ('test', TEST))):
        out = run('data.convert', arguments, capsys)
        assert f'wrote {len(pictures)} images' in out, out
        check_converted(split, pictures)
    out = run('data.convert', converts[2], capsys)
    assert 'images: 4' in out and 'words: 10' in out and 'overlays: 4 in datasets/mine/check' in out, out
    overlays = sorted(os.listdir('datasets/mine/check'))
    assert overlays == sorted(f'train_{name}.png' for name in TRAIN)
    overlay = cv2.imread(os.path.join('datasets/mine/check', overlays[0]))
    assert overlay is not None and overlay.shape[0] >= SIZE[1]
    out = run('data.convert', converts[3], capsys)
    assert 'images: 2' in out and 'words: 4' in out, out


def train_arguments(commands):
    arguments = arguments_of(commands, 'train')
    assert arguments[:3] == [EXPERIMENT, '--name', 'mine'] and {'--validate', '--resume'} <= set(arguments)
    assert arguments[arguments.index('--resume') + 1] == 'auto'
    return arguments


def records_of(kind):
    return [record for record in read_metrics('workspace/mine/metrics.jsonl') if record['type'] == kind]


def plot_pngs(commands, capsys):
    run('tools.plot', arguments_of(commands, 'tools.plot'), capsys)
    pngs = sorted(os.listdir('workspace/mine/plots'))
    for name in pngs:
        with open(os.path.join('workspace/mine/plots', name), 'rb') as stream:
            assert stream.read(8) == PNG_MAGIC
    return pngs


def test_readme_own_data_path_convert_check_train_plot(tmp_path, monkeypatch, capsys):
    """The fast part: convert, check, the README's training command for one epoch (2 iterations), the plots."""
    commands = start(tmp_path, monkeypatch)
    convert_and_check(commands, capsys)
    run('train', train_arguments(commands), capsys, extra=['--epochs', '1'])
    assert read_checkpoint_file('workspace/mine/model/final')['iteration'] == 2
    assert os.path.isfile('workspace/mine/model/best')
    assert [record['iteration'] for record in records_of('train')] == [1, 2]
    assert [record['iteration'] for record in records_of('validation')] == [1, 2]
    assert plot_pngs(commands, capsys) == ['loss.png', 'lr.png', 'validation.png']


@pytest.mark.slow
def test_readme_own_data_path_end_to_end(tmp_path, monkeypatch, capsys):
    """Every command of the section in order; the training interrupted after two steps, continued by the same
    command (--resume auto), ended by early stopping."""
    commands = start(tmp_path, monkeypatch)
    convert_and_check(commands, capsys)

    # 2. train: interrupted after two steps, then the same command continues it and early stopping ends it
    arguments = train_arguments(commands)
    interrupting = StopAfterTwoSteps(Trainer.run_step)
    monkeypatch.setattr('training.trainer.Trainer.run_step', lambda self, batch: interrupting(self, batch))
    run('train', arguments, capsys)
    assert read_checkpoint_file('workspace/mine/model/latest')['iteration'] == 2
    assert not os.path.exists('workspace/mine/model/final')
    monkeypatch.setattr('training.trainer.Trainer.run_step', interrupting.run_step)
    run('train', arguments, capsys)
    with open('workspace/mine/output.log', encoding='utf-8') as stream:
        log = stream.read()
    assert 'resume auto: no checkpoint of this run yet' in log
    assert 'resume auto: continuing from workspace/mine/model/latest' in log
    assert 'early stopping at iteration 3' in log, log[-3000:]
    final = read_checkpoint_file('workspace/mine/model/final')
    assert final['iteration'] == 3 and final['early_stopping']['since'] == 2
    assert os.path.isfile('workspace/mine/model/best')
    assert [(record['iteration'], record['resumed_from']) for record in records_of('start')] == \
        [(0, None), (2, 'workspace/mine/model/latest')]
    assert [record['iteration'] for record in records_of('train')] == [1, 2, 3]
    assert [record['iteration'] for record in records_of('validation')] == [1, 2, 3]

    # 3. eval with the sweep, appended to the run's metrics
    out = run('eval', arguments_of(commands, 'eval'), capsys)
    assert 'mine: precision' in out and 'box_thresh sweep' in out, out
    sweep = records_of('sweep')
    assert len(sweep) == 13 and sum(record['best'] for record in sweep) == 1
    assert [record['loader'] for record in records_of('evaluation')] == ['mine']
    with open('workspace/mine/eval.log', encoding='utf-8') as stream:
        assert stream.read().startswith('workspace/mine/model/best mine ')

    # 4. the plots the README names
    assert plot_pngs(commands, capsys) == ['loss.png', 'lr.png', 'pr_curve.png', 'validation.png']

    # 5. demo on a picture: its result file (a box and its score a line) and drawing
    run('demo', arguments_of(commands, 'demo'), capsys)
    assert sorted(os.listdir('demo_results')) == ['photo.jpg', 'photo.txt']
    with open('demo_results/photo.txt', encoding='utf-8') as stream:
        for line in stream.read().splitlines():
            assert len(line.split(',')) == 9, line  # 4 corners, the score
    drawn = cv2.imread('demo_results/photo.jpg')
    assert drawn is not None and drawn.shape[:2] == (SIZE[1], SIZE[0])
