"""Deformable convolution on CUDA: the extension's CUDA kernels against torchvision, the
pure-PyTorch formulation and the CPU kernels. Skipped without a GPU."""
from __future__ import annotations

import pytest
import torch

from assets.ops.dcn import extension_has_cuda, modulated_deform_conv, use_backend
from tests.dcn_helpers import CASES, Case, assert_close_all, require_extension, run_op

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device'),
]


def _require_cuda_extension():
    require_extension()
    if not extension_has_cuda():
        pytest.fail('the dcn extension was built without CUDA kernels; rebuild it with '
                    '`cd assets/ops/dcn && CUDA_HOME=/usr/local/cuda python setup.py build_ext --inplace`')


@pytest.mark.parametrize('modulated', [True, False], ids=['dcnv2', 'dcnv1'])
@pytest.mark.parametrize('backend', ['extension', 'pytorch'])
@pytest.mark.parametrize('case', CASES, ids=[c.name for c in CASES])
def test_cuda_matches_torchvision(case, backend, modulated):
    if backend == 'extension':
        _require_cuda_extension()
    tensors = case.make(torch.float32, device='cuda')
    reference = run_op('torchvision', tensors, case, modulated)
    assert_close_all(run_op(backend, tensors, case, modulated), reference, atol=1e-4)


@pytest.mark.parametrize('case', CASES, ids=[c.name for c in CASES])
def test_cuda_matches_cpu_extension(case):
    _require_cuda_extension()
    cpu = run_op('extension', case.make(torch.float64), case, True)
    gpu = run_op('extension', case.make(torch.float64, device='cuda'), case, True)
    assert_close_all([t.cpu() if t is not None else None for t in gpu], cpu, atol=1e-9)


@pytest.mark.parametrize('dtype,atol', [(torch.float16, 2e-2), (torch.bfloat16, 1.5e-1)])
def test_cuda_half_precision_close_to_float32(dtype, atol):
    _require_cuda_extension()
    case = Case('half', channels=16, out_channels=8, height=9, width=11)
    reference = run_op('extension', case.make(torch.float32, device='cuda'), case, True)
    got = run_op('extension', case.make(dtype, device='cuda'), case, True)
    assert all(t.dtype == dtype for t in got if t is not None)
    scale = [max(1.0, r.abs().max().item()) if r is not None else 1.0 for r in reference]
    for name, g, r, s in zip(['out', 'input', 'offset', 'mask', 'weight', 'bias'], got, reference, scale):
        error = (g.float() - r).abs().max().item() / s
        assert error <= atol, f'{name}: relative error {error:.3g} > {atol}'


def test_cuda_gradcheck_float64():
    _require_cuda_extension()
    case = Case('tiny', batch=1, channels=4, height=4, width=3, out_channels=2, groups=2,
                deformable_groups=2, offset_scale=1.3)
    tensors = [t.requires_grad_() for t in case.make(torch.float64, device='cuda', seed=3)]
    kwargs = case.kwargs()

    def fn(*args):
        with use_backend('extension'):
            return modulated_deform_conv(*args, **kwargs)

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-5)
