"""The CPU kernels' paths (issue 16): channels-last in and out, the libraries computing the products, the forced
instruction set, and the bfloat16 inference path. Each is checked against an independent result: the NCHW path,
float64 arithmetic, or F.conv2d where zero offsets make the op a plain convolution."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from assets.ops.dcn import _backend, modulated_deform_conv, use_backend
from tests.dcn_helpers import require_extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _case(channels=16, out_channels=24, height=13, width=17, batch=2, seed=0, groups=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=generator)
    offset = torch.randn(batch, 18, height, width, generator=generator) * 2.0
    mask = torch.rand(batch, 9, height, width, generator=generator)
    weight = torch.randn(out_channels, channels // groups, 3, 3, generator=generator) * 0.1
    bias = torch.randn(out_channels, generator=generator)
    return x, offset, mask, weight, bias


def _run(tensors, channels_last=False, groups=1, grad=True):
    x, offset, mask, weight, bias = [t.detach().clone() for t in tensors]
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    leaves = [t.requires_grad_(grad) for t in (x, offset, mask, weight, bias)]
    with use_backend('extension'):
        out = modulated_deform_conv(x, offset, mask, weight, bias, 1, 1, 1, groups, 1)
    if not grad:
        return out, []
    ramp = torch.linspace(-1, 1, out.numel()).view_as(out)  # a gradient that differs per output element
    grads = torch.autograd.grad((out * ramp).sum(), leaves)
    return out, list(grads)


@pytest.fixture
def extension():
    require_extension()
    ext = _backend.load_extension()
    saved = ext.cpu_gemm()
    yield ext
    ext.set_cpu_gemm(saved)


@pytest.mark.parametrize('groups', [1, 2])
def test_channels_last_input_gives_the_nchw_results_in_channels_last(extension, groups):
    tensors = _case(groups=groups)
    out, grads = _run(tensors, groups=groups)
    out_cl, grads_cl = _run(tensors, channels_last=True, groups=groups)
    assert out_cl.is_contiguous(memory_format=torch.channels_last) and not out_cl.is_contiguous()
    assert grads_cl[0].is_contiguous(memory_format=torch.channels_last)
    # Same columns, same products: only the memory layout differs.
    torch.testing.assert_close(out_cl, out, rtol=0, atol=1e-6)
    for got, want in zip(grads_cl, grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize('product', ['auto', 'onednn', 'blas'])
def test_every_product_library_matches_float64(extension, product):
    tensors = _case(channels=32, out_channels=16, height=20, width=24)
    reference_out, reference_grads = _run([t.double() for t in tensors])  # BLAS in float64
    extension.set_cpu_gemm(product)
    assert extension.cpu_gemm() == product
    for channels_last in (False, True):
        out, grads = _run(tensors, channels_last=channels_last)
        torch.testing.assert_close(out.double(), reference_out, rtol=1e-5, atol=1e-5)
        for got, want in zip(grads, reference_grads):
            torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_unknown_product_library_is_refused(extension):
    with pytest.raises(RuntimeError, match="'auto', 'onednn' or 'blas'"):
        extension.set_cpu_gemm('mkl')


def _child_capability(environment):
    code = ('import json, torch\n'
            'from assets.ops.dcn import _backend, modulated_deform_conv, use_backend\n'
            'from tests.test_dcn_cpu_paths import _case\n'
            'x, offset, mask, weight, bias = _case(channels=24, height=11, width=9, batch=1)\n'
            'with use_backend("extension"):\n'
            '    out = modulated_deform_conv(x, offset, mask, weight, bias, 1, 1)\n'
            'print(json.dumps({"isa": _backend.load_extension().cpu_capability(), "out": out.flatten().tolist()}))\n')
    env = {key: value for key, value in os.environ.items()
           if key not in ('DCN_CPU_CAPABILITY', 'ATEN_CPU_CAPABILITY')}
    env.update(environment)
    done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_forced_instruction_set_is_used_and_gives_the_same_results(extension):
    best = _child_capability({})
    assert best['isa'] in ('avx512', 'avx2', 'default')
    forced = _child_capability({'DCN_CPU_CAPABILITY': 'default'})
    assert forced['isa'] == 'default'
    # torch's own variable is obeyed too, capped at what the CPU has
    via_torch = _child_capability({'ATEN_CPU_CAPABILITY': 'avx2'})
    assert via_torch['isa'] == ('avx2' if best['isa'] in ('avx2', 'avx512') else 'default')
    x, offset, mask, weight, bias = _case(channels=24, height=11, width=9, batch=1)
    with use_backend('extension'):
        want = modulated_deform_conv(*(t.double() for t in (x, offset, mask, weight, bias)), 1, 1).flatten()
    for result in (best, forced, via_torch):
        torch.testing.assert_close(torch.tensor(result['out'], dtype=torch.float64), want, rtol=1e-5, atol=1e-5)


def _bf16(t):
    return t.to(torch.bfloat16).float()


def test_bf16_zero_offsets_is_the_bf16_convolution(extension):
    """Zero offsets and a unit mask copy the bf16 input into the columns exactly, so the op is the convolution of the
    bf16-rounded input and weight, accumulated in float32 and rounded once to bfloat16."""
    x, _, _, weight, bias = _case(channels=32, out_channels=16)
    offset = torch.zeros(2, 18, 13, 17)
    mask = torch.ones(2, 9, 13, 17)
    with torch.no_grad(), use_backend('extension'):
        got = modulated_deform_conv(x.bfloat16(), offset, mask, weight.bfloat16(), bias.bfloat16(), 1, 1)
    assert got.dtype == torch.bfloat16
    want = F.conv2d(_bf16(x), _bf16(weight), _bf16(bias), 1, 1)
    # one bfloat16 rounding of the result (2^-8 relative) plus float32 summation-order noise
    torch.testing.assert_close(got.float(), want, rtol=2 ** -8, atol=1e-3)


def test_bf16_autocast_inference_runs_in_bf16_and_training_stays_float32(extension):
    from assets.ops.dcn import ModulatedDeformConv
    torch.manual_seed(0)
    layer = ModulatedDeformConv(16, 16, 3, padding=1)
    x, offset, mask, _, _ = _case(channels=16)
    with torch.no_grad():
        reference = layer(_bf16(x), offset, mask)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            got = layer(x.bfloat16(), offset.bfloat16(), mask.bfloat16())
    assert got.dtype == torch.bfloat16
    # bf16 inputs of the columns' blend, bf16 columns, bf16 output: a few 2^-8 relative roundings, and the
    # positions rounded to bf16 (offsets of magnitude ~4 move by up to 2^-6 px)
    scale = reference.abs().max().item()
    assert (got.float() - reference).abs().max().item() < 0.05 * scale
    with torch.autocast('cpu', dtype=torch.bfloat16):
        trained = layer(x, offset, mask)  # parameters require grad: the float32 path
    assert trained.dtype == torch.float32


def test_bf16_with_gradients_is_refused_with_a_clear_message(extension):
    x, offset, mask, weight, bias = [t.bfloat16() for t in _case()]
    x.requires_grad_()
    with use_backend('extension'), pytest.raises(TypeError, match='bfloat16 for inference'):
        modulated_deform_conv(x, offset, mask, weight, bias, 1, 1)


@pytest.mark.parametrize('per_thread', [0, 1])
def test_many_small_tiles_match_the_pytorch_formulation(extension, per_thread):
    """Tiles of 64 pixels (many per image, tile edges inside rows, per-thread tiling or not) against the independent
    pure-PyTorch formulation in float64, forward and all gradients, with groups and deformable groups."""
    from assets.ops.dcn import deform_conv2d_pytorch
    generator = torch.Generator().manual_seed(3)
    batch, channels, out_channels, height, width = 2, 8, 6, 19, 23
    x = torch.randn(batch, channels, height, width, generator=generator, dtype=torch.float64)
    offset = torch.randn(batch, 2 * 2 * 9, height, width, generator=generator, dtype=torch.float64) * 1.5
    mask = torch.rand(batch, 2 * 9, height, width, generator=generator, dtype=torch.float64)
    weight = torch.randn(out_channels, channels // 2, 3, 3, generator=generator, dtype=torch.float64) * 0.2
    bias = torch.randn(out_channels, generator=generator, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, offset, mask, weight, bias)]
    want = deform_conv2d_pytorch(*leaves, (1, 1), (1, 1), (1, 1), 2, 2)
    want_grads = torch.autograd.grad(want.sum() + (want ** 2).sum(), leaves)
    extension.set_cpu_tiling(64 * 9 * 4, per_thread)  # 64 pixels of 9 taps x 4 channels per group
    try:
        got_leaves = [t.clone().requires_grad_() for t in (x, offset, mask, weight, bias)]
        with use_backend('extension'):
            got = modulated_deform_conv(*got_leaves, 1, 1, 1, 2, 2)
        got_grads = torch.autograd.grad(got.sum() + (got ** 2).sum(), got_leaves)
    finally:
        extension.set_cpu_tiling(0, -1)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-8)
