"""Backbones: feature strides and channels, DCN stage selection, offset_compat, ImageNet weights."""
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import deform_conv2d

import backbones
from assets.ops.dcn import ModulatedDeformConv
from backbones.resnet import Bottleneck

warnings.filterwarnings('ignore', message='assets.ops.dcn', category=RuntimeWarning)

HEAVY = {'resnet34', 'resnet101', 'resnet152', 'deformable_resnet34', 'deformable_resnet101',
         'deformable_resnet152'}
EXPECTED_CHANNELS = {
    'resnet18': [64, 128, 256, 512], 'resnet34': [64, 128, 256, 512],
    'mobilenet_v3_large': [24, 40, 112, 960], 'mobilenet_v3_large_torchvision': [24, 40, 112, 960],
    'mobilenet_v3_small_torchvision': [16, 24, 48, 576],
}


def expected_channels(name):
    if 'mobilenet' in name:
        return EXPECTED_CHANNELS[name]
    depth = int(name.rsplit('resnet', 1)[1])
    return [64, 128, 256, 512] if depth < 50 else [256, 512, 1024, 2048]


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n
                                  for n in sorted(backbones.BACKBONES)])
def test_backbone_returns_four_maps_at_strides_4_to_32(name):
    torch.manual_seed(0)
    model = backbones.BACKBONES[name]()
    assert model.out_channels == expected_channels(name)
    with torch.no_grad():
        for mode, (height, width) in (('eval', (64, 64)), ('train', (96, 128))):
            model.train(mode == 'train')
            features = model(torch.randn(2, 3, height, width))
            assert [tuple(f.shape) for f in features] == [
                (2, c, height // s, width // s) for c, s in zip(model.out_channels, (4, 8, 16, 32))]


def dcn_layers(model):
    return [all(isinstance(block.conv2, ModulatedDeformConv) and hasattr(block, 'conv2_offset')
                for block in layer) for layer in (model.layer1, model.layer2, model.layer3, model.layer4)]


def test_stage_with_dcn_selects_stages():
    assert dcn_layers(backbones.resnet18()) == [False, False, False, False]
    assert dcn_layers(backbones.deformable_resnet18()) == [False, True, True, True]
    chosen = backbones.deformable_resnet18(stage_with_dcn=(True, False, True, False))
    assert dcn_layers(chosen) == [True, False, True, False]
    assert not any(hasattr(block, 'conv2_offset') for block in chosen.layer2)
    assert chosen.layer1[0].conv2_offset.out_channels == 27
    assert chosen.layer1[0].conv2.bias is None
    with pytest.raises(ValueError, match='4 entries'):
        backbones.deformable_resnet18(stage_with_dcn=(True, True))
    with pytest.raises(ValueError, match="offset_compat must be one of"):
        backbones.deformable_resnet50(offset_compat='yes')


def test_zero_offset_dcn_is_half_a_plain_convolution():
    # conv2_offset starts at zero: offsets 0 and mask sigmoid(0) = 0.5 everywhere.
    torch.manual_seed(0)
    model = backbones.deformable_resnet18().eval()
    block = model.layer2[0]
    seen = {}
    block.conv2.register_forward_hook(lambda module, args, output: seen.update(x=args[0], out=output))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
        plain = nn.functional.conv2d(seen['x'], block.conv2.weight, padding=1)
    torch.testing.assert_close(seen['out'], 0.5 * plain, rtol=1e-4, atol=1e-5)


def compat_block(offset_compat, bias):
    torch.manual_seed(1)
    downsample = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
    block = Bottleneck(8, 4, stride=2, downsample=downsample,
                       dcn=dict(modulated=True, deformable_groups=1, offset_compat=offset_compat))
    nn.init.zeros_(block.conv2_offset.weight)
    with torch.no_grad():
        block.conv2_offset.bias.copy_(bias)
    return block.eval()


def run_and_capture(block, x):
    seen = {}
    handle = block.conv2.register_forward_hook(
        lambda module, args, output: seen.update(x=args[0], offset=args[1], mask=args[2], out=output))
    with torch.no_grad():
        block(x)
    handle.remove()
    return seen


def test_offset_compat_original_reads_input_resolution_buffers():
    # 8x8 input, stride 2 -> 4x4 output. With zero weights, conv2_offset's output channel c is the
    # constant bias[c] over the 8x8 grid (64 values). The original op read the first 18*16 values of
    # the (18, 8, 8) offset buffer as (18, 4, 4): its channel c holds values 16c .. 16c+15, which lie
    # in input channel 16c // 64 = c // 4. Likewise mask channel j = sigmoid(bias[18 + j // 4]).
    bias = torch.arange(27, dtype=torch.float32) * 0.05 - 0.4
    x = torch.randn(1, 8, 8, 8)
    seen = run_and_capture(compat_block('original', bias), x)
    expected_offset = torch.stack([bias[c // 4].expand(4, 4) for c in range(18)]).unsqueeze(0)
    expected_mask = torch.stack([torch.sigmoid(bias[18 + j // 4]).expand(4, 4) for j in range(9)]).unsqueeze(0)
    torch.testing.assert_close(seen['offset'], expected_offset)
    torch.testing.assert_close(seen['mask'], expected_mask)
    block = compat_block('original', bias)
    reference = deform_conv2d(seen['x'], expected_offset, block.conv2.weight, stride=2, padding=1,
                              mask=expected_mask)
    torch.testing.assert_close(seen['out'], reference, rtol=1e-4, atol=1e-5)


def test_offset_compat_default_uses_the_block_stride():
    bias = torch.arange(27, dtype=torch.float32) * 0.05 - 0.4
    x = torch.randn(1, 8, 8, 8)
    seen = run_and_capture(compat_block(None, bias), x)
    expected_offset = torch.stack([bias[c].expand(4, 4) for c in range(18)]).unsqueeze(0)
    expected_mask = torch.stack([torch.sigmoid(bias[18 + j]).expand(4, 4) for j in range(9)]).unsqueeze(0)
    torch.testing.assert_close(seen['offset'], expected_offset)
    torch.testing.assert_close(seen['mask'], expected_mask)
    original = run_and_capture(compat_block('original', bias), x)
    assert not torch.allclose(seen['out'], original['out'])


def test_offset_compat_reads_each_image_own_buffer():
    torch.manual_seed(2)
    block = compat_block('original', torch.zeros(27))
    nn.init.normal_(block.conv2_offset.weight, std=0.1)
    x = torch.randn(2, 8, 7, 9)  # odd sizes: output 4x5
    both = run_and_capture(block, x)
    alone = run_and_capture(block, x[1:])
    assert both['offset'].shape == (2, 18, 4, 5) and both['mask'].shape == (2, 9, 4, 5)
    torch.testing.assert_close(both['offset'][1:], alone['offset'])
    torch.testing.assert_close(both['out'][1:], alone['out'], rtol=1e-4, atol=1e-5)
    full = block.conv2_offset(both['x'][1:])  # stride 1: (1, 27, 7, 9)
    torch.testing.assert_close(alone['offset'].flatten(), full[0, :18].flatten()[:18 * 20])


def test_offset_compat_leaves_basic_blocks_unchanged():
    torch.manual_seed(3)
    fixed = backbones.deformable_resnet18().eval()
    original = backbones.deformable_resnet18(offset_compat='original').eval()
    for model in (fixed, original):
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module.out_channels == 27:
                torch.manual_seed(4)
                nn.init.normal_(module.weight, std=0.01)
    original.load_state_dict(fixed.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(fixed(x), original(x)):
            torch.testing.assert_close(a, b)


def test_pretrained_from_a_local_torchvision_file(tmp_path):
    torch.manual_seed(5)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / 'resnet18.pth'
    torch.save(reference.state_dict(), path)
    model = backbones.deformable_resnet18(pretrained=str(path))
    torch.testing.assert_close(model.conv1.weight, reference.conv1.weight)
    torch.testing.assert_close(model.layer2[0].conv2.weight, reference.layer2[0].conv2.weight)
    torch.testing.assert_close(model.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    assert torch.count_nonzero(model.layer3[0].conv2_offset.weight) == 0


def test_pretrained_true_uses_the_torch_hub_cache_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, 'download_url_to_file',
                        lambda *a, **k: pytest.fail('a download was attempted'))
    with pytest.raises(FileNotFoundError, match=r'resnet18-f37072fd\.pth.*allow_download'):
        backbones.resnet18(pretrained=True)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        backbones.resnet18(pretrained=str(tmp_path / 'absent.pth'))
    torch.manual_seed(6)
    reference = torchvision.models.mobilenet_v3_small(weights=None)
    (tmp_path / 'checkpoints').mkdir()
    torch.save(reference.state_dict(), tmp_path / 'checkpoints' / 'mobilenet_v3_small-047dcff4.pth')
    model = backbones.mobilenet_v3_small_torchvision(pretrained=True)
    torch.testing.assert_close(model.features[4].block[0][0].weight, reference.features[4].block[0][0].weight)


def test_pretrained_file_of_another_network_is_rejected(tmp_path):
    path = tmp_path / 'resnet34.pth'
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r'unexpected keys.*\n.*layer1\.2\.conv1\.weight'):
        backbones.resnet18(pretrained=str(path))
    path = tmp_path / 'resnet50.pth'
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r'layer1\.0\.conv1\.weight: file \(64, 64, 1, 1\), model \(64, 64, 3, 3\)'):
        backbones.resnet18(pretrained=str(path))
