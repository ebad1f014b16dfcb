"""SegDetectorModel: name resolution, forward contract for backbone x decoder, training steps."""
import warnings

import pytest
import torch

from structure.model import SegDetectorModel
from tests.model_helpers import synthetic_batch

warnings.filterwarnings('ignore', message='assets.ops.dcn', category=RuntimeWarning)

FAST_BACKBONES = ['resnet18', 'deformable_resnet18', 'deformable_resnet50', 'mobilenet_v3_small_torchvision']
SLOW_BACKBONES = ['resnet34', 'resnet50', 'resnet101', 'resnet152', 'deformable_resnet34',
                  'deformable_resnet101', 'deformable_resnet152', 'mobilenet_v3_large',
                  'mobilenet_v3_large_torchvision']
DECODERS = [('SegDetector', {}), ('SegSpatialScaleDetector', {'attention_type': 'scale_channel_spatial'})]


@pytest.mark.parametrize('decoder,decoder_args', DECODERS, ids=[d for d, _ in DECODERS])
@pytest.mark.parametrize('backbone', FAST_BACKBONES + [pytest.param(b, marks=pytest.mark.slow)
                                                       for b in SLOW_BACKBONES])
def test_forward_contract_for_every_backbone_and_decoder(backbone, decoder, decoder_args):
    torch.manual_seed(0)
    model = SegDetectorModel(backbone, decoder, decoder_args=dict(adaptive=True, k=50, **decoder_args))
    for batch_size, height, width in ((2, 64, 64), (1, 96, 128)):
        batch = synthetic_batch(batch_size, height, width)
        model.eval()
        with torch.no_grad():
            probability = model(batch)
            assert probability.shape == (batch_size, 1, height, width)
            assert probability.min() >= 0 and probability.max() <= 1
            assert torch.equal(model(batch['image']), probability)
        model.train()
        with torch.set_grad_enabled(height == 64):  # one graph is enough to check the loss is differentiable
            loss, pred, metrics = model(batch)
        assert {key: tuple(value.shape) for key, value in pred.items()} == {
            key: (batch_size, 1, height, width) for key in ('binary', 'thresh', 'thresh_binary')}
        assert set(metrics) == {'bce_loss', 'thresh_loss', 'l1_loss'}
        assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad == (height == 64)


def test_training_argument_overrides_the_mode():
    model = SegDetectorModel('mobilenet_v3_small_torchvision', 'SegDetector', decoder_args=dict(adaptive=True))
    batch = synthetic_batch(2, 64, 64)
    model.train()
    with torch.no_grad():
        assert model(batch, training=False).shape == (2, 1, 64, 64)
    model.eval()
    loss, pred, _ = model(batch, training=True)
    assert set(pred) == {'binary', 'thresh', 'thresh_binary'}
    with pytest.raises(ValueError, match='batch dict'):
        model(batch['image'], training=True)


def test_names_are_resolved_with_helpful_errors():
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet19'; known: .*deformable_resnet18"):
        SegDetectorModel('resnet19', 'SegDetector')
    with pytest.raises(ValueError, match=r"unknown decoder 'Seg'; known: SegDetector, SegSpatialScaleDetector"):
        SegDetectorModel('resnet18', 'Seg')
    with pytest.raises(ValueError, match=r"unknown loss_class 'L2'"):
        SegDetectorModel('resnet18', 'SegDetector', loss_class='L2')
    with pytest.raises(ValueError, match=r'in_channels is \[64, 128, 256, 512\].*\[256, 512, 1024, 2048\]'):
        SegDetectorModel('resnet50', 'SegDetector', decoder_args=dict(in_channels=[64, 128, 256, 512]))
    model = SegDetectorModel('mobilenet_v3_small_torchvision', 'SegDetector')
    assert model.decoder.in5.in_channels == 576  # in_channels taken from the backbone
    assert model.backbone is model.model.module.backbone


def test_a_few_sgd_steps_lower_the_loss():
    torch.manual_seed(0)
    model = SegDetectorModel('deformable_resnet18', 'SegDetector',
                             decoder_args=dict(adaptive=True, k=50, inner_channels=64)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    batch = synthetic_batch(2, 64, 64)
    losses = []
    for _ in range(4):
        loss, _, _ = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        final, _, _ = model(batch)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert final.item() < 0.9 * losses[0], losses + [final.item()]
