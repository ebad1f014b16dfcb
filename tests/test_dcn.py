"""Deformable convolution: backends agree with each other and with independent references."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import assets.ops.dcn as dcn
from assets.ops.dcn import (DeformConv, DeformConvPack, ModulatedDeformConv, ModulatedDeformConvPack,
                            active_backend, deform_conv, modulated_deform_conv, set_backend,
                            use_backend)
from assets.ops.dcn import _backend
from tests.dcn_helpers import CASES, Case, assert_close_all, require_extension, run_op

BACKENDS = ['extension', 'pytorch', 'torchvision']


def _maybe_require(backend: str) -> None:
    if backend == 'extension':
        require_extension()


# --- agreement between backends ------------------------------------------------------------------

@pytest.mark.parametrize('modulated', [True, False], ids=['dcnv2', 'dcnv1'])
@pytest.mark.parametrize('backend', ['extension', 'pytorch'])
@pytest.mark.parametrize('case', CASES, ids=[c.name for c in CASES])
def test_forward_and_gradients_match_torchvision(case, backend, modulated):
    _maybe_require(backend)
    tensors = case.make(torch.float32)
    reference = run_op('torchvision', tensors, case, modulated)
    assert_close_all(run_op(backend, tensors, case, modulated), reference, atol=1e-4)


@pytest.mark.parametrize('backend', ['extension', 'pytorch'])
def test_float64_matches_torchvision(backend):
    _maybe_require(backend)
    case = CASES[1]
    tensors = case.make(torch.float64)
    reference = run_op('torchvision', tensors, case, True)
    assert_close_all(run_op(backend, tensors, case, True), reference, atol=1e-10)


def test_extension_matches_pytorch_on_resnet_like_shape():
    """A wider layer than the other cases, so that several channel blocks and tiles are used."""
    require_extension()
    case = Case('wide', batch=2, channels=64, height=13, width=21, out_channels=32, offset_scale=3.0)
    tensors = case.make(torch.float32)
    reference = run_op('pytorch', tensors, case, True)
    assert_close_all(run_op('extension', tensors, case, True), reference, atol=1e-4)


# --- independent references ----------------------------------------------------------------------

@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('case', CASES[:4], ids=[c.name for c in CASES[:4]])
def test_zero_offsets_unit_mask_equal_conv2d(case, backend):
    """With zero offsets and mask 1 the op is a plain convolution, forward and backward."""
    _maybe_require(backend)
    x, offset, mask, weight, bias = case.make(torch.float32)
    offset = torch.zeros_like(offset)
    mask = torch.ones_like(mask)
    got = run_op(backend, [x, offset, mask, weight, bias], case, True)
    xr, wr, br = [t.clone().requires_grad_() for t in (x, weight, bias)]
    out = F.conv2d(xr, wr, br, case.stride, case.padding, case.dilation, case.groups)
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(7),
                        dtype=torch.float64).float()
    grads = torch.autograd.grad((out * probe).sum(), (xr, wr, br))
    assert got[0].shape == out.shape
    for name, a, b in (('output', got[0], out), ('grad_input', got[1], grads[0]),
                       ('grad_weight', got[4], grads[1]), ('grad_bias', got[5], grads[2])):
        error = (a - b).abs().max().item()
        assert error <= 1e-4, f'{name}: max abs error {error:.3g}'


@pytest.mark.parametrize('backend', BACKENDS)
def test_integer_offset_is_a_shifted_convolution(backend):
    """An offset of (+1, -2) everywhere samples x[y+1, x-2]: equal to conv2d of the shifted image."""
    _maybe_require(backend)
    case = Case('shift', batch=1, height=8, width=9, padding=(1, 1))
    x, offset, mask, weight, bias = case.make(torch.float32)
    offset = offset.clone()
    offset[:, 0::2] = 1.0
    offset[:, 1::2] = -2.0
    with use_backend(backend):
        got = deform_conv(x, offset, weight, 1, 1, bias=bias)
    # tap (i, j) of output (r, c) reads x[r - 1 + i + 1, c - 1 + j - 2]; build that padded image
    height, width = x.shape[2:]
    wide = F.pad(x, (3, 3, 3, 3))
    shifted = wide[:, :, 3:3 + height + 2, 0:width + 2]
    assert (got - F.conv2d(shifted, weight, bias)).abs().max().item() <= 1e-4


@pytest.mark.parametrize('backend', BACKENDS)
def test_samples_far_outside_the_image_read_zero(backend):
    """Every sample outside the image: output is the bias, and only bias/mask get gradients."""
    _maybe_require(backend)
    case = Case('outside', batch=1)
    x, offset, mask, weight, bias = case.make(torch.float32)
    offset = torch.full_like(offset, 50.0)
    got = run_op(backend, [x, offset, mask, weight, bias], case, True)
    assert torch.allclose(got[0], bias.view(1, -1, 1, 1).expand_as(got[0]))
    for index in (1, 2, 3, 4):
        assert got[index].abs().max().item() == 0.0


@pytest.mark.parametrize('backend', BACKENDS)
def test_half_pixel_offset_is_the_average_of_neighbours(backend):
    """dx = 0.5 with a 1x1 kernel: output = mean of the pixel and its right neighbour
    (and half the pixel at the right border, where the neighbour is zero padding)."""
    _maybe_require(backend)
    x = torch.randn(1, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    weight = torch.eye(3).view(3, 3, 1, 1)
    offset = torch.zeros(1, 2, 4, 5)
    offset[:, 1] = 0.5
    with use_backend(backend):
        got = deform_conv(x, offset, weight)
    right = torch.cat([x[..., 1:], torch.zeros_like(x[..., :1])], dim=-1)
    assert (got - 0.5 * (x + right)).abs().max().item() <= 1e-6


# --- gradcheck -----------------------------------------------------------------------------------

@pytest.mark.parametrize('modulated', [True, False], ids=['dcnv2', 'dcnv1'])
@pytest.mark.parametrize('backend', BACKENDS)
def test_gradcheck_float64(backend, modulated):
    _maybe_require(backend)
    case = Case('tiny', batch=1, channels=4, height=4, width=3, out_channels=2, groups=2,
                deformable_groups=2, offset_scale=1.3)
    x, offset, mask, weight, bias = [t.requires_grad_() for t in case.make(torch.float64, seed=3)]
    kwargs = case.kwargs()

    def fn(*args):
        with use_backend(backend):
            if modulated:
                return modulated_deform_conv(*args, **kwargs)
            return deform_conv(args[0], args[1], args[2], bias=args[3], **kwargs)

    inputs = (x, offset, mask, weight, bias) if modulated else (x, offset, weight, bias)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


# --- input handling ------------------------------------------------------------------------------

@pytest.mark.parametrize('backend', BACKENDS)
def test_non_contiguous_inputs_are_handled(backend):
    _maybe_require(backend)
    case = CASES[0]
    x, offset, mask, weight, bias = case.make(torch.float32)
    expected = run_op(backend, [x, offset, mask, weight, bias], case, True)
    x_nc = x.to(memory_format=torch.channels_last)
    offset_nc = offset.transpose(2, 3).contiguous().transpose(2, 3)
    mask_nc = torch.stack([mask, mask], dim=-1)[..., 0]
    weight_nc = weight.transpose(0, 1).contiguous().transpose(0, 1)
    assert not (x_nc.is_contiguous() or offset_nc.is_contiguous() or mask_nc.is_contiguous()
                or weight_nc.is_contiguous())
    got = run_op(backend, [x_nc, offset_nc, mask_nc, weight_nc, bias], case, True)
    assert_close_all(got, expected, atol=1e-6)


def _good_args():
    x = torch.randn(2, 4, 6, 6)
    offset = torch.zeros(2, 18, 6, 6)
    mask = torch.ones(2, 9, 6, 6)
    weight = torch.randn(3, 4, 3, 3)
    bias = torch.zeros(3)
    return x, offset, mask, weight, bias


def test_offset_shape_error_states_expected_and_got():
    x, offset, mask, weight, bias = _good_args()
    with pytest.raises(ValueError, match=r'offset must have shape .*\(2, 18, 6, 6\), got \(2, 16, 6, 6\)'):
        modulated_deform_conv(x, offset[:, :16], mask, weight, bias, 1, 1)
    with pytest.raises(ValueError, match=r'offset .*\(2, 18, 6, 6\), got \(2, 18, 5, 6\)'):
        modulated_deform_conv(x, offset[:, :, :5], mask, weight, bias, 1, 1)


def test_mask_shape_error_states_expected_and_got():
    x, offset, mask, weight, bias = _good_args()
    with pytest.raises(ValueError, match=r'mask must have shape .*\(2, 9, 6, 6\), got \(2, 8, 6, 6\)'):
        modulated_deform_conv(x, offset, mask[:, :8], weight, bias, 1, 1)


def test_dtype_device_and_channel_errors():
    x, offset, mask, weight, bias = _good_args()
    with pytest.raises(TypeError, match='dtype'):
        modulated_deform_conv(x, offset.double(), mask, weight, bias, 1, 1)
    with pytest.raises(ValueError, match='device'):
        modulated_deform_conv(x, offset.to('meta'), mask, weight, bias, 1, 1)
    with pytest.raises(ValueError, match='divisible by deformable_groups'):
        deform_conv(x, torch.zeros(2, 54, 6, 6), weight, 1, 1, deformable_groups=3)
    with pytest.raises(ValueError, match='divisible by groups'):
        deform_conv(x, offset, torch.randn(3, 4, 3, 3), 1, 1, groups=3)
    with pytest.raises(ValueError, match=r'weight must have shape'):
        deform_conv(x, offset, torch.randn(3, 3, 3, 3), 1, 1)
    with pytest.raises(ValueError, match=r'bias must have shape \(3,\)'):
        modulated_deform_conv(x, offset, mask, weight, torch.zeros(4), 1, 1)
    with pytest.raises(ValueError, match='mask'):
        modulated_deform_conv(x, offset, None, weight, bias, 1, 1)


def test_extension_rejects_half_on_cpu():
    require_extension()
    x, offset, mask, weight, bias = [t.half() for t in _good_args()]
    with use_backend('extension'), pytest.raises(TypeError, match='float32 and float64 on the CPU'):
        modulated_deform_conv(x, offset, mask, weight, bias, 1, 1)


@pytest.mark.parametrize('backend', BACKENDS)
def test_empty_batch_returns_empty_output(backend):
    _maybe_require(backend)
    x, offset, mask, weight, bias = _good_args()
    x, offset, mask = x[:0], offset[:0], mask[:0]
    weight.requires_grad_()
    with use_backend(backend):
        out = modulated_deform_conv(x, offset, mask, weight, bias, 1, 1)
    assert out.shape == (0, 3, 6, 6)
    out.sum().backward()
    assert torch.equal(weight.grad, torch.zeros_like(weight))


# --- modules -------------------------------------------------------------------------------------

def test_module_parameters_match_original_layout():
    layer = ModulatedDeformConv(8, 16, 3, padding=1, groups=2, deformable_groups=2)
    assert dict((k, tuple(v.shape)) for k, v in layer.state_dict().items()) == {
        'weight': (16, 4, 3, 3), 'bias': (16,)}
    assert DeformConv(8, 16, 3).bias is None
    pack = ModulatedDeformConvPack(8, 16, 3, padding=1, deformable_groups=2)
    assert tuple(pack.conv_offset_mask.weight.shape) == (3 * 2 * 9, 8, 3, 3)
    assert tuple(DeformConvPack(8, 16, 3).conv_offset.weight.shape) == (18, 8, 3, 3)


def test_packs_start_as_plain_convolutions():
    """Zero-initialised offset convs: DeformConvPack == conv2d; the modulated pack has mask 0.5."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 9, 7)
    pack = DeformConvPack(8, 6, 3, padding=1, bias=True)
    torch.nn.init.normal_(pack.bias)
    reference = F.conv2d(x, pack.weight, pack.bias, 1, 1)
    assert (pack(x) - reference).abs().max().item() <= 1e-4
    mpack = ModulatedDeformConvPack(8, 6, 3, stride=2, padding=1)
    torch.nn.init.normal_(mpack.bias)
    reference = 0.5 * F.conv2d(x, mpack.weight, None, 2, 1) + mpack.bias.view(1, -1, 1, 1)
    assert (mpack(x) - reference).abs().max().item() <= 1e-4


# --- backend selection ---------------------------------------------------------------------------

def test_backend_selection_api():
    with pytest.raises(ValueError, match='unknown deformable convolution backend'):
        set_backend('cudnn')
    before = dcn.requested_backend()
    with use_backend('pytorch'):
        assert active_backend() == 'pytorch'
        with use_backend('torchvision'):
            assert active_backend() == 'torchvision'
        assert active_backend() == 'pytorch'
    assert dcn.requested_backend() == before


def test_auto_prefers_the_extension():
    require_extension()
    with use_backend('auto'):
        assert active_backend('cpu') == 'extension'


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning', 'ignore::FutureWarning')
def test_tracing_uses_the_pytorch_formulation():
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = ModulatedDeformConvPack(4, 4, 3, padding=1)

        def forward(self, x):
            seen.append(active_backend(x.device))
            return self.conv(x)

    module = Probe().eval()
    x = torch.randn(1, 4, 6, 5)
    with use_backend('auto'), torch.no_grad():
        traced = torch.jit.trace(module, x, check_trace=False)
    assert seen == ['pytorch']
    assert (traced(x) - module(x)).abs().max().item() <= 1e-5


def test_missing_extension_is_reported_once_and_falls_back(monkeypatch):
    monkeypatch.setattr(_backend, '_extension', None)
    monkeypatch.setattr(_backend, '_extension_probed', True)
    monkeypatch.setattr(_backend, '_extension_error', 'ImportError: test')
    monkeypatch.setattr(_backend, '_fallback_reported', False)
    x, offset, mask, weight, bias = _good_args()
    with use_backend('auto'), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        first = modulated_deform_conv(x, offset, mask, weight, bias, 1, 1)
        modulated_deform_conv(x, offset, mask, weight, bias, 1, 1)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and 'torchvision backend' in messages[0]
    assert 'build_ext --inplace' in messages[0]
    assert (first - F.conv2d(x, weight, bias, 1, 1)).abs().max().item() <= 1e-4
    with pytest.raises(RuntimeError, match='not available'):
        set_backend('extension')


@pytest.mark.filterwarnings('ignore')
def test_onnx_export_runs_in_onnxruntime():
    """The exported graph (pure-PyTorch formulation) runs in plain onnxruntime and matches."""
    import io
    onnxruntime = pytest.importorskip('onnxruntime')
    torch.manual_seed(0)
    layer = ModulatedDeformConvPack(4, 6, 3, padding=1).eval()
    torch.nn.init.normal_(layer.conv_offset_mask.weight, std=0.3)
    x = torch.randn(1, 4, 7, 9)
    buffer = io.BytesIO()
    with use_backend('auto'):
        torch.onnx.export(layer, (x,), buffer, dynamo=False, opset_version=17)
    session = onnxruntime.InferenceSession(buffer.getvalue())
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad(), use_backend('torchvision'):
        expected = layer(x)
    assert (torch.from_numpy(got) - expected).abs().max().item() <= 1e-4


def test_autocast_runs_the_op_in_float32_and_matches_float32():
    """Under CPU autocast (bf16 training) the op runs in float32, like torchvision's op does."""
    from assets.ops.dcn import ModulatedDeformConv
    torch.manual_seed(0)
    layer = ModulatedDeformConv(8, 8, 3, padding=1, bias=False)
    x = torch.randn(1, 8, 12, 12)
    offset = torch.randn(1, 18, 12, 12)
    mask = torch.rand(1, 9, 12, 12)
    expected = layer(x, offset, mask)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = layer(x.bfloat16(), offset.bfloat16(), mask.bfloat16())
    assert got.dtype == torch.float32
    # Only the bf16 rounding of the inputs separates the two.
    reference = layer(x.bfloat16().float(), offset.bfloat16().float(), mask.bfloat16().float())
    assert torch.allclose(got, reference, atol=1e-5)
    assert (got - expected).abs().max() < 0.1


def test_pytorch_formulation_in_bfloat16_samples_the_right_pixels():
    """Whole-pixel positions above 256 are not representable in bf16; positions are computed in float32."""
    from assets.ops.dcn import deform_conv2d_pytorch
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 320)
    weight = torch.randn(2, 2, 3, 3)
    offset = torch.zeros(1, 18, 4, 320)
    got = deform_conv2d_pytorch(x.bfloat16(), offset.bfloat16(), None, weight.bfloat16(), None,
                                (1, 1), (1, 1), (1, 1), 1, 1)
    expected = torch.nn.functional.conv2d(x.bfloat16().float(), weight.bfloat16().float(), padding=1)
    assert got.dtype == torch.bfloat16
    assert (got.float() - expected).abs().max() < 0.1
