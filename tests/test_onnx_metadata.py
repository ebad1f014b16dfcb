"""A self-describing exported model (issue 27): convert_to_onnx.py writes the representer, normalisation and size rule
into the ONNX file's metadata_props; TextDetector(onnx=...) and demo.py --onnx run it without the experiment YAML
(a YAML given overrides it, with a note per differing setting); files without the description, of another format or
naming a foreign class are refused; Detections.to_dict, demo.py --json and --batch_size."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import sys

import numpy as np
import pytest

import convert_to_onnx
import demo
from inference_helpers import REPO_ROOT, export_tiny_onnx, tiny_model, write_experiment

onnxruntime = pytest.importorskip('onnxruntime')  # an optional extra; CI installs it
onnx = pytest.importorskip('onnx')

SHORT_SIDE = 96  # the export's --image_short_side: recorded as the model's short side


@pytest.fixture(scope='module')
def exported(module_tmp):
    tmp = module_tmp('onnx_metadata')
    made = export_tiny_onnx(tmp, 3, str(tmp / 'out' / 'model.onnx'), SHORT_SIDE)
    assert made['code'] == 0, made['out']
    made['images'] = sorted(glob.glob(os.path.join(made['data'], 'test_images', '*')))
    return made


def description(path: str) -> dict:
    return json.loads({entry.key: entry.value for entry in onnx.load(path).metadata_props}['dbnet'])


def rewritten(source: str, target: str, change) -> str:
    """A copy of the ONNX file ``source`` whose metadata dict (key -> string) ``change`` edits in place."""
    model = onnx.load(source)
    props = {entry.key: entry.value for entry in model.metadata_props}
    change(props)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, target)
    return target


def with_description(source: str, target: str, edit) -> str:
    def change(props):
        stored = json.loads(props['dbnet'])
        edit(stored)
        props['dbnet'] = json.dumps(stored)
    return rewritten(source, target, change)


def read_rows(path) -> list:
    return [line.split(',') for line in open(path, encoding='utf-8').read().split()]


# ------------------------------------------------------------------ the export


def test_export_writes_the_experiments_settings_into_the_file(exported):
    from data.normalization import IMAGE_MEAN_BGR
    from inference.detector import TextDetector, representer_settings
    import torch
    stored = description(exported['onnx'])
    assert stored['format'] == 1 and stored['output'] == 'probability' and stored['input'] == 'image'
    # every constructor argument of the experiment's representer, as the experiment (thresh 0.5, box_thresh 0.4,
    # max_candidates 1000, the rest defaults) builds it
    assert stored['representer'] == {'class': 'SegDetectorRepresenter', 'thresh': 0.5, 'box_thresh': 0.4,
                                     'max_candidates': 1000, 'unclip_ratio': 1.5, 'polygon_unclip_ratio': 2.0,
                                     'min_size': 3, 'score_mode': 'fast', 'dest': 'binary',
                                     'cap_before_filtering': False}
    with_experiment = TextDetector(exported['exp'], exported['ckpt'], device='cpu')
    assert stored['representer'] == representer_settings(with_experiment.representer)
    assert stored['normalization']['channel_order'] == 'BGR'
    assert stored['normalization']['mean'] == IMAGE_MEAN_BGR.tolist() and stored['normalization']['divisor'] == 255
    assert stored['input_size'] == {'mode': 'short_side', 'short_side': SHORT_SIDE, 'max_long_side': 2560,
                                    'multiple': 32}
    assert stored['opset'] == 19 and stored['deform_conv'] in ('onnx', 'portable')
    assert f"deformable convolutions: {stored['deform_conv']}" in exported['out']
    assert stored['torch_version'] == torch.__version__
    assert stored['experiment']['path'] == exported['exp']
    assert stored['experiment']['sha256'] == hashlib.sha256(open(exported['exp'], 'rb').read()).hexdigest()
    model = onnx.load(exported['onnx'])
    assert model.producer_name.startswith('dbnet') and model.model_version == 1
    assert 'SegDetectorRepresenter' in model.doc_string
    # written whole under another name and renamed: nothing else is left beside it
    assert os.listdir(os.path.dirname(exported['onnx'])) == ['model.onnx']


def test_a_failed_export_leaves_no_file(exported, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError('export failed half way')
    monkeypatch.setattr(convert_to_onnx, '_export_graph', broken)
    target = tmp_path / 'model.onnx'
    with pytest.raises(RuntimeError):
        convert_to_onnx.export(tiny_model('resnet18'), str(target), np.zeros((1, 3, 64, 64), np.float32),
                               metadata=description(exported['onnx']))
    assert os.listdir(tmp_path) == []
    # a re-export that fails leaves the model already there as it was, and nothing beside it
    before = open(exported['onnx'], 'rb').read()
    target.write_bytes(before)
    os.chmod(target, 0o640)
    with pytest.raises(RuntimeError):
        convert_to_onnx.export(tiny_model('resnet18'), str(target), np.zeros((1, 3, 64, 64), np.float32),
                               metadata=description(exported['onnx']))
    assert target.read_bytes() == before and os.listdir(tmp_path) == ['model.onnx']
    assert os.stat(target).st_mode & 0o777 == 0o640
    # one that succeeds replaces it whole (concern.files.atomic_write), keeping the replaced file's mode
    monkeypatch.undo()
    convert_to_onnx.export(tiny_model('resnet18'), str(target), np.zeros((1, 3, 64, 64), np.float32),
                           deform_conv='portable', metadata=description(exported['onnx']))
    assert target.read_bytes() != before and os.listdir(tmp_path) == ['model.onnx']
    assert os.stat(target).st_mode & 0o777 == 0o640 and description(str(target))['deform_conv'] == 'portable'


def test_an_output_that_names_an_input_is_refused_before_any_work(exported, tmp_path, monkeypatch, capsys):
    import shutil
    monkeypatch.chdir(REPO_ROOT)

    def fail(*args, **kwargs):
        raise AssertionError('the export ran')
    monkeypatch.setattr(convert_to_onnx, 'export', fail)
    checkpoint = str(tmp_path / 'model.pth')
    shutil.copyfile(exported['ckpt'], checkpoint)
    inner = str(tmp_path / 'inner.yaml')
    shutil.copyfile(exported['exp'], inner)
    parent = tmp_path / 'parent.yaml'
    parent.write_text(f'import:\n  - {inner}\n', encoding='utf-8')
    image = str(tmp_path / 'verify.jpg')
    shutil.copyfile(exported['images'][0], image)
    os.symlink(image, tmp_path / 'link.jpg')
    calibration = tmp_path / 'calibration'
    calibration.mkdir()
    shutil.copyfile(exported['images'][1], calibration / 'a.jpg')
    files = [checkpoint, inner, str(parent), image, str(calibration / 'a.jpg')]
    before = {path: open(path, 'rb').read() for path in files}
    base = [str(parent), '--resume', checkpoint, '--verify_image', image, '--image_short_side', '64']
    for extra, message in (
            (['--output', checkpoint], f'--output {checkpoint} would overwrite --resume {checkpoint}'),
            (['--output', str(parent)], f'would overwrite the experiment {parent}'),
            (['--output', inner], f'would overwrite a file the experiment imports {inner}'),
            (['--output', str(tmp_path / 'link.jpg')], f'would overwrite --verify_image {image}'),
            (['--output', str(tmp_path / 'm.onnx'), '--int8', '--calibration_dir', str(calibration),
              '--int8_output', str(calibration / 'a.jpg')],
             f"--int8_output {calibration / 'a.jpg'} would overwrite a calibration image")):
        assert convert_to_onnx.main(base + extra) == 2
        assert message in capsys.readouterr().err
    assert {path: open(path, 'rb').read() for path in files} == before
    assert sorted(os.listdir(tmp_path)) == ['calibration', 'inner.yaml', 'link.jpg', 'model.pth', 'parent.yaml',
                                            'verify.jpg']


# ------------------------------------------------------------------ running without the experiment


def test_detector_without_experiment_gives_the_detections_with_it(exported):
    from inference.detector import TextDetector, representer_settings
    image = exported['images'][0]
    alone = TextDetector(onnx=exported['onnx'])
    with_yaml = TextDetector(exported['exp'], onnx=exported['onnx'])
    assert representer_settings(alone.representer) == representer_settings(with_yaml.representer)
    first, second = alone(image), with_yaml(image)
    assert first.input_size == second.input_size and min(first.input_size) == SHORT_SIDE  # the stored short side
    assert len(first) == len(second) > 0
    assert all(np.array_equal(a, b) for a, b in zip(first.polygons, second.polygons))
    assert first.scores == second.scores
    # arguments still win over the stored settings
    stored_with_argument = TextDetector(onnx=exported['onnx'], box_thresh=0.9).representer
    # box_thresh given is the minimum in both modes (concern.config.threshold_settings)
    assert (stored_with_argument.box_thresh_for(False), stored_with_argument.box_thresh_for(True)) == (0.9, 0.9)
    assert min(TextDetector(onnx=exported['onnx'], image_short_side=64)(image).input_size) == 64


def test_demo_with_the_onnx_file_alone(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    images = os.path.join(exported['data'], 'test_images')
    assert demo.main(['--onnx', exported['onnx'], '--image_path', images, '--result_dir', str(tmp_path / 'alone')]) == 0
    assert f"settings from {exported['onnx']}" in capsys.readouterr().out
    assert demo.main([exported['exp'], '--onnx', exported['onnx'], '--image_path', images, '--result_dir',
                      str(tmp_path / 'yaml')]) == 0
    names = sorted(os.listdir(tmp_path / 'alone'))
    assert names == sorted(os.listdir(tmp_path / 'yaml')) == ['img_1.txt', 'img_2.txt', 'img_3.txt']
    assert any(read_rows(tmp_path / 'alone' / name) for name in names)
    for name in names:
        assert read_rows(tmp_path / 'alone' / name) == read_rows(tmp_path / 'yaml' / name)


def test_experiment_overrides_the_stored_settings_with_one_note_each(exported, tmp_path):
    from inference.detector import TextDetector
    other = write_experiment(str(tmp_path), exported['data'], 'deformable_resnet18', thresh=0.5, box_thresh=0.6)
    notes: list = []
    detector = TextDetector(other, onnx=exported['onnx'], log=notes.append)
    assert detector.representer.box_thresh == 0.6
    assert notes == [f"note: box_thresh: 0.6 from the experiment overrides 0.4 stored in {exported['onnx']}"]
    notes.clear()
    TextDetector(exported['exp'], onnx=exported['onnx'], log=notes.append)
    assert notes == []  # the same settings: nothing to say


def test_a_file_without_the_description_needs_the_experiment(exported, tmp_path, monkeypatch, capsys):
    from inference.detector import TextDetector
    bare = rewritten(exported['onnx'], str(tmp_path / 'bare.onnx'), lambda props: props.clear())
    with pytest.raises(ValueError, match=r'carries no DBNet description.*pass the experiment YAML.*export the model '
                                         r'again with convert_to_onnx\.py'):
        TextDetector(onnx=bare)
    monkeypatch.chdir(REPO_ROOT)
    assert demo.main(['--onnx', bare, '--image_path', exported['images'][0], '--result_dir',
                      str(tmp_path / 'res')]) == 2
    assert 'pass the experiment YAML' in capsys.readouterr().err
    notes: list = []
    assert len(TextDetector(exported['exp'], onnx=bare, log=notes.append).detect(exported['images'][0])) >= 0
    assert notes == []  # with the experiment the file needs no description
    # convert_to_onnx.py --int8 gives the quantized file the float file's description the same way
    convert_to_onnx.copy_metadata(exported['onnx'], bare)
    assert description(bare) == description(exported['onnx'])
    assert sorted(os.listdir(tmp_path)) == ['bare.onnx']


def test_unknown_format_and_foreign_classes_are_refused(exported, tmp_path):
    from inference.detector import TextDetector

    def set_format(stored):
        stored['format'] = 2
    newer = with_description(exported['onnx'], str(tmp_path / 'newer.onnx'), set_format)
    with pytest.raises(ValueError, match=r'metadata format 2 is not one this version of the project reads'):
        TextDetector(onnx=newer)
    notes: list = []
    TextDetector(exported['exp'], onnx=newer, log=notes.append)  # with the experiment: ignored, said once
    assert len(notes) == 1 and 'format 2' in notes[0] and 'ignored' in notes[0]

    assert 'antigravity' not in sys.modules
    for name, message in (('antigravity.Fly', r"'antigravity' is not"),
                          ('os.system', r"'os' is not"),
                          ('Experiment', r'not a representer of this project'),
                          ('NoSuchRepresenter', r"unknown class 'NoSuchRepresenter'")):
        def set_class(stored, name=name):
            stored['representer']['class'] = name
        foreign = with_description(exported['onnx'], str(tmp_path / 'foreign.onnx'), set_class)
        with pytest.raises(ValueError, match=message):
            TextDetector(onnx=foreign)
    assert 'antigravity' not in sys.modules  # a module named in a file is never imported

    def bad_argument(stored):
        stored['representer']['box_thresh'] = 'high'
    with pytest.raises(ValueError, match=r"box_thresh"):
        TextDetector(onnx=with_description(exported['onnx'], str(tmp_path / 'bad.onnx'), bad_argument))

    def other_mean(stored):
        stored['normalization']['mean'] = [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r'another input normalisation'):
        TextDetector(onnx=with_description(exported['onnx'], str(tmp_path / 'mean.onnx'), other_mean))


def test_nested_classes_in_the_description_are_refused_and_never_built(monkeypatch):
    """The file is untrusted: a ``{'class': ...}`` mapping as an argument (any project class) is refused before
    anything is constructed, the representer included."""
    from experiment import Experiment
    from inference.detector import build_representer
    from structure.representers import SegDetectorRepresenter
    from training.checkpoint import Checkpoint
    from training.model_saver import ModelSaver
    built: list = []
    for cls in (ModelSaver, Checkpoint, Experiment, SegDetectorRepresenter):
        def spy(self, *args, _name=cls.__name__, **kwargs):
            built.append(_name)
            raise AssertionError(f'{_name} built from a file')
        monkeypatch.setattr(cls, '__init__', spy)
    for nested in ({'class': 'ModelSaver', 'dir_path': 'x'}, {'class': 'training.model_saver.ModelSaver'},
                   {'class': 'Checkpoint'}, {'class': 'Experiment'}, {'class': 'SegDetectorRepresenter'},
                   [{'class': 'ModelSaver'}], {'dir_path': {'class': 'ModelSaver'}}):
        for key in ('dest', 'thresh'):
            with pytest.raises(ValueError, match=rf"argument '{key}': expected a plain value.*nothing was built"):
                build_representer({'class': 'SegDetectorRepresenter', key: nested}, 'm.onnx')
    assert built == []
    monkeypatch.undo()
    # plain values still build, with the names and types checked
    representer = build_representer({'class': 'SegDetectorRepresenter', 'thresh': 0.4, 'dest': 'binary'}, 'm.onnx')
    assert type(representer).__name__ == 'SegDetectorRepresenter' and representer.thresh == 0.4
    with pytest.raises(ValueError, match=r"unknown argument 'dir_path'"):
        build_representer({'class': 'SegDetectorRepresenter', 'dir_path': 'x'}, 'm.onnx')


def test_a_checkpoint_still_needs_the_experiment(exported, tmp_path, monkeypatch, capsys):
    from inference.detector import TextDetector
    with pytest.raises(ValueError, match='a checkpoint needs its experiment YAML'):
        TextDetector(checkpoint=exported['ckpt'])
    monkeypatch.chdir(REPO_ROOT)
    assert demo.main(['--resume', exported['ckpt'], '--image_path', exported['images'][0], '--result_dir',
                      str(tmp_path / 'res')]) == 2
    assert 'needs its experiment YAML' in capsys.readouterr().err
    assert demo.main(['--onnx', exported['onnx'], '--opt', 'structure.representer.thresh=0.4', '--image_path',
                      exported['images'][0], '--result_dir', str(tmp_path / 'res')]) == 2
    assert '--opt: needs the experiment YAML' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'res')


# ------------------------------------------------------------------ machine-readable output


def test_to_dict_is_plain_json_and_equals_lines(exported):
    from inference.detector import TextDetector
    for polygon in (False, True):
        result = TextDetector(onnx=exported['onnx'], polygon=polygon).detect(exported['images'][0])
        data = result.to_dict()
        assert json.loads(json.dumps(data)) == data  # plain types only: json.dumps refuses NumPy scalars
        assert data['source'] == exported['images'][0] and data['tiles'] == 1 and data['capped'] is False
        assert data['image_size'] == list(result.image_size) and data['input_size'] == list(result.input_size)
        assert data['scale'] == result.scale and len(data['detections']) == len(result) > 0
        lines = [','.join(str(value) for point in item['points'] for value in point) + f",{item['score']:.6f}"
                 for item in data['detections']]
        assert lines == result.lines()


def test_demo_json_files_beside_the_text_files(exported, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    images = os.path.join(exported['data'], 'test_images')
    assert demo.main(['--onnx', exported['onnx'], '--image_path', images, '--json', '--result_dir',
                      str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path)) == sorted([f'img_{i}.{kind}' for i in (1, 2, 3) for kind in ('json', 'txt')])
    for index in (1, 2, 3):
        data = json.loads((tmp_path / f'img_{index}.json').read_text())
        assert data['source'] == os.path.join(images, f'img_{index}.jpg')
        rows = [[str(v) for point in item['points'] for v in point] + [f"{item['score']:.6f}"]
                for item in data['detections']]
        assert rows == read_rows(tmp_path / f'img_{index}.txt')
    # the JSON outputs take part in the checks that no output replaces an input or another output
    assert demo.output_paths('x', 'out', False, False, True)['json'] == os.path.join('out', 'x.json')
    with pytest.raises(ValueError, match='would overwrite the input image'):
        demo.check_no_input_overwritten([str(tmp_path / 'img_1.json')], {str(tmp_path / 'img_1.json'): 'img_1'},
                                        str(tmp_path), False, False, True)


def test_demo_never_replaces_files_it_did_not_write(exported, tmp_path, monkeypatch, capsys):
    """labelme keeps <stem>.json beside each image; ground truth and photos may share an output's name: demo.py
    refuses, before any work, to write over an existing file that is not an earlier result of its own."""
    import shutil
    monkeypatch.chdir(REPO_ROOT)
    images = os.path.join(exported['data'], 'test_images')
    labels = tmp_path / 'my_labels' / 'test'
    labels.mkdir(parents=True)
    for index in (1, 2, 3):
        shutil.copyfile(os.path.join(images, f'img_{index}.jpg'), labels / f'img_{index}.jpg')
        (labels / f'img_{index}.json').write_text(json.dumps({
            'version': '5.2.1', 'flags': {}, 'imagePath': f'img_{index}.jpg', 'imageHeight': 128, 'imageWidth': 128,
            'shapes': [{'label': 'text', 'points': [[1, 2], [30, 2], [30, 9], [1, 9]], 'shape_type': 'polygon'}]}))
    ground_truth = tmp_path / 'gt'
    ground_truth.mkdir()
    (ground_truth / 'img_1.txt').write_text('1,2,30,2,30,9,1,9\n')  # coordinates without demo's score column
    (ground_truth / 'img_2.txt').write_text('1,2,30,2,30,9,1,9,###\n')
    photos = tmp_path / 'photos'
    photos.mkdir()
    shutil.copyfile(os.path.join(images, 'img_2.jpg'), photos / 'img_1.jpg')  # not an input of the run below
    snapshot = {path: path.read_bytes() for folder in (labels, ground_truth, photos) for path in folder.iterdir()}
    from inference.detector import TextDetector
    built: list = []
    real_init = TextDetector.__init__

    def spy(self, *args, **kwargs):
        built.append(1)
        return real_init(self, *args, **kwargs)
    monkeypatch.setattr(TextDetector, '__init__', spy)
    for image_path, result_dir, extra, culprit in (
            (images, labels, ['--json'], 'img_1.json'),       # labelme annotations in another folder
            (str(labels), labels, ['--json'], 'img_1.json'),  # ... or beside the images
            (images, ground_truth, [], 'img_1.txt'),           # ground truth without scores
            (os.path.join(images, 'img_2.jpg'), ground_truth, [], 'img_2.txt'),  # ICDAR ground truth
            (images, photos, ['--visualize'], 'img_1.jpg')):  # a photo where a drawing would go
        assert demo.main(['--onnx', exported['onnx'], '--image_path', image_path, '--result_dir', str(result_dir),
                          *extra]) == 2
        error = capsys.readouterr().err
        assert f'{os.path.join(str(result_dir), culprit)} exists and is not an earlier result of demo.py' in error
    assert built == []  # refused before any work
    assert {path: path.read_bytes() for folder in (labels, ground_truth, photos)
            for path in folder.iterdir()} == snapshot  # nothing written, nothing replaced
    # demo.py's own earlier results are replaced as before
    out = tmp_path / 'out'
    for _ in range(2):
        assert demo.main(['--onnx', exported['onnx'], '--image_path', images, '--result_dir', str(out), '--json',
                          '--visualize', '--heatmap']) == 0
    assert json.loads((out / 'img_1.json').read_text())['producer'] == 'dbnet demo'
    assert demo.is_demo_text(str(out / 'img_1.txt')) and demo.is_demo_json(str(out / 'img_1.json'))


def test_demo_batch_size_gives_the_batch_1_detections(exported, tmp_path, monkeypatch):
    import cv2
    from inference.runners import OnnxRunner
    monkeypatch.chdir(REPO_ROOT)
    folder = tmp_path / 'same_size'
    folder.mkdir()
    image = cv2.imread(exported['images'][0])
    for index, variant in enumerate((image, image[:, ::-1], image[::-1])):  # three images of one size
        cv2.imwrite(str(folder / f'page_{index}.png'), np.ascontiguousarray(variant))
    batches: list = []
    real_call = OnnxRunner.__call__

    def counting(self, images):
        batches.append(images.shape[0])
        return real_call(self, images)
    monkeypatch.setattr(OnnxRunner, '__call__', counting)
    assert demo.main(['--onnx', exported['onnx'], '--image_path', str(folder), '--result_dir',
                      str(tmp_path / 'one')]) == 0
    assert batches == [1, 1, 1]
    batches.clear()
    assert demo.main(['--onnx', exported['onnx'], '--image_path', str(folder), '--batch_size', '2', '--workers', '2',
                      '--result_dir', str(tmp_path / 'two')]) == 0
    assert batches == [2, 1]
    detections = 0
    for index in range(3):
        single, batched = (read_rows(tmp_path / run / f'page_{index}.txt') for run in ('one', 'two'))
        # docs/inference.md: the batch-1 detections up to the backend's rounding (maps within ~4e-6)
        assert len(single) == len(batched)
        for a, b in zip(single, batched):
            assert np.abs(np.array(a[:-1], int) - np.array(b[:-1], int)).max() <= 1
            assert abs(float(a[-1]) - float(b[-1])) < 1e-4
        detections += len(single)
    assert detections > 0
    assert demo.main(['--onnx', exported['onnx'], '--image_path', str(folder), '--batch_size', '0']) == 2
