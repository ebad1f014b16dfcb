"""BatchNorm folded into convolutions for inference (structure/batchnorm_folding.py, TorchRunner(fold_batchnorm=...)).

Every BN gets random running statistics and affine parameters first (as built they are mean 0, variance 1, weight
1, bias 0 or 1e-4: folding them would change almost nothing and a wrong fold could pass), the offset convolutions
random weights (as built they are zero and a deformable convolution samples on the grid). Outputs are compared
before the final sigmoid (the logits of the probability head), where a wrong fold cannot hide in saturation.
"""
from __future__ import annotations

import copy
from typing import Any, Dict

import numpy as np
import pytest
import torch
from torch import nn

from inference.runners import TorchRunner
from structure.batchnorm_folding import count_batchnorms, find_fold_pairs, fold_batchnorm, fold_into
from structure.model import SegDetectorModel

MODELS: Dict[str, Dict[str, Any]] = {
    'deformable_resnet18': dict(backbone='deformable_resnet18', decoder='SegDetector'),
    'resnet50': dict(backbone='resnet50', decoder='SegDetector'),
    'deformable_resnet50': dict(backbone='deformable_resnet50', decoder='SegDetector'),  # strided DCN Bottlenecks
    'mobilenet_v3_large': dict(backbone='mobilenet_v3_large', decoder='SegDetector'),  # the original's layout
    'mobilenet_v3_large_torchvision': dict(backbone='mobilenet_v3_large_torchvision', decoder='SegDetector'),
    'dbnet++': dict(backbone='deformable_resnet18', decoder='SegSpatialScaleDetector',
                    decoder_args={'attention_type': 'scale_channel_spatial'}),
    'dbnet++ scale_channel': dict(backbone='resnet18', decoder='SegSpatialScaleDetector',  # its own fc1 + bn pair
                                  decoder_args={'attention_type': 'scale_channel'}),
    'smooth heads': dict(backbone='resnet18', decoder='SegDetector', decoder_args={'smooth': True}),  # Sequential
}


def randomized(name: str, seed: int = 0) -> SegDetectorModel:
    """MODELS[name] in eval mode with random BN statistics and affine maps and random offset convolutions."""
    torch.manual_seed(seed)
    spec = copy.deepcopy(MODELS[name])
    spec.setdefault('decoder_args', {}).update(adaptive=True, k=50)
    model = SegDetectorModel(**spec)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            if isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.running_mean.copy_(0.3 * torch.randn(channels, generator=generator))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(channels, generator=generator))
                module.weight.copy_((0.5 + torch.rand(channels, generator=generator)) *
                                    torch.where(torch.rand(channels, generator=generator) < 0.2, -1.0, 1.0))
                module.bias.copy_(0.2 * torch.randn(channels, generator=generator))
            elif module_name.endswith('conv2_offset'):
                module.weight.copy_(0.05 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.5 * torch.randn(module.bias.shape, generator=generator))
    return model.eval()


def logits(model: SegDetectorModel, image: torch.Tensor) -> torch.Tensor:
    """The probability head's output before its sigmoid."""
    captured = []
    sigmoid = model.decoder.binarize[-1]
    assert isinstance(sigmoid, nn.Sigmoid)
    handle = sigmoid.register_forward_hook(lambda module, args, output: captured.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            model(image, training=False)
    finally:
        handle.remove()
    return captured[0]


def image(height: int = 64, width: int = 96, seed: int = 2) -> torch.Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, relative: float = 1e-4) -> None:
    scale = float(expected.abs().max())
    assert scale > 1e-3, 'the reference logits are all near zero: the comparison would be empty'
    error = float((actual - expected).abs().max())
    assert error <= relative * scale, f'max difference {error:.3g} against a scale of {scale:.3g}'


@pytest.mark.parametrize('name', list(MODELS))
def test_folded_model_computes_what_the_model_computes_and_has_no_batchnorm(name):
    model = randomized(name)
    before = count_batchnorms(model)
    reference = logits(model, image())
    folded = fold_batchnorm(model)
    assert folded is not model
    assert before > 0 and count_batchnorms(folded) == 0  # every BN of these models follows a convolution
    assert len(find_fold_pairs(model)) == before
    assert_close(logits(folded, image()), reference)
    # the model itself is untouched and still computes what it did
    assert count_batchnorms(model) == before
    assert torch.equal(logits(model, image()), reference)


def test_a_wrong_fold_is_caught():
    """The comparison can fail: the BN statistics of the randomized model matter."""
    model = randomized('deformable_resnet18')
    reference = logits(model, image())
    broken = fold_batchnorm(model)
    with torch.no_grad():
        broken.backbone.layer2[0].conv2.bias.add_(0.1)  # the deformable conv2's folded bias, off by 0.1
    with pytest.raises(AssertionError, match='max difference'):
        assert_close(logits(broken, image()), reference)


def test_deformable_convolutions_take_the_batchnorm():
    from assets.ops.dcn import ModulatedDeformConv
    folded = fold_batchnorm(randomized('deformable_resnet18'))
    deformable = [m for m in folded.modules() if isinstance(m, ModulatedDeformConv)]
    assert deformable and all(m.bias is not None and isinstance(m.bias, nn.Parameter) for m in deformable)


def test_inplace_folds_the_model_itself():
    model = randomized('resnet50')
    reference = logits(model, image())
    assert fold_batchnorm(model, inplace=True) is model
    assert count_batchnorms(model) == 0
    assert_close(logits(model, image()), reference)


def test_a_training_model_is_refused():
    model = randomized('deformable_resnet18').train()
    with pytest.raises(ValueError, match='training mode'):
        fold_batchnorm(model)
    model.eval()
    model.backbone.layer3[1].bn2.train()  # one module left training is enough to refuse
    with pytest.raises(ValueError, match='training mode'):
        fold_batchnorm(model)
    assert count_batchnorms(model) == 24


def test_a_batchnorm_without_running_statistics_stays():
    """track_running_stats=False normalises with the batch's statistics even in eval mode: not foldable."""
    sequence = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Conv2d(4, 4, 1),
                             nn.BatchNorm2d(4)).eval()
    folded = fold_batchnorm(sequence)
    assert isinstance(folded[1], nn.BatchNorm2d) and isinstance(folded[3], nn.Identity)


def test_only_exact_classes_and_plain_sequentials_are_read():
    """A Sequential whose forward is rewritten may not apply its children in order: nothing of it is folded."""
    class Reordered(nn.Sequential):
        def forward(self, x):  # BN first, then the convolution
            return self[0](self[1](x))

    model = Reordered(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).eval()
    assert find_fold_pairs(model) == []
    assert fold_batchnorm(model) is model  # nothing to fold: no copy


@pytest.mark.parametrize('groups', [1, 2])
@pytest.mark.parametrize('transposed', [False, True])
def test_fold_into_grouped_and_transposed_convolutions(groups, transposed):
    torch.manual_seed(0)
    conv = (nn.ConvTranspose2d(4, 6, 2, 2, groups=groups) if transposed else
            nn.Conv2d(4, 6, 3, padding=1, groups=groups, bias=False))
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    pair = nn.Sequential(conv, bn).eval()
    x = torch.randn(2, 4, 5, 7)
    with torch.no_grad():
        expected = pair(x)
        fold_into(conv, bn)
        assert torch.allclose(conv(x), expected, atol=1e-5, rtol=1e-5)


def test_fold_into_refuses_a_channel_mismatch():
    with pytest.raises(ValueError, match='output channels'):
        fold_into(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(5).eval())


# ------------------------------------------------------------------------------------------------ TorchRunner
def runner_inputs() -> np.ndarray:
    return image(64, 96).numpy()


def test_torch_runner_folds_a_copy_and_leaves_the_model_usable():
    model = randomized('deformable_resnet18')
    before = count_batchnorms(model)
    unfolded = TorchRunner(copy.deepcopy(model), fold_batchnorm=False)
    runner = TorchRunner(model)
    assert count_batchnorms(runner.model) == 0 and count_batchnorms(unfolded.model) == before
    assert runner.model is not model and count_batchnorms(model) == before  # the caller's model keeps its BNs
    reference = unfolded(runner_inputs())
    assert np.abs(runner(runner_inputs()) - reference).max() < 1e-4
    # a model that goes on training (validation during training) is not changed by its runner
    model.train()
    assert all(module.training for module in model.modules())


@pytest.mark.parametrize('precision, channels_last, tolerance', [
    ('fp32', True, 1e-4),
    ('bf16', False, 0.05),
    ('bf16', True, 0.05),
])
def test_torch_runner_folded_in_other_precisions_and_layouts(precision, channels_last, tolerance):
    model = randomized('deformable_resnet18')
    reference = TorchRunner(copy.deepcopy(model), fold_batchnorm=False)(runner_inputs())  # fp32, unfolded
    runner = TorchRunner(model, precision=precision, channels_last=channels_last)
    assert count_batchnorms(runner.model) == 0
    assert next(runner.model.decoder.parameters()).dtype == runner.dtype
    prob = runner(runner_inputs())
    assert prob.dtype == np.float32 and prob.shape == reference.shape
    # bf16 keeps ~3 significant digits: the maps agree loosely, not exactly (as unfolded bf16 against fp32)
    assert np.abs(prob - reference).mean() < tolerance
    if precision == 'bf16':
        unfolded = TorchRunner(copy.deepcopy(model), precision=precision, channels_last=channels_last,
                               fold_batchnorm=False)(runner_inputs())
        assert np.abs(prob - unfolded).mean() < tolerance


# ------------------------------------------------------------------- the decoder's inference sums (docs/benchmarks.md)
@pytest.mark.parametrize('decoder', ['SegDetector', 'SegSpatialScaleDetector'])
@pytest.mark.parametrize('channels_last', [False, True])
def test_decoder_inference_adds_without_upsampling_bit_for_bit(decoder, channels_last):
    """Outside autograd the FPN's top-down sums add the coarser map in place over 2x2 blocks
    (``decoders.seg_detector.add_upsampled_x2``) instead of up-sampling it: the map is identical, bit for bit, to
    the plain up-sample and add that training and tracing run."""
    from decoders.seg_detector import add_upsampled_x2
    torch.manual_seed(0)
    model = SegDetectorModel('resnet18', decoder, decoder_args={'adaptive': True, 'k': 50}).eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = image(64, 96).contiguous(memory_format=memory_format)
    with torch.enable_grad():
        plain = model(x, training=False)
    with torch.no_grad():
        summed = model(x, training=False)
    with torch.inference_mode():
        inference = model(x, training=False)
    assert torch.equal(plain, summed) and torch.equal(plain, inference)
    fine = torch.randn(2, 3, 8, 12).contiguous(memory_format=memory_format)
    coarse = torch.randn(2, 3, 4, 6).contiguous(memory_format=memory_format)
    expected = nn.functional.interpolate(coarse, scale_factor=2, mode='nearest') + fine
    assert torch.equal(add_upsampled_x2(fine.clone(), coarse), expected)
