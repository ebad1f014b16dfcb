"""The offset mode of a deformable ResNet-50 is a property of the weights (docs/model.md, "offset_compat").

A hand-made checkpoint whose offset convolutions are not zero makes the two modes compute different maps.
Loaded through the entry points' own path (``structure.weights.load_trained_model``, demo.py, eval.py,
train.py) with the shipped experiment files, which leave the mode to the weights:
- a plain state dict (the original code base's layout, no project metadata) runs as the original did;
- this project's full checkpoints run with the mode they record;
- an explicit setting in the experiment contradicting a checkpoint's record is an error naming both.
The expected maps come from models built with the mode set explicitly in the constructor.
"""
from __future__ import annotations

import os
import re
import warnings

import cv2
import numpy as np
import pytest
import torch

import demo
import eval as eval_script
import train
from concern.config import load_config
from experiment import Experiment
from inference_helpers import REPO_ROOT, write_experiment
from structure.model import SegDetectorModel
from structure.weights import OffsetCompatConflict, decide_offset_compat, offset_compat_of
from training.checkpoint import Checkpoint, build_checkpoint

warnings.filterwarnings('ignore', message='assets.ops.dcn', category=RuntimeWarning)

IC15_R50 = os.path.join(REPO_ROOT, 'experiments', 'seg_detector', 'ic15_resnet50_deform_thre.yaml')
ASF_R50 = os.path.join(REPO_ROOT, 'experiments', 'ASF', 'td500_resnet50_deform_thre_asf.yaml')
R50_CHANNELS = [256, 512, 1024, 2048]


def r50_model(offset_compat: str = 'auto', decoder: str = 'SegDetector', **decoder_args) -> SegDetectorModel:
    return SegDetectorModel('deformable_resnet50', decoder, backbone_args={'offset_compat': offset_compat},
                            decoder_args={'adaptive': True, 'k': 50, 'in_channels': R50_CHANNELS,
                                          **decoder_args}).eval()


def hand_made_weights(model: SegDetectorModel, seed: int = 0):
    """The model's state dict with random offset/mask convolutions (zero by default, which hides the mode)."""
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    for key, value in state.items():
        if '.conv2_offset.' in key:
            state[key] = torch.randn(value.shape, generator=generator) * 0.1
    return state


@pytest.fixture(scope='module')
def weights(module_tmp):
    """A plain state dict (original layout) and the maps the two modes give on one input."""
    tmp = module_tmp('offset_compat')
    torch.manual_seed(0)
    state = hand_made_weights(r50_model())
    plain = str(tmp / 'original_r50.pth')
    torch.save(state, plain)
    torch.manual_seed(1)
    image = torch.randn(1, 3, 128, 192)
    maps = {}
    for mode in ('original', 'corrected'):
        model = r50_model(mode)
        model.load_state_dict(state)
        with torch.no_grad():
            maps[mode] = model(image, training=False)
    # The premise: this checkpoint's output depends on the mode.
    assert (maps['original'] - maps['corrected']).abs().max() > 0.05
    return {'tmp': tmp, 'state': state, 'plain': plain, 'image': image, 'maps': maps}


def shipped_builder(path: str, *overrides: str):
    from concern.config import apply_overrides
    config = load_config(path)
    apply_overrides(config, list(overrides))
    return Experiment.build(config, ('structure',)).structure.builder


def run(model, image):
    with torch.no_grad():
        return model(image, training=False)


def full_checkpoint(state, recorded, path, config=None):
    torch.save(build_checkpoint(state, None, None, 1, 0, 10, [], None, config, 0, offset_compat=recorded), path)
    return str(path)


def test_a_plain_state_dict_runs_as_the_original_through_the_shipped_experiment(weights, monkeypatch):
    from structure.weights import load_trained_model
    monkeypatch.chdir(REPO_ROOT)
    messages = []
    model = load_trained_model(shipped_builder(IC15_R50), weights['plain'], 'cpu', log=messages.append)
    assert offset_compat_of(model) == 'original'
    torch.testing.assert_close(run(model, weights['image']), weights['maps']['original'], rtol=1e-4, atol=1e-5)
    assert len(messages) == 2 and 'offset_compat original' in messages[0] and 'plain state dict' in messages[0]
    assert 'no checksum' in messages[1]  # the original's files carry none: a note, not an error


def test_full_checkpoints_run_with_the_mode_they_record(weights, monkeypatch):
    from structure.weights import load_trained_model
    monkeypatch.chdir(REPO_ROOT)
    for recorded in ('corrected', 'original'):
        path = full_checkpoint(weights['state'], recorded, weights['tmp'] / f'full_{recorded}.pth')
        messages = []
        model = load_trained_model(shipped_builder(IC15_R50), path, 'cpu', log=messages.append)
        assert offset_compat_of(model) == recorded
        torch.testing.assert_close(run(model, weights['image']), weights['maps'][recorded], rtol=1e-4, atol=1e-5)
        assert f'offset_compat {recorded}' in messages[0] and 'recorded in' in messages[0]


def test_checkpoints_written_before_the_record_follow_their_config():
    model = r50_model()
    older = {'format': 'dbnet-checkpoint', 'model': {}, 'config': {'structure': {'builder': {'model_args': {
        'backbone_args': {'offset_compat': 'original'}}}}}}
    assert decide_offset_compat(model, older).mode == 'original'
    older['config'] = {'structure': {'builder': {'model_args': {'backbone_args': {'offset_compat': None}}}}}
    assert decide_offset_compat(model, older).mode == 'corrected'
    older['config'] = None
    assert decide_offset_compat(model, older).mode == 'corrected'


def test_an_explicit_setting_contradicting_the_checkpoint_is_an_error_naming_both(weights, monkeypatch):
    from structure.weights import load_trained_model
    monkeypatch.chdir(REPO_ROOT)
    path = full_checkpoint(weights['state'], 'original', weights['tmp'] / 'full_original_conflict.pth')
    builder = shipped_builder(IC15_R50, 'structure.builder.model_args.backbone_args.offset_compat=corrected')
    with pytest.raises(OffsetCompatConflict) as raised:
        load_trained_model(builder, path, 'cpu')
    message = str(raised.value)
    assert 'offset_compat: corrected' in message and 'offset_compat: original' in message and path in message


def test_an_explicit_setting_decides_for_a_plain_state_dict(weights, monkeypatch):
    # A plain file records nothing, so the experiment's explicit word is taken (and said).
    from structure.weights import load_trained_model
    monkeypatch.chdir(REPO_ROOT)
    builder = shipped_builder(IC15_R50, 'structure.builder.model_args.backbone_args.offset_compat=corrected')
    messages = []
    model = load_trained_model(builder, weights['plain'], 'cpu', log=messages.append)
    torch.testing.assert_close(run(model, weights['image']), weights['maps']['corrected'], rtol=1e-4, atol=1e-5)
    assert 'set by the experiment' in messages[0]


def test_dbnet_pp_experiment_follows_the_weights_too(monkeypatch, tmp_path):
    from structure.weights import load_trained_model
    monkeypatch.chdir(REPO_ROOT)
    builder = shipped_builder(ASF_R50)
    reference = builder.build().eval()
    state = hand_made_weights(reference, seed=3)
    path = str(tmp_path / 'asf.pth')
    torch.save(state, path)
    model = load_trained_model(builder, path, 'cpu', log=lambda message: None)
    assert offset_compat_of(model) == 'original'
    explicit = shipped_builder(ASF_R50, 'structure.builder.model_args.backbone_args.offset_compat=original')
    expected = explicit.build().eval()
    expected.load_state_dict(state)
    image = torch.randn(1, 3, 64, 96)
    torch.testing.assert_close(run(model, image), run(expected, image), rtol=1e-4, atol=1e-5)


def test_demo_py_with_the_shipped_experiment_says_which_mode_and_why(weights, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    image_path = str(tmp_path / 'photo.jpg')
    cv2.imwrite(image_path, np.full((96, 128, 3), 127, np.uint8))
    code = demo.main([IC15_R50, '--resume', weights['plain'], '--device', 'cpu', '--image_path', image_path,
                      '--image_short_side', '64', '--result_dir', str(tmp_path / 'out')])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err.count('offset_compat original') == 1 and 'plain state dict' in captured.err
    conflict = full_checkpoint(weights['state'], 'corrected', tmp_path / 'corrected.pth')
    code = demo.main([IC15_R50, '--resume', conflict, '--device', 'cpu', '--image_path', image_path,
                      '--result_dir', str(tmp_path / 'out2'),
                      '--opt', 'structure.builder.model_args.backbone_args.offset_compat=original'])
    captured = capsys.readouterr()
    assert code == 2 and 'offset_compat: original' in captured.err and 'offset_compat: corrected' in captured.err


def test_eval_py_scores_a_plain_checkpoint_with_the_original_mode(weights, tmp_path, monkeypatch, capsys):
    from data.synthetic import main as synthetic_main
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(eval_script, 'run_name', lambda args: str(tmp_path / 'run'))
    data_dir = str(tmp_path / 'data')
    synthetic_main(['--out', data_dir, '--train', '0', '--test', '2', '--seed', '0', '--size', '128',
                    '--fonts', 'builtin'])
    # Thresholds where the random model's map of the first test image gives a few regions: binarised at its 80th
    # percentile, boxes kept from its median.
    from inference.preprocess import prepare_image
    model = r50_model('original')
    model.load_state_dict(weights['state'])
    first = cv2.imread(os.path.join(data_dir, 'test_images', 'img_1.jpg'))
    prob = run(model, torch.from_numpy(prepare_image(first, (128, 192)))).flatten()
    thresh, box_thresh = (float(torch.quantile(prob, q)) for q in (0.8, 0.5))
    experiment_path = write_experiment(str(tmp_path), data_dir, 'deformable_resnet50', height=128, width=192,
                                       thresh=thresh, box_thresh=box_thresh)
    with open(experiment_path) as handle:  # give the file the key the shipped ResNet-50 experiments have
        text = handle.read()
    text = re.sub(r'( *)backbone: deformable_resnet50\n', r'\g<0>\1backbone_args: {offset_compat: auto}\n', text)
    with open(experiment_path, 'w') as handle:
        handle.write(text)
    result_dirs = {}
    for name, path in (('auto', weights['plain']),):
        result_dirs[name] = tmp_path / f'res_{name}'
        assert eval_script.main([experiment_path, '--resume', path, '--device', 'cpu',
                                 '--result_dir', str(result_dirs[name])]) == 0
    captured = capsys.readouterr()
    assert 'offset_compat original' in captured.err
    # The same evaluation with the mode set explicitly gives the same result files; 'corrected' does not.
    for mode in ('original', 'corrected'):
        result_dirs[mode] = tmp_path / f'res_{mode}'
        assert eval_script.main([experiment_path, '--resume', weights['plain'], '--device', 'cpu',
                                 '--result_dir', str(result_dirs[mode]), '--opt',
                                 f'structure.builder.model_args.backbone_args.offset_compat={mode}']) == 0

    def contents(directory):
        return {name: open(os.path.join(directory, name)).read() for name in sorted(os.listdir(directory))}
    assert sum(len(text) for text in contents(result_dirs['auto']).values()) > 0  # detections to compare
    assert contents(result_dirs['auto']) == contents(result_dirs['original'])
    assert contents(result_dirs['auto']) != contents(result_dirs['corrected'])


def test_fine_tuning_from_a_plain_checkpoint_keeps_the_original_mode(weights):
    model = r50_model()
    start = Checkpoint(resume=weights['plain']).restore(model)
    assert offset_compat_of(model) == 'original' and 'offset_compat original' in start.offset_compat_note
    scratch = r50_model()
    start = Checkpoint().restore(scratch)
    assert offset_compat_of(scratch) == 'corrected' and 'no checkpoint' in start.offset_compat_note


def test_train_py_fine_tunes_in_the_original_mode_and_records_it(weights, tmp_path, monkeypatch):
    from data.synthetic import main as synthetic_main
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(train, 'run_name', lambda args: str(tmp_path / 'run'))
    data_dir = str(tmp_path / 'data')
    synthetic_main(['--out', data_dir, '--train', '2', '--test', '0', '--seed', '0', '--size', '128',
                    '--fonts', 'builtin'])
    experiment = os.path.join('experiments', 'seg_detector', 'synthetic_resnet18_deform_thre.yaml')
    code = train.main([experiment, '--resume', weights['plain'], '--epochs', '1', '--batch_size', '2',
                       '--num_workers', '0', '--device', 'cpu', '--seed', '0', '--opt',
                       'structure.builder.model_args.backbone=deformable_resnet50',
                       f'structure.builder.model_args.decoder_args.in_channels={R50_CHANNELS}',
                       f'train.data_loader.dataset.data_dir=[{data_dir}]',
                       f'train.data_loader.dataset.data_list=[{data_dir}/train_list.txt]',
                       'train.data_loader.dataset.processes.1.size=[64,64]'])
    assert code == 0
    final = torch.load(str(tmp_path / 'run' / 'model' / 'final'), weights_only=True)
    assert final['offset_compat'] == 'original'
    log = open(os.path.join(str(tmp_path / 'run'), 'output.log')).read()
    assert 'offset_compat original' in log


def test_weights_without_offset_convolutions_are_not_presumed_original():
    # A partial load (strict=False) that brings no conv2_offset weights has nothing to read the original way.
    from structure.weights import load_model_state
    model = r50_model()
    decoder_only = {key: value for key, value in model.state_dict().items() if '.decoder.' in key}
    report = load_model_state(model, decoder_only, strict=False)
    assert offset_compat_of(model) == 'corrected' and 'no deformable offset' in report.offset_compat.reason
    load_model_state(model, {}, strict=False)
    assert offset_compat_of(model) == 'corrected'


def test_a_bad_recorded_mode_is_an_error_naming_the_file_before_loading(weights, tmp_path):
    from structure.weights import load_model_file
    path = full_checkpoint(weights['state'], 'bogus', tmp_path / 'bogus.pth')
    model = r50_model()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"bogus.pth: entry 'offset_compat' is 'bogus', expected 'corrected' or "
                                         r"'original'"):
        load_model_file(model, path)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_null_in_an_experiment_means_no_setting(weights):
    model = SegDetectorModel('deformable_resnet50', 'SegDetector', backbone_args={'offset_compat': None},
                             decoder_args={'adaptive': True, 'k': 50, 'in_channels': R50_CHANNELS})
    assert model.backbone.requested_offset_compat == 'auto'
    Checkpoint(resume=weights['plain']).restore(model)
    assert offset_compat_of(model) == 'original'


def test_train_and_eval_read_a_model_key_without_metadata_alike(weights, tmp_path):
    # {'model': state dict} with no format entry: plain weights for train.py's --resume as for eval.py.
    from structure.weights import load_trained_model
    path = str(tmp_path / 'wrapped.pth')
    torch.save({'model': weights['state']}, path)
    model = r50_model()
    start = Checkpoint(resume=path).restore(model)
    assert not start.full and offset_compat_of(model) == 'original'

    class Builder:
        model_args = {}

        def build(self):
            return r50_model()
    assert offset_compat_of(load_trained_model(Builder(), path, log=lambda message: None)) == 'original'
