"""Checkpoint compatibility: the original's key names and shapes, strict errors, prefixes, safe files."""
import warnings

import pytest
import torch

from structure.model import SegDetectorModel
from structure.weights import StateDictMismatch, load_model_file, load_model_state
from tests.model_helpers import random_state, reference_shapes

warnings.filterwarnings('ignore', message='assets.ops.dcn', category=RuntimeWarning)
IGNORED = ('model.module.backbone.fc.', 'model.module.backbone.smooth.')


def original_model(depth):
    decoder_args = dict(adaptive=True, k=50)
    if depth == 50:
        decoder_args['in_channels'] = [256, 512, 1024, 2048]
    return SegDetectorModel(f'deformable_resnet{depth}', 'SegDetector', decoder_args=decoder_args)


@pytest.fixture(scope='module')
def resnet18_model():
    return original_model(18)


@pytest.mark.parametrize('depth', [18, 50])
def test_model_keys_and_shapes_are_the_originals(depth, resnet18_model):
    shapes = reference_shapes(depth)
    model = resnet18_model if depth == 18 else original_model(50)
    own = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    expected = {key: shape for key, shape in shapes.items() if not key.startswith(IGNORED)}
    assert own == expected
    state = random_state(shapes, seed=depth)
    report = load_model_state(model, state)
    assert sorted(report.ignored) == sorted(k for k in shapes if k.startswith(IGNORED))
    assert not report.missing and not report.unexpected and not report.mismatched
    loaded = model.state_dict()
    for key in expected:
        assert torch.equal(loaded[key], state[key]), key


def test_missing_key_is_named(resnet18_model):
    state = random_state(reference_shapes(18))
    del state['model.module.decoder.thresh.6.bias']
    with pytest.raises(StateDictMismatch, match=r'missing keys \(1\):\n +model\.module\.decoder\.thresh\.6\.bias'):
        load_model_state(resnet18_model, state)


def test_unexpected_key_is_named(resnet18_model):
    state = random_state(reference_shapes(18))
    state['model.module.decoder.extra.weight'] = torch.zeros(3)
    with pytest.raises(StateDictMismatch, match=r'unexpected keys \(1\):\n +model\.module\.decoder\.extra\.weight'):
        load_model_state(resnet18_model, state)


def test_shape_mismatch_names_key_and_both_shapes(resnet18_model):
    state = random_state(reference_shapes(18))
    state['model.module.decoder.in5.weight'] = torch.zeros(256, 2048, 1, 1)
    with pytest.raises(StateDictMismatch, match=r'model\.module\.decoder\.in5\.weight: checkpoint '
                                                r'\(256, 2048, 1, 1\), model \(256, 512, 1, 1\)'):
        load_model_state(resnet18_model, state)


def test_all_problems_reported_together_and_non_strict_loads_the_rest(resnet18_model):
    state = random_state(reference_shapes(18), seed=7)
    del state['model.module.backbone.layer2.0.conv2_offset.bias']
    state['model.module.backbone.layer9.weight'] = torch.zeros(1)
    state['model.module.decoder.out2.weight'] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(StateDictMismatch) as error:
        load_model_state(resnet18_model, state)
    message = str(error.value)
    for text in ('missing keys', 'layer2.0.conv2_offset.bias', 'unexpected keys', 'layer9.weight',
                 'shape mismatches', 'decoder.out2.weight'):
        assert text in message
    report = load_model_state(resnet18_model, state, strict=False)
    assert report.missing == ['model.module.backbone.layer2.0.conv2_offset.bias']
    assert torch.equal(resnet18_model.state_dict()['model.module.decoder.in2.weight'],
                       state['model.module.decoder.in2.weight'])


@pytest.mark.parametrize('prefix_change', ['dataparallel_outside', 'bare_detector', 'checkpoint_dict'])
def test_prefix_variants_and_checkpoint_dicts_load(prefix_change, resnet18_model):
    state = random_state(reference_shapes(18), seed=3)
    if prefix_change == 'dataparallel_outside':
        given = {'module.' + key: value for key, value in state.items()}
    elif prefix_change == 'bare_detector':
        given = {key[len('model.module.'):]: value for key, value in state.items()}
    else:
        given = {'model': state, 'epoch': 3, 'iter': 10}
    load_model_state(resnet18_model, given)
    loaded = resnet18_model.state_dict()
    assert torch.equal(loaded['model.module.backbone.layer4.1.conv2.weight'],
                       state['model.module.backbone.layer4.1.conv2.weight'])


def test_two_keys_for_one_parameter_are_an_error(resnet18_model):
    state = random_state(reference_shapes(18))
    state['module.model.module.backbone.conv1.weight'] = state['model.module.backbone.conv1.weight']
    with pytest.raises(StateDictMismatch, match='both map to model key .*backbone.conv1.weight'):
        load_model_state(resnet18_model, state)


class Payload:
    pass


def test_checkpoint_files_load_with_weights_only(tmp_path, resnet18_model):
    state = random_state(reference_shapes(18), seed=11)
    path = tmp_path / 'final.pth'
    torch.save({'model': state}, path)
    load_model_file(resnet18_model, path)
    assert torch.equal(resnet18_model.state_dict()['model.module.decoder.binarize.6.bias'],
                       state['model.module.decoder.binarize.6.bias'])
    unsafe = tmp_path / 'unsafe.pth'
    torch.save({'model': state, 'payload': Payload()}, unsafe)
    with pytest.raises(ValueError, match=r'unsafe\.pth: not a PyTorch checkpoint \(.*Payload') as raised:
        load_model_file(resnet18_model, unsafe)
    assert 'weights_only=False' not in str(raised.value)
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        load_model_file(resnet18_model, tmp_path / 'absent.pth')
    broken = tmp_path / 'broken.pth'
    del state['model.module.decoder.in3.weight']
    torch.save(state, broken)
    with pytest.raises(StateDictMismatch, match=r'broken\.pth: .*\n(.*\n)*.*decoder\.in3\.weight'):
        load_model_file(resnet18_model, broken)
