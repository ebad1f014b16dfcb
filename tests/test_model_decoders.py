"""Decoders: FPN wiring, heads, differentiable binarization, scale attention."""
import math

import pytest
import torch

from decoders import InputSizeError, SegDetector, SegSpatialScaleDetector
from decoders.feature_attention import ScaleFeatureSelection


def features(batch=2, size=(64, 64), channels=(64, 128, 256, 512), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, size[0] // s, size[1] // s, generator=generator)
            for c, s in zip(channels, (4, 8, 16, 32))]


@pytest.mark.parametrize('options', [dict(), dict(adaptive=True), dict(adaptive=True, serial=True),
                                     dict(adaptive=True, smooth=True), dict(adaptive=True, bias=True)])
def test_seg_detector_outputs(options):
    torch.manual_seed(0)
    decoder = SegDetector(**options)
    inputs = features(size=(96, 128))
    with torch.no_grad():
        decoder.train()
        trained = decoder(inputs)
        decoder.eval()
        inferred = decoder(inputs)
    expected_keys = {'binary', 'thresh', 'thresh_binary'} if options.get('adaptive') else {'binary'}
    assert set(trained) == expected_keys
    for value in trained.values():
        assert value.shape == (2, 1, 96, 128)
        assert value.min() >= 0 and value.max() <= 1
    assert torch.is_tensor(inferred) and inferred.shape == (2, 1, 96, 128)
    if options.get('adaptive'):
        k = decoder.k
        expected = 1 / (1 + torch.exp(-k * (trained['binary'] - trained['thresh'])))
        torch.testing.assert_close(trained['thresh_binary'], expected)
        assert decoder.thresh[0].in_channels == 256 + (1 if options.get('serial') else 0)


def test_inference_skips_the_threshold_head():
    decoder = SegDetector(adaptive=True)
    calls = []
    decoder.thresh.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        decoder.eval()(features())
        assert calls == []
        decoder(features(), training=True)
        assert calls == [1]


def test_fpn_is_top_down_nearest_addition_with_upsampled_concat():
    # With identity-like 1x1 laterals and 3x3 "centre tap" outputs, the fused map can be checked
    # against a hand computation of the pyramid.
    decoder = SegDetector(in_channels=[4, 4, 4, 4], inner_channels=4 * 4)
    with torch.no_grad():
        for conv in (decoder.in2, decoder.in3, decoder.in4, decoder.in5):
            conv.weight.zero_()
            for c in range(4):
                conv.weight[c, c] = 1
        for conv in (decoder.out5[0], decoder.out4[0], decoder.out3[0], decoder.out2):
            conv.weight.zero_()
            conv.weight[:, :, 1, 1] = torch.eye(4, 16)  # keep channels 0..3
    c2, c3, c4, c5 = features(batch=1, channels=(4, 4, 4, 4), size=(32, 64))

    def up(tensor, scale):  # nearest upsampling
        return tensor.repeat_interleave(scale, 2).repeat_interleave(scale, 3)

    out4 = up(c5, 2) + c4
    out3 = up(out4, 2) + c3
    out2 = up(out3, 2) + c2
    expected = torch.cat([up(c5, 8), up(out4, 4), up(out3, 2), out2], dim=1)
    fused = decoder.fuse(decoder.pyramid([c2, c3, c4, c5]))
    torch.testing.assert_close(fused, expected)


def test_step_function_is_overflow_free():
    decoder = SegDetector(adaptive=True, k=50)
    binary = torch.tensor([0.6, 1.0, 0.0])
    thresh = torch.tensor([0.5, 0.0, 1.0])
    result = decoder.step_function(binary, thresh)
    assert result[0].item() == pytest.approx(1 / (1 + math.exp(-5)), rel=1e-6)
    assert result[1].item() == pytest.approx(1.0) and result[2].item() == pytest.approx(0.0, abs=1e-20)
    assert torch.isfinite(result).all()


def test_initialisation_of_batch_norm():
    decoder = SegDetector(adaptive=True)
    assert torch.all(decoder.binarize[1].weight == 1)
    assert torch.allclose(decoder.thresh[4].bias, torch.full((64,), 1e-4))


def test_mismatched_features_are_explained():
    decoder = SegDetector()
    with pytest.raises(ValueError, match='feature c5 has 2048 channels.*expects 512'):
        decoder(features(channels=(64, 128, 256, 2048)))
    bad = features(size=(64, 64))
    bad[0] = bad[0][..., :15]
    with pytest.raises(InputSizeError, match='multiples of 32'):  # a ValueError the trainer tells from a bug
        decoder(bad)


@pytest.mark.parametrize('attention_type', ['scale_spatial', 'scale_channel_spatial', 'scale_channel'])
def test_scale_spatial_detector_outputs(attention_type):
    torch.manual_seed(0)
    decoder = SegSpatialScaleDetector(adaptive=True, attention_type=attention_type)
    with torch.no_grad():
        trained = decoder.train()(features(size=(64, 96)))
        inferred = decoder.eval()(features(size=(64, 96)))
    assert {key: tuple(value.shape) for key, value in trained.items()} == {
        key: (2, 1, 64, 96) for key in ('binary', 'thresh', 'thresh_binary')}
    assert inferred.shape == (2, 1, 64, 96)
    names = set(decoder.state_dict())
    assert 'concat_attention.conv.weight' in names and 'concat_attention.conv.bias' in names
    if attention_type == 'scale_channel_spatial':
        assert {'concat_attention.enhanced_attention.channel_wise.1.weight',
                'concat_attention.enhanced_attention.channel_wise.3.weight',
                'concat_attention.enhanced_attention.spatial_wise.0.weight',
                'concat_attention.enhanced_attention.spatial_wise.2.weight',
                'concat_attention.enhanced_attention.attention_wise.0.weight'} <= names


@pytest.mark.parametrize('attention_type', ['scale_spatial', 'scale_channel_spatial', 'scale_channel'])
def test_scale_feature_selection_multiplies_each_scale_by_its_score(attention_type):
    torch.manual_seed(0)
    selection = ScaleFeatureSelection(16, 4, attention_type=attention_type).eval()
    scales = [torch.randn(1, 4, 8, 8) for _ in range(4)]
    concat = torch.cat(scales, dim=1)
    with torch.no_grad():
        score = selection.enhanced_attention(selection.conv(concat))
        fused = selection(concat, scales)
    assert score.shape == ((1, 4, 1, 1) if attention_type == 'scale_channel' else (1, 4, 8, 8))
    if attention_type == 'scale_channel':  # a softmax over the scales
        torch.testing.assert_close(score.sum(dim=1), torch.ones(1, 1, 1))
    for index in range(4):
        torch.testing.assert_close(fused[:, 4 * index:4 * index + 4], score[:, index:index + 1] * scales[index])
    with pytest.raises(ValueError, match='attention_type must be one of'):
        ScaleFeatureSelection(16, 4, attention_type='scale_everything')


def test_transposed_convolutions_are_initialised_by_their_real_fan_in():
    """He init of a 2x2 stride-2 transposed conv: each output pixel sums in_channels products, so the
    standard deviation is sqrt(2 / in_channels); counting its output channels instead (1 for the last
    layer) makes the initial probability maps saturate."""
    torch.manual_seed(0)
    decoder = SegDetector(in_channels=[64, 128, 256, 512], inner_channels=256, adaptive=True)
    deconvs = [m for m in decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(deconvs) == 4
    for deconv in deconvs:
        expected = (2.0 / deconv.in_channels) ** 0.5
        assert abs(float(deconv.weight.detach().std()) - expected) < 0.15 * expected
    decoder.train()
    features = [torch.randn(2, c, 64 // s, 64 // s) for c, s in zip([64, 128, 256, 512], [1, 2, 4, 8])]
    with torch.no_grad():
        probability = decoder(features, training=True)['binary']
    logits = torch.logit(probability.clamp(1e-7, 1 - 1e-7))
    # Measured: std 0.85 and no saturated pixel here; with the original's init, std 3.5 and 5.5 % saturated.
    assert float(logits.std()) < 1.5
    assert float(((probability < 1e-3) | (probability > 1 - 1e-3)).float().mean()) < 0.01


@pytest.mark.parametrize('decoder,smooth', [(SegDetector, False), (SegDetector, True),
                                             (SegSpatialScaleDetector, False)])
def test_prior_probability_starts_the_probability_map_at_the_prior(decoder, smooth):
    # With the head's last weights zeroed only its bias reaches the sigmoid: the map is the prior on every pixel.
    torch.manual_seed(0)
    detector = decoder(in_channels=[8, 16, 32, 64], inner_channels=16, adaptive=True, smooth=smooth,
                       prior_probability=0.05).eval()
    last = [m for m in detector.binarize.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
    assert last.bias is not None and last.bias.item() == pytest.approx(math.log(0.05 / 0.95))
    with torch.no_grad():
        last.weight.zero_()
        features = [torch.randn(1, c, 32 // s, 32 // s) for c, s in ((8, 1), (16, 2), (32, 4), (64, 8))]
        probability = detector(features)
    assert probability.shape == (1, 1, 128, 128)
    assert torch.allclose(probability, torch.full_like(probability, 0.05), atol=1e-6)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_prior_probability_centres_the_initial_map_with_random_weights(seed):
    # The claim itself, with every weight random (train mode, as a training from scratch starts): the median of the
    # initial map lies near the prior, while without it the map is centred on 0.5 (logits centred on 0).
    torch.manual_seed(100 + seed)
    features = [torch.randn(4, c, 64 // s, 64 // s) for c, s in ((8, 1), (16, 2), (32, 4), (64, 8))]
    medians = {}
    for prior in (None, 0.1):
        torch.manual_seed(seed)
        detector = SegDetector(in_channels=[8, 16, 32, 64], inner_channels=64, adaptive=True,
                               prior_probability=prior).train()
        with torch.no_grad():
            medians[prior] = detector(features)['binary'].median().item()
    assert 0.05 <= medians[0.1] <= 0.2
    assert 0.3 <= medians[None] <= 0.7


@pytest.mark.parametrize('smooth', [False, True])
def test_prior_probability_leaves_the_threshold_head_and_rejects_bad_values(smooth):
    torch.manual_seed(0)
    plain = SegDetector(in_channels=[8, 16, 32, 64], inner_channels=16, adaptive=True, smooth=smooth)
    torch.manual_seed(0)
    primed = SegDetector(in_channels=[8, 16, 32, 64], inner_channels=16, adaptive=True, smooth=smooth,
                         prior_probability=0.2)
    before, after = plain.state_dict(), primed.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    # only the bias of the probability head's last layer: its 2x2 transposed convolution, or under smooth its 1x1
    assert changed == (['binarize.6.2.bias'] if smooth else ['binarize.6.bias'])
    assert after[changed[0]].item() == pytest.approx(math.log(0.2 / 0.8))
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match='prior_probability'):
            SegDetector(in_channels=[8, 16, 32, 64], inner_channels=16, prior_probability=bad)
