"""``mobilenet_v3_large``: the original code base's MobileNetV3-Large, key for key, and its forward.

Expected keys and shapes come from the original's checkpoint listing
(tests/fixtures/reference/original_state_dict_mobilenet_v3_large.tsv); the forward is checked
against a second, functional formulation written here from Howard et al. 2019 (Table 1, h-swish,
h-sigmoid) and the original's block layout (SE between the depthwise BN and the non-linearity).
"""
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

import backbones
from backbones.mobilenetv3_original import MobileNetV3Large, SqueezeExcite
from concern.config import get_path, load_config
from experiment import Experiment
from structure.builder import Builder
from structure.model import SegDetectorModel
from structure.weights import StateDictMismatch, load_model_state
from tests.model_helpers import REPO_ROOT, random_state, reference_shapes_named, synthetic_batch

warnings.filterwarnings('ignore', message='assets.ops.dcn', category=RuntimeWarning)
EXPERIMENT = 'experiments/seg_detector/totaltext_mobilenet_v3_large_thre.yaml'
REFERENCE = 'original_state_dict_mobilenet_v3_large.tsv'

# Howard et al. 2019, Table 1 (MobileNetV3-Large): kernel, expansion, out, SE, h-swish, stride.
TABLE_1 = [
    (3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1), (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1),
]


@pytest.fixture(scope='module')
def experiment_model():
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        builder = get_path(load_config(EXPERIMENT), 'structure.builder')
    finally:
        os.chdir(cwd)
    return Builder(builder['model'], builder['model_args']).build()


def test_experiment_model_has_the_originals_keys_and_shapes_in_order(experiment_model):
    reference = reference_shapes_named(REFERENCE)
    assert len(reference) == 340
    own = [(key, tuple(value.shape)) for key, value in experiment_model.state_dict().items()]
    assert own == list(reference.items())   # backbone (302 keys) and decoder (38 keys), in order
    assert experiment_model.backbone.out_channels == [24, 40, 112, 960]


def test_original_state_dict_loads_strictly(experiment_model):
    reference = reference_shapes_named(REFERENCE)
    state = random_state(reference, seed=5)
    report = load_model_state(experiment_model, state)
    assert not report.missing and not report.unexpected and not report.mismatched and not report.ignored
    loaded = experiment_model.state_dict()
    for key in reference:
        assert torch.equal(loaded[key], state[key]), key


def test_torchvision_layout_does_not_fit_the_originals_checkpoint():
    # The mismatch that motivated this backbone: 296 missing and 290 unexpected keys.
    state = random_state(reference_shapes_named(REFERENCE))
    model = SegDetectorModel('mobilenet_v3_large_torchvision', 'SegDetector', decoder_args=dict(adaptive=True, k=50))
    with pytest.raises(StateDictMismatch) as error:
        load_model_state(model, state)
    assert 'missing keys (296)' in str(error.value) and 'unexpected keys (290)' in str(error.value)


def test_stage_shapes_and_strides_worked_out_by_hand():
    model = MobileNetV3Large().eval()
    seen = []
    for index in range(17):
        model.features[index].register_forward_hook(lambda m, a, out: seen.append(tuple(out.shape)))
    with torch.no_grad():
        c2, c3, c4, c5 = model(torch.zeros(1, 3, 128, 192))
    # Stem stride 2 (64x96); Table 1's stride-2 rows are blocks 2, 4, 7 and 13.
    s2, s4, s8, s16, s32 = (64, 96), (32, 48), (16, 24), (8, 12), (4, 6)
    assert seen == [(1, 16, *s2), (1, 16, *s2), (1, 24, *s4), (1, 24, *s4), (1, 40, *s8), (1, 40, *s8),
                    (1, 40, *s8), (1, 80, *s16), (1, 80, *s16), (1, 80, *s16), (1, 80, *s16),
                    (1, 112, *s16), (1, 112, *s16), (1, 160, *s32), (1, 160, *s32), (1, 160, *s32),
                    (1, 960, *s32)]
    assert [tuple(c.shape) for c in (c2, c3, c4, c5)] == [
        (1, 24, 32, 48), (1, 40, 16, 24), (1, 112, 8, 12), (1, 960, 4, 6)]
    # Odd sizes: every stride-2 layer (3x3 pad 1 or 5x5 pad 2) gives ceil(n / 2).
    with torch.no_grad():
        shapes = [tuple(c.shape[2:]) for c in model(torch.zeros(1, 3, 100, 130))]
    assert shapes == [(25, 33), (13, 17), (7, 9), (4, 5)]


def test_hswish_and_hsigmoid_values_at_hand_worked_points():
    model = MobileNetV3Large()
    x = torch.tensor([-4.0, -3.0, -1.5, 0.0, 1.5, 3.0, 4.0])
    hsigmoid = torch.tensor([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0])          # ReLU6(x + 3) / 6
    hswish = torch.tensor([0.0, 0.0, -0.375, 0.0, 1.125, 3.0, 4.0])        # x * ReLU6(x + 3) / 6
    relu = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.5, 3.0, 4.0])
    torch.testing.assert_close(model.features[0][2](x), hswish)          # stem
    torch.testing.assert_close(model.features[16][2](x), hswish)         # last 1x1 conv
    for index, (_, _, _, se, uses_hswish, _) in enumerate(TABLE_1, 1):
        block = model.features[index].conv
        for position in (2, 6):
            torch.testing.assert_close(block[position](x.clone()), hswish if uses_hswish else relu)
        if se:
            torch.testing.assert_close(block[5].fc[3](x), hsigmoid)
        else:
            assert not list(block[5].parameters())


def test_squeeze_excite_with_hand_set_weights():
    se = SqueezeExcite(8)            # reduction 4: 8 -> 2 -> 8
    assert se.fc[0].weight.shape == (2, 8) and se.fc[2].weight.shape == (8, 2)
    with torch.no_grad():
        se.fc[0].weight.zero_()
        se.fc[0].weight[0, 0] = 1.0  # hidden 0 = mean of channel 0
        se.fc[0].weight[1, 1] = 1.0  # hidden 1 = mean of channel 1 (negative: ReLU gives 0)
        se.fc[2].weight.zero_()
        se.fc[2].weight[:, 0] = torch.arange(8) * 0.5 - 1.5
    means = torch.tensor([2.0, -1.0, 0.3, 0.0, 5.0, -2.0, 1.0, 0.7])
    checkerboard = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2 * 2.0 - 1.0   # mean 0
    x = means[None, :, None, None] + checkerboard
    # hidden = relu([2, -1]) = [2, 0]; logit_c = 2 * (0.5 c - 1.5) = c - 3; h-sigmoid(c - 3) = min(c, 6) / 6.
    scale = torch.tensor([0, 1, 2, 3, 4, 5, 6, 6], dtype=torch.float32) / 6
    torch.testing.assert_close(se(x), x * scale[None, :, None, None])


def hswish(x):
    return x * torch.clamp(x + 3, 0, 6) / 6


def batch_norm(x, state, prefix):
    return F.batch_norm(x, state[f'{prefix}.running_mean'], state[f'{prefix}.running_var'],
                        state[f'{prefix}.weight'], state[f'{prefix}.bias'], training=False, eps=1e-5)


def block_by_formula(x, state, index, se_after_activation=False):
    """Row ``index - 1`` of Table 1 as the original lays it out, from the state dict alone."""
    kernel, expansion, out, se, uses_hswish, stride = TABLE_1[index - 1]
    prefix = f'features.{index}.conv'
    activation = hswish if uses_hswish else F.relu
    y = activation(batch_norm(F.conv2d(x, state[f'{prefix}.0.weight']), state, f'{prefix}.1'))
    y = F.conv2d(y, state[f'{prefix}.3.weight'], stride=stride, padding=kernel // 2, groups=expansion)
    y = batch_norm(y, state, f'{prefix}.4')

    def excite(z):
        pooled = z.mean(dim=(2, 3))
        hidden = F.relu(pooled @ state[f'{prefix}.5.fc.0.weight'].T)
        scale = torch.clamp(hidden @ state[f'{prefix}.5.fc.2.weight'].T + 3, 0, 6) / 6
        return z * scale[:, :, None, None]

    if se and not se_after_activation:
        y = excite(y)
    y = activation(y)
    if se and se_after_activation:
        y = excite(y)
    y = batch_norm(F.conv2d(y, state[f'{prefix}.7.weight']), state, f'{prefix}.8')
    assert y.shape[1] == out
    return x + y if stride == 1 and x.shape[1] == out else y


def assert_close_relative(actual, expected, rtol=1e-4):
    """Equal up to float32 rounding, measured against the largest magnitude of ``expected``."""
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max() <= rtol * expected.abs().max()


def randomized_model(seed):
    """Original init, plus non-trivial BN statistics and SE weights."""
    torch.manual_seed(seed)
    model = MobileNetV3Large()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(1 + 0.2 * torch.randn(n, generator=generator))
                module.bias.copy_(0.2 * torch.randn(n, generator=generator))
            elif isinstance(module, torch.nn.Linear) and '.fc.' in name:
                shape = module.weight.shape
                module.weight.copy_(torch.randn(shape, generator=generator) / shape[1] ** 0.5)
    return model.eval()


def test_blocks_match_a_second_formulation_and_se_sits_before_the_nonlinearity():
    model = randomized_model(0)
    state = model.state_dict()
    for index in (1, 4, 8, 14):   # ReLU residual; ReLU+SE stride 2; h-swish residual; h-swish+SE residual
        kernel, expansion, out, se, _, stride = TABLE_1[index - 1]
        in_channels = TABLE_1[index - 2][2] if index > 1 else 16
        assert state[f'features.{index}.conv.3.weight'].shape == (expansion, 1, kernel, kernel)
        x = torch.randn(2, in_channels, 10, 12)
        with torch.no_grad():
            assert_close_relative(model.features[index](x), block_by_formula(x, state, index))
    # With h-swish the SE position matters (with ReLU it would not: relu(s x) = s relu(x) for s >= 0).
    x = torch.randn(2, 160, 10, 12)
    with torch.no_grad():
        own, after = model.features[14](x), block_by_formula(x, state, 14, se_after_activation=True)
    assert (own - after).abs().max() > 1e-3 * own.abs().max()   # float32 rounding is ~1e-6


def test_whole_backbone_matches_the_second_formulation():
    model = randomized_model(1)
    state = model.state_dict()
    x = torch.randn(1, 3, 64, 96)
    y = hswish(batch_norm(F.conv2d(x, state['features.0.0.weight'], stride=2, padding=1), state, 'features.0.1'))
    outputs = []
    for index in range(1, 16):
        y = block_by_formula(y, state, index)
        if index in (3, 6, 12):
            outputs.append(y)
    outputs.append(hswish(batch_norm(F.conv2d(y, state['features.16.0.weight']), state, 'features.16.1')))
    with torch.no_grad():
        features = model(x)
    assert len(features) == 4
    for own, expected in zip(features, outputs):
        assert_close_relative(own, expected)


def test_imagenet_head_is_kept_for_the_keys_but_never_run_nor_trained():
    torch.manual_seed(2)
    model = SegDetectorModel('mobilenet_v3_large', 'SegDetector', decoder_args=dict(adaptive=True, k=50))
    head = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert head == ['model.module.backbone.features.18.weight', 'model.module.backbone.features.18.bias',
                    'model.module.backbone.classifier.1.weight', 'model.module.backbone.classifier.1.bias']
    image = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        before = model(image)
        for name, parameter in model.named_parameters():
            if name in head:
                parameter.fill_(float('nan'))
        assert torch.equal(model(image), before)
    # Every trainable parameter gets a gradient (what DistributedDataParallel requires by default).
    model.train()
    loss, _, _ = model(synthetic_batch(2, 64, 64))
    loss.backward()
    assert [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_experiment_compiles_and_the_detector_gives_a_probability_map(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    config = load_config(EXPERIMENT)
    # The original's values (MhLiao/DB experiments/seg_detector/totaltext_mobilenet_v3_large_thre.yaml).
    assert get_path(config, 'structure.builder.model_args') == {
        'backbone': 'mobilenet_v3_large', 'decoder': 'SegDetector', 'loss_class': 'L1BalanceCELoss',
        'decoder_args': {'adaptive': True, 'in_channels': [24, 40, 112, 960], 'k': 50}}
    assert get_path(config, 'train.scheduler.optimizer_args') == {'lr': 0.001, 'momentum': 0.9,
                                                                    'weight_decay': 0.0005}
    assert get_path(config, 'train.epochs') == 100 and get_path(config, 'train.data_loader.batch_size') == 8
    experiment = Experiment.build(config, ['structure', 'logger'])
    assert experiment.structure.representer.max_candidates == 1000
    model = experiment.structure.builder.build().eval()
    assert model.decoder.k == 50 and hasattr(model.decoder, 'thresh')
    with torch.no_grad():
        probability = model(torch.randn(1, 3, 96, 128))
    assert probability.shape == (1, 1, 96, 128)
    assert probability.min() >= 0 and probability.max() <= 1


def test_pretrained_is_a_file_in_the_originals_layout(tmp_path):
    torch.manual_seed(3)
    source = MobileNetV3Large()
    path = tmp_path / 'mobilenetv3_large.pth.tar'
    torch.save({'state_dict': source.state_dict()}, path)
    model = backbones.mobilenet_v3_large(pretrained=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(ValueError, match='no known download address.*path'):
        backbones.mobilenet_v3_large(pretrained=True, allow_download=True)
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        backbones.mobilenet_v3_large(pretrained=str(tmp_path / 'absent.pth'))
    other = tmp_path / 'torchvision.pth'
    torch.save(backbones.mobilenet_v3_large_torchvision().state_dict(), other)
    with pytest.raises(ValueError, match=r'missing keys \(\d+\):\n +features\.1\.conv\.0\.weight'):
        backbones.mobilenet_v3_large(pretrained=str(other))


def test_demo_py_runs_an_original_mobilenet_checkpoint_with_the_shipped_experiment(tmp_path, monkeypatch, capsys):
    # A file shaped like the original's checkpoint (the reference key list) through demo.py's own loading path.
    import cv2
    import numpy as np
    import demo
    monkeypatch.chdir(REPO_ROOT)
    checkpoint = str(tmp_path / 'totaltext_mobilenet_v3_large.pth')
    torch.save(random_state(reference_shapes_named(REFERENCE), seed=7), checkpoint)
    image = str(tmp_path / 'photo.jpg')
    cv2.imwrite(image, np.full((96, 128, 3), 90, np.uint8))
    code = demo.main([EXPERIMENT, '--resume', checkpoint, '--device', 'cpu', '--image_path', image,
                      '--image_short_side', '64', '--result_dir', str(tmp_path / 'out')])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert os.listdir(tmp_path / 'out') == ['photo.txt']
