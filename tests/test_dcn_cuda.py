"""Deformable convolution on CUDA: the extension's CUDA kernels against torchvision's CUDA op, the
pure-PyTorch formulation, the CPU kernels (float64) and gradcheck; autocast, memory layouts, an empty
batch, odd sizes and groups. Skipped without a GPU.

Each test is a thin wrapper around a ``check_*`` helper taking the device, so that the logic of every
test can be exercised on a machine without a GPU by calling the helper with ``device='cpu'``.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from assets.ops.dcn import (ModulatedDeformConv, _backend, deform_conv, extension_has_cuda,
                            modulated_deform_conv, use_backend)
from tests.dcn_helpers import (CASES, EXTRA_CUDA_CASES, NAMES, Case, assert_close_all, ieee_float32,
                               max_error, relative_error, require_extension, run_op, to_device)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device'),
]

ALL_CASES = CASES + EXTRA_CUDA_CASES
ALL_IDS = [c.name for c in ALL_CASES]
MODULATED = pytest.mark.parametrize('modulated', [True, False], ids=['dcnv2', 'dcnv1'])


def _require_cuda_extension():
    require_extension()
    if not extension_has_cuda():
        pytest.fail('the dcn extension was built without CUDA kernels; rebuild it with '
                    '`cd assets/ops/dcn && CUDA_HOME=/usr/local/cuda python setup.py build_ext --inplace`')


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _call(modulated: bool, x, offset, mask, weight, bias, case: Case):
    if modulated:
        return modulated_deform_conv(x, offset, mask, weight, bias, **case.kwargs())
    return deform_conv(x, offset, weight, bias=bias, **case.kwargs())


def assert_close_scaled(got, want, atol: float, rtol: float) -> None:
    """Each of [output, grad_input, grad_offset, grad_mask, grad_weight, grad_bias] within
    atol + rtol * max|want| (float32 errors grow with the magnitude of the sums)."""
    for name, a, b in zip(NAMES, got, want):
        if a is None or b is None:
            assert a is None and b is None, f'{name}: one side returned None'
            continue
        bound = atol + rtol * (b.abs().max().item() if b.numel() else 0.0)
        error = max_error(a, b)
        assert error <= bound, f'{name}: max abs error {error:.3g} > {bound:.3g}'


# --- CUDA kernels against torchvision (float32) and the CPU kernels (float64) ---------------------

def check_matches_torchvision(case: Case, backend: str, modulated: bool, device) -> None:
    """Forward and all five gradients against torchvision's op on the same device, float32.

    Tolerance 1e-4 + 1e-5 * max|reference|: both sides are float32 sums in different orders; measured
    on the CPU, each side is within about 1e-6 * max|value| of the float64 result."""
    tensors = case.make(torch.float32, device=device)
    reference = run_op('torchvision', tensors, case, modulated)
    got = run_op(backend, tensors, case, modulated)
    assert all(t.device == torch.device(device) for t in got if t is not None)
    assert_close_scaled(got, reference, atol=1e-4, rtol=1e-5)


@MODULATED
@pytest.mark.parametrize('backend', ['extension', 'pytorch'])
@pytest.mark.parametrize('case', ALL_CASES, ids=ALL_IDS)
def test_cuda_matches_torchvision(case, backend, modulated):
    if backend == 'extension':
        _require_cuda_extension()
    check_matches_torchvision(case, backend, modulated, 'cuda')


def check_matches_cpu_float64(case: Case, modulated: bool, device) -> None:
    """The extension on ``device`` against the extension's C++ CPU kernels, float64, to 1e-9
    (float64 rounding, summation order and atomics differ: about 1e-13 here)."""
    cpu = run_op('extension', case.make(torch.float64), case, modulated)
    got = run_op('extension', case.make(torch.float64, device=device), case, modulated)
    assert all(t.device == torch.device(device) and t.dtype == torch.float64 for t in got if t is not None)
    assert_close_all(to_device(got, 'cpu'), cpu, atol=1e-9)


@MODULATED
@pytest.mark.parametrize('case', ALL_CASES, ids=ALL_IDS)
def test_cuda_matches_cpu_extension(case, modulated):
    _require_cuda_extension()
    check_matches_cpu_float64(case, modulated, 'cuda')


# --- half precision -------------------------------------------------------------------------------

@pytest.mark.parametrize('dtype,atol', [(torch.float16, 2e-2), (torch.bfloat16, 1.5e-1)])
def test_cuda_half_precision_close_to_float32(dtype, atol):
    """The CUDA kernels called directly in float16/bfloat16 (no autocast): relative error to float32."""
    _require_cuda_extension()
    case = Case('half', channels=16, out_channels=8, height=9, width=11)
    reference = run_op('extension', case.make(torch.float32, device='cuda'), case, True)
    got = run_op('extension', case.make(dtype, device='cuda'), case, True)
    assert all(t.dtype == dtype for t in got if t is not None)
    scale = [max(1.0, r.abs().max().item()) if r is not None else 1.0 for r in reference]
    for name, g, r, s in zip(['out', 'input', 'offset', 'mask', 'weight', 'bias'], got, reference, scale):
        error = (g.float() - r).abs().max().item() / s
        assert error <= atol, f'{name}: relative error {error:.3g} > {atol}'


# Errors relative to max(1, max|float32 result|) allowed under autocast: the inputs are rounded to
# float16 (relative step 2**-11) or bfloat16 (2**-8) before the op, which then runs in float32. Measured
# (same rounded values on any device): output 1.3e-3 / 8.3e-3, weight gradient 1.1e-3 / 1.5e-2.
AUTOCAST_TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 4e-2}
AUTOCAST_IDS = ['float16', 'bfloat16']


def check_autocast_modulated_deform_conv(device, dtype) -> None:
    """``ModulatedDeformConv`` under autocast with low-precision inputs (what an autocast offset
    convolution hands it): the op runs in float32 (output and weight gradient float32, equal to the
    float64 CPU kernels on the same rounded inputs within 1e-4), and output / weight gradient are
    close to the float32 computation on the unrounded inputs (AUTOCAST_TOLERANCE)."""
    device = torch.device(device)
    case = Case('autocast', batch=2, channels=16, height=10, width=9, out_channels=8, groups=2,
                deformable_groups=2, offset_scale=2.0)
    x, offset, mask, weight, bias = case.make(torch.float32, device=device, seed=5)
    layer = ModulatedDeformConv(16, 8, 3, padding=1, groups=2, deformable_groups=2).to(device)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    probe = torch.randn(2, 8, 10, 9, generator=_generator(9)).to(device)

    low = [t.to(dtype).requires_grad_() for t in (x, offset, mask)]
    with use_backend('extension'), torch.autocast(device.type, dtype=dtype):
        got = layer(*low)
    assert got.dtype == torch.float32
    (got * probe).sum().backward()
    got_weight_grad = layer.weight.grad.clone()
    assert got_weight_grad.dtype == torch.float32
    assert all(t.grad is not None and t.grad.dtype == dtype for t in low)
    layer.zero_grad()

    # The op saw the rounded values and computed in float32: float64 CPU kernels on the same values.
    rounded = [t.detach().double().cpu() for t in low]
    with use_backend('extension'):
        want = modulated_deform_conv(*rounded, layer.weight.detach().double().cpu(),
                                     layer.bias.detach().double().cpu(), **case.kwargs())
    error = max_error(got, want)
    assert error <= 1e-4, f'autocast output vs float64 on the rounded inputs: {error:.3g}'

    # Close to float32 on the unrounded inputs (no TF32 in the reference).
    with use_backend('extension'), ieee_float32():
        full = layer(x, offset, mask)
    (full * probe).sum().backward()
    tolerance = AUTOCAST_TOLERANCE[dtype]
    for name, a, b in (('output', got, full), ('grad_weight', got_weight_grad, layer.weight.grad)):
        error = relative_error(a, b)
        assert error <= tolerance, f'{name} under autocast {dtype}: relative error {error:.3g} > {tolerance}'


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=AUTOCAST_IDS)
def test_cuda_autocast_modulated_deform_conv(dtype):
    _require_cuda_extension()
    check_autocast_modulated_deform_conv('cuda', dtype)


# Through the deformable Bottlenecks the rounding of every autocast convolution adds up; measured with CPU
# autocast: 1.1e-3 (float16) and 6.1e-3 (bfloat16), so these leave a margin of about 10.
RESNET_AUTOCAST_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 6e-2}


def _small_deformable_resnet(seed: int):
    """A deformable ResNet (Bottlenecks, one per stage; DCN in stages 2-4, as deformable_resnet50) with
    random offset/mask convolutions (zero at initialisation, which would make the DCN a plain conv)."""
    from backbones.resnet import ResNet
    torch.manual_seed(seed)
    model = ResNet('Bottleneck', (1, 1, 1, 1), stage_with_dcn=(False, True, True, True)).eval()
    generator = _generator(seed)
    with torch.no_grad():
        for block in model.deformable_blocks():
            conv = block.conv2_offset
            fan_in = conv.in_channels * 9
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 2.0 / fan_in ** 0.5)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.5)
    return model


def check_autocast_resnet(device, dtype) -> None:
    """The DCN layers the ResNet uses (conv2 of the deformable Bottlenecks, strided as in
    deformable_resnet50) under autocast: each runs in float32 (its output dtype, seen by a hook), the
    features come out in the autocast dtype (the next convolution runs in it) and are close to the
    float32 model's (RESNET_AUTOCAST_TOLERANCE, relative to each feature map's scale)."""
    device = torch.device(device)
    model = _small_deformable_resnet(seed=2).to(device)
    image = torch.randn(1, 3, 64, 96, generator=_generator(4)).to(device)
    with torch.no_grad(), use_backend('extension'), ieee_float32():  # the float32 reference, no TF32
        expected = model(image)
    seen = []
    hooks = [block.conv2.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
             for block in model.deformable_blocks()]
    try:
        with torch.no_grad(), use_backend('extension'), torch.autocast(device.type, dtype=dtype):
            got = model(image)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == [torch.float32] * 3
    tolerance = RESNET_AUTOCAST_TOLERANCE[dtype]
    for index, (a, b) in enumerate(zip(got, expected)):
        assert a.dtype == dtype and b.dtype == torch.float32
        assert torch.isfinite(a).all()
        error = relative_error(a, b)
        assert error <= tolerance, f'c{index + 2} under autocast {dtype}: relative error {error:.3g} > {tolerance}'


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=AUTOCAST_IDS)
def test_cuda_autocast_resnet_deformable_blocks(dtype):
    _require_cuda_extension()
    check_autocast_resnet('cuda', dtype)


# --- gradcheck ------------------------------------------------------------------------------------

def _away_from_pixel_edges(offset: torch.Tensor) -> torch.Tensor:
    """Offsets whose fractional part is in [0.2, 0.8]: sampling positions (integer base + offset) then stay
    away from the kinks of bilinear interpolation, so that float32 finite differences (eps 1e-3) are exact
    up to rounding."""
    whole = torch.floor(offset)
    return whole + 0.2 + 0.6 * (offset - whole)


GRADCHECK_SETTINGS = {
    # eps, atol, rtol, nondet_tol (the CUDA backward adds the input gradient with atomics, whose order
    # varies between runs: a few float rounding steps of difference between two backward passes).
    torch.float64: dict(eps=1e-6, atol=1e-5, rtol=1e-3, nondet_tol=1e-12),
    torch.float32: dict(eps=1e-3, atol=3e-3, rtol=3e-3, nondet_tol=1e-5),
}


def check_gradcheck(device, dtype, modulated: bool) -> None:
    """torch.autograd.gradcheck of the extension on ``device``: analytical (the kernels' backward) against
    finite differences of the kernels' forward, for input, offset, mask, weight and bias."""
    case = Case('tiny', batch=1, channels=4, height=4, width=3, out_channels=2, groups=2,
                deformable_groups=2, offset_scale=1.3)
    x, offset, mask, weight, bias = case.make(dtype, device=device, seed=3)
    offset = _away_from_pixel_edges(offset)
    inputs = [t.requires_grad_() for t in ((x, offset, mask, weight, bias) if modulated
                                           else (x, offset, weight, bias))]
    kwargs = case.kwargs()

    def fn(*args):
        with use_backend('extension'):
            if modulated:
                return modulated_deform_conv(*args, **kwargs)
            return deform_conv(args[0], args[1], args[2], bias=args[3], **kwargs)

    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Input #', category=UserWarning)  # float32 inputs
        assert torch.autograd.gradcheck(fn, inputs, **GRADCHECK_SETTINGS[dtype])


@MODULATED
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['float64', 'float32'])
def test_cuda_gradcheck(dtype, modulated):
    _require_cuda_extension()
    check_gradcheck('cuda', dtype, modulated)


# --- memory layouts -------------------------------------------------------------------------------

def _forward_backward(tensors, case: Case, modulated: bool, grad_output: torch.Tensor):
    """Output and gradients with ``grad_output``; the tensors are used as given (no copy), so their
    memory layout reaches the op."""
    leaves = [t.detach().requires_grad_() for t in tensors]
    x, offset, mask, weight, bias = leaves
    with use_backend('extension'):
        out = _call(modulated, x, offset, mask, weight, bias, case)
    inputs = leaves if modulated else [x, offset, weight, bias]
    grads = list(torch.autograd.grad(out, inputs, grad_output))
    if not modulated:
        grads.insert(2, None)
    return [out.detach()] + grads


def _strided_copy(tensor: torch.Tensor, kind: str) -> torch.Tensor:
    """The values of ``tensor`` in a non-contiguous layout of the kind ``kind``."""
    if kind == 'channels_last':
        return tensor.contiguous(memory_format=torch.channels_last)
    if kind == 'transposed':
        return tensor.transpose(-1, -2).contiguous().transpose(-1, -2)
    if kind == 'sliced':  # every other element of a wider buffer along the last dimension
        wide = torch.zeros(*tensor.shape[:-1], 2 * tensor.shape[-1], dtype=tensor.dtype, device=tensor.device)
        wide[..., ::2] = tensor
        return wide[..., ::2]
    raise ValueError(kind)


LAYOUTS = {
    # kinds for (input, offset, mask, weight, bias, grad_output)
    'channels_last': ('channels_last', 'channels_last', 'channels_last', 'channels_last', None, 'channels_last'),
    'views': ('transposed', 'sliced', 'transposed', 'transposed', 'sliced', 'transposed'),
}


def check_layouts(device, modulated: bool, layout: str) -> None:
    """Channels-last tensors, and transposed / sliced views (input, offset, mask, weight, bias and the
    output gradient), give the results of contiguous tensors (float64, to 1e-12: only the order of the
    atomic additions may differ)."""
    case = Case('layout', batch=2, channels=8, height=9, width=7, out_channels=6, groups=2,
                deformable_groups=2)
    tensors = case.make(torch.float64, device=device, seed=11)
    out_shape = (case.batch, case.out_channels, *case.out_size())
    grad_output = torch.randn(out_shape, generator=_generator(12), dtype=torch.float64).to(device)
    expected = _forward_backward(tensors, case, modulated, grad_output)

    kinds = LAYOUTS[layout]
    strided = [t if kind is None else _strided_copy(t, kind) for t, kind in zip(tensors, kinds[:5])]
    strided_grad = _strided_copy(grad_output, kinds[5])
    for t, kind in zip(strided + [strided_grad], kinds):
        if kind is not None:
            assert not t.is_contiguous(), f'{kind} copy is contiguous: the test would not test anything'
    got = _forward_backward(strided, case, modulated, strided_grad)
    assert_close_all(got, expected, atol=1e-12)


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
@MODULATED
def test_cuda_non_contiguous_and_channels_last_inputs(modulated, layout):
    _require_cuda_extension()
    check_layouts('cuda', modulated, layout)


# --- empty batch ----------------------------------------------------------------------------------

def check_empty_batch(device, modulated: bool) -> None:
    """N = 0: the output has conv2d's output shape (0, C_out, Ho, Wo) for the same stride/padding/dilation/
    groups; backward gives empty input/offset/mask gradients and zero weight/bias gradients; the compiled
    op called directly (the C++ N = 0 paths) gives the same as the CPU kernels."""
    device = torch.device(device)
    case = Case('empty', batch=0, channels=6, height=7, width=5, out_channels=4, stride=(2, 2),
                padding=(1, 1), dilation=(2, 2), groups=2, deformable_groups=3)
    tensors = [t.requires_grad_() for t in case.make(torch.float32, device=device)]
    x, offset, mask, weight, bias = tensors
    with torch.no_grad():
        want_shape = F.conv2d(x, weight, bias, case.stride, case.padding, case.dilation, case.groups).shape
    assert tuple(want_shape) == (0, case.out_channels, *case.out_size())
    with use_backend('extension'):
        out = _call(modulated, x, offset, mask, weight, bias, case)
    assert out.shape == want_shape and out.device == device and out.dtype == torch.float32
    inputs = tensors if modulated else [x, offset, weight, bias]
    grads = torch.autograd.grad(out.sum(), inputs)
    for tensor, grad in zip(inputs, grads):
        assert grad.shape == tensor.shape and grad.device == device
        assert torch.equal(grad, torch.zeros_like(tensor))

    ext = _backend.load_extension()
    args = (*case.stride, *case.padding, *case.dilation, case.groups, case.deformable_groups)

    def raw(on):
        xs, offs, ms, ws, bs = [t.detach().to(on) for t in tensors]
        ms = ms if modulated else None
        output = ext.forward(xs, ws, bs, offs, ms, *args)
        grad_output = torch.ones(output.shape, device=on)
        return [output] + list(ext.backward(grad_output, xs, ws, offs, ms, True, *args))

    got, cpu = raw(device), raw('cpu')
    for name, a, b in zip(NAMES, got, cpu):
        if b is None:
            assert a is None, f'{name}: expected None'
            continue
        assert a.shape == b.shape and a.device == device, name
        assert torch.equal(a.cpu(), b), name
    assert torch.equal(got[4].cpu(), torch.zeros(weight.shape)) and torch.equal(got[5].cpu(), torch.zeros(4))


@MODULATED
def test_cuda_empty_batch(modulated):
    _require_cuda_extension()
    check_empty_batch('cuda', modulated)
