"""The extension's deformable convolution as a dispatcher operator (``torch.ops.dbnet.*``, custom_ops.py).

The registration is checked with ``torch.library.opcheck`` (schema, autograd registration, fake kernel against the
real one, AOT dispatch with dynamic shapes); its results against independent references: F.conv2d (zero offsets,
unit mask) and autograd through the pure-PyTorch formulation. ``torch.compile`` of the deformable ResNet-18 DBNet
traces to a single graph holding one operator call per deformable layer and gives the eager output, and so does
``torch.export``. The ONNX exporters keep using the pure-PyTorch formulation.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from assets.ops.dcn import ModulatedDeformConv, active_backend, deform_conv, modulated_deform_conv, use_backend
from structure.builder import Builder
from tests.dcn_helpers import Case, max_error, require_extension

FORWARD = torch.ops.dbnet.modulated_deform_conv.default
BACKWARD = torch.ops.dbnet.modulated_deform_conv_backward.default
CASE = Case('dispatcher', batch=2, channels=4, height=6, width=7, out_channels=6, stride=(1, 2), padding=(1, 1),
            dilation=(1, 1), groups=2, deformable_groups=2)
MODEL_ARGS = {'backbone': 'deformable_resnet18', 'decoder': 'SegDetector',
              'decoder_args': {'adaptive': True, 'in_channels': [64, 128, 256, 512], 'k': 50}}


@pytest.fixture(autouse=True)
def _extension_and_fresh_dynamo():
    require_extension()
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _op_args(case: Case, modulated: bool, bias: bool, channels_last: bool = False, requires_grad: bool = False,
             device: str = 'cpu'):
    x, offset, mask, weight, b = case.make(torch.float32, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    tensors = [x, offset, mask if modulated else None, weight, b if bias else None]
    tensors = [t.requires_grad_(requires_grad) if t is not None else None for t in tensors]
    return (*tensors, list(case.stride), list(case.padding), list(case.dilation), case.groups,
            case.deformable_groups)


def _dcn_layers(model: torch.nn.Module) -> int:
    return sum(isinstance(module, ModulatedDeformConv) for module in model.modules())


def _op_calls(graph: torch.fx.Graph) -> int:
    return sum(node.op == 'call_function' and node.target in (FORWARD, torch.ops.dbnet.modulated_deform_conv)
               for node in graph.nodes)


# --- the registration ----------------------------------------------------------------------------

def test_both_operators_have_cpu_cuda_fake_and_autograd_kernels():
    """One registration serves both devices: a CUDA tensor reaches the extension through the same operator
    (the extension then runs its CUDA kernels); Meta is the fake kernel."""
    for name in ('dbnet::modulated_deform_conv', 'dbnet::modulated_deform_conv_backward'):
        for key in ('CPU', 'CUDA', 'Meta'):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(name, key), f'{name} has no {key} kernel'
    assert torch._C._dispatch_has_kernel_for_dispatch_key('dbnet::modulated_deform_conv', 'Autograd')
    schema = str(FORWARD._schema)
    assert 'Tensor? mask' in schema and 'Tensor? bias' in schema and schema.endswith('-> Tensor')


@pytest.mark.parametrize('modulated,bias,channels_last', [(True, True, False), (False, False, False),
                                                          (True, True, True), (False, True, True)],
                         ids=['mask_bias', 'no_mask_no_bias', 'mask_bias_channels_last', 'no_mask_channels_last'])
def test_opcheck_forward_and_backward(modulated, bias, channels_last):
    for requires_grad in (False, True):
        args = _op_args(CASE, modulated, bias, channels_last, requires_grad)
        torch.library.opcheck(FORWARD, args)
    x, offset, mask, weight, _ = _op_args(CASE, modulated, bias, channels_last)[:5]
    grad_output = torch.randn(CASE.batch, CASE.out_channels, *CASE.out_size(),
                              generator=torch.Generator().manual_seed(3))
    if channels_last:
        grad_output = grad_output.contiguous(memory_format=torch.channels_last)
    has_bias = bias
    torch.library.opcheck(BACKWARD, (grad_output, x, offset, mask, weight, has_bias, list(CASE.stride),
                                     list(CASE.padding), list(CASE.dilation), CASE.groups, CASE.deformable_groups))


def test_operator_with_zero_offsets_and_unit_mask_is_conv2d():
    x, offset, mask, weight, bias = CASE.make(torch.float32)
    got = FORWARD(x, torch.zeros_like(offset), torch.ones_like(mask), weight, bias, list(CASE.stride),
                  list(CASE.padding), list(CASE.dilation), CASE.groups, CASE.deformable_groups)
    want = F.conv2d(x, weight, bias, CASE.stride, CASE.padding, CASE.dilation, CASE.groups)
    assert got.shape == want.shape == (2, 6, 6, 4)
    assert max_error(got, want) <= 1e-5


@pytest.mark.parametrize('modulated', [True, False], ids=['dcnv2', 'dcnv1'])
def test_backward_operator_equals_autograd_of_the_pytorch_formulation(modulated):
    """The five gradients of sum(out * G), against autograd through the gather + matmul formulation; an absent
    mask or bias gets an empty placeholder (an operator cannot return None)."""
    x, offset, mask, weight, bias = [t.requires_grad_() for t in CASE.make(torch.float32)]
    mask = mask if modulated else None
    with use_backend('pytorch'):
        out = modulated_deform_conv(x, offset, mask, weight, bias, **CASE.kwargs()) if modulated else \
            deform_conv(x, offset, weight, bias=bias, **CASE.kwargs())
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    inputs = [x, offset, weight, bias] + ([mask] if modulated else [])
    want = dict(zip(['input', 'offset', 'weight', 'bias', 'mask'], torch.autograd.grad((out * probe).sum(), inputs)))
    for has_bias in (True, False):
        got = BACKWARD(probe, x.detach(), offset.detach(), None if mask is None else mask.detach(), weight.detach(),
                       has_bias, list(CASE.stride), list(CASE.padding), list(CASE.dilation), CASE.groups,
                       CASE.deformable_groups)
        got = dict(zip(['input', 'offset', 'mask', 'weight', 'bias'], got))
        for name in ('input', 'offset', 'weight'):
            assert max_error(got[name], want[name]) <= 1e-4, name
        if modulated:
            assert max_error(got['mask'], want['mask']) <= 1e-4
        else:
            assert got['mask'].numel() == 0
        if has_bias:
            assert max_error(got['bias'], want['bias']) <= 1e-4
        else:
            assert got['bias'].numel() == 0


def test_fake_kernel_gives_the_kernels_memory_formats():
    """A channels-last CPU input gives a channels-last output and input gradient, in the real kernels and in the
    fake ones alike; an NCHW input gives NCHW."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    for channels_last in (False, True):
        args = _op_args(CASE, True, True, channels_last)
        grad_output = torch.ones(CASE.batch, CASE.out_channels, *CASE.out_size())
        real = [FORWARD(*args)] + list(BACKWARD(grad_output, *args[:4], True, *args[5:]))
        with FakeTensorMode() as mode:
            fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
            fake = [FORWARD(*fake_args)] + list(BACKWARD(mode.from_tensor(grad_output), *fake_args[:4], True,
                                                         *fake_args[5:]))
        for name, a, b in zip(('output', 'grad_input', 'grad_offset', 'grad_mask', 'grad_weight', 'grad_bias'),
                              real, fake):
            assert (a.shape, a.stride(), a.dtype) == (b.shape, b.stride(), b.dtype), name
        for tensor in (real[0], real[1]):
            assert tensor.is_contiguous(memory_format=torch.channels_last) == channels_last
            assert tensor.is_contiguous() != channels_last


# --- torch.compile -------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def model_and_image():
    """The deformable ResNet-18 DBNet (eval) with random offset convolutions, so that the offsets are fractional
    and the masks vary, and a 1x3x64x64 image."""
    torch.manual_seed(0)
    model = Builder('SegDetectorModel', MODEL_ARGS).build().eval()
    for name, parameter in model.named_parameters():
        if 'conv2_offset' in name:
            torch.nn.init.normal_(parameter, std=0.05)
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    return model, image


def _recording(graphs):
    """A compile backend that keeps each Dynamo graph and runs it with aot_eager (AOT autograd, no codegen)."""
    aot_eager = torch._dynamo.lookup_backend('aot_eager')

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return aot_eager(graph_module, example_inputs)
    return backend


def test_compiled_model_is_one_graph_with_the_operator_and_equals_eager(model_and_image):
    model, image = model_and_image
    layers = _dcn_layers(model)
    assert layers == 6  # conv2 of both BasicBlocks of layer2..layer4
    with torch.no_grad():
        eager = model(image)
        explanation = torch._dynamo.explain(model)(image)
        assert explanation.graph_break_count == 0 and explanation.graph_count == 1
        graphs = []
        compiled = torch.compile(model, fullgraph=True, backend=_recording(graphs))
        got = compiled(image)
    assert len(graphs) == 1 and _op_calls(graphs[0].graph) == layers
    assert got.shape == eager.shape == (1, 1, 64, 64)
    assert max_error(got, eager) <= 1e-5


@pytest.mark.parametrize('modulated,channels_last', [(True, False), (False, False), (True, True)],
                         ids=['dcnv2', 'dcnv1', 'dcnv2_channels_last'])
def test_compiled_layer_gradients_equal_the_pytorch_formulation(modulated, channels_last):
    """The training path under compile: forward and all gradients of a small DCN layer, compiled (AOT autograd
    traces the backward operator), against eager autograd through the pure-PyTorch formulation."""
    def loss(x, offset, mask, weight, bias, probe):
        if modulated:
            out = modulated_deform_conv(x, offset, mask, weight, bias, **CASE.kwargs())
        else:
            out = deform_conv(x, offset, weight, bias=bias, **CASE.kwargs())
        return (out * probe).sum()

    x, offset, mask, weight, bias = _op_args(CASE, True, True, channels_last, requires_grad=True)[:5]
    tensors = (x, offset, mask, weight, bias)
    probe = torch.randn(CASE.batch, CASE.out_channels, *CASE.out_size(), generator=torch.Generator().manual_seed(9))
    inputs = [x, offset, mask, weight, bias] if modulated else [x, offset, weight, bias]
    graphs = []
    compiled = torch.compile(loss, fullgraph=True, backend=_recording(graphs))
    got_loss = compiled(*tensors, probe)
    got = torch.autograd.grad(got_loss, inputs)
    with use_backend('pytorch'):
        want_loss = loss(*tensors, probe)
    want = torch.autograd.grad(want_loss, inputs)
    assert len(graphs) == 1 and _op_calls(graphs[0].graph) == 1
    assert abs(got_loss.item() - want_loss.item()) <= 1e-3
    for tensor, a, b in zip(inputs, got, want):
        assert a.shape == tensor.shape
        assert max_error(a, b) <= 1e-4


@pytest.mark.slow  # about 30 s on two cores with a cold Inductor cache (C++ compilation of the generated kernels)
def test_inductor_compiled_layer_equals_eager():
    """The default backend (Inductor) calls the operator as an external kernel: same output and input gradient."""
    torch.manual_seed(0)
    layer = ModulatedDeformConv(4, 6, 3, **CASE.kwargs())
    x, offset, mask = CASE.make(torch.float32)[:3]
    x.requires_grad_()

    def run(x):
        return torch.relu(layer(x * 2, offset, mask))

    eager = run(x)
    (grad_eager,) = torch.autograd.grad(eager.sum(), x)
    compiled = torch.compile(run, fullgraph=True)
    got = compiled(x)
    (grad_got,) = torch.autograd.grad(got.sum(), x)
    assert max_error(got, eager) <= 1e-5 and max_error(grad_got, grad_eager) <= 1e-5


@pytest.mark.slow  # about 80 s on two cores
def test_inductor_compiled_model_equals_eager(model_and_image):
    model, image = model_and_image
    with torch.no_grad():
        eager = model(image)
        got = torch.compile(model, fullgraph=True)(image)
    assert max_error(got, eager) <= 1e-4


# --- torch.export and ONNX -----------------------------------------------------------------------

def test_exported_model_holds_the_operator_and_equals_eager(model_and_image):
    model, image = model_and_image
    exported = torch.export.export(model, (image,))
    assert _op_calls(exported.graph) == _dcn_layers(model)
    other = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for x in (image, other):
            assert max_error(exported.module()(x), model(x)) <= 1e-5


def test_onnx_exporters_use_the_pytorch_formulation(monkeypatch):
    """Both ONNX exporters (TorchScript: torch.jit tracing; dynamo: torch.onnx's flag) select the formulation
    that ONNX can express; compiling does not."""
    from torch.onnx._internal.exporter import _flags
    with use_backend('auto'):
        assert active_backend('cpu') == 'extension'
        monkeypatch.setattr(_flags, '_is_onnx_exporting', True)
        assert active_backend('cpu') == 'pytorch'
        monkeypatch.setattr(_flags, '_is_onnx_exporting', False)

        seen = []

        def probe(x):
            seen.append(active_backend(x.device))
            return x + 1
        torch.compile(probe, fullgraph=True, backend='eager')(torch.zeros(2))
    assert seen == ['extension']


@pytest.mark.slow  # about 15 s of CPU
@pytest.mark.filterwarnings('ignore')
def test_dynamo_onnx_export_runs_in_onnxruntime():
    """The dynamo-based ONNX exporter (torch.export underneath) also gets the pure-PyTorch formulation: the graph
    has no dbnet operator, runs in plain onnxruntime and matches the layer."""
    onnxruntime = pytest.importorskip('onnxruntime')
    pytest.importorskip('onnxscript')
    from assets.ops.dcn import ModulatedDeformConvPack
    torch.manual_seed(0)
    layer = ModulatedDeformConvPack(4, 6, 3, padding=1).eval()
    torch.nn.init.normal_(layer.conv_offset_mask.weight, std=0.3)
    x = torch.randn(1, 4, 7, 9)
    with use_backend('auto'):
        program = torch.onnx.export(layer, (x,), dynamo=True, opset_version=18)
    nodes = program.model_proto.graph.node
    assert {'GatherElements', 'MatMul'} <= {node.op_type for node in nodes}
    assert {node.domain for node in nodes} <= {'', 'ai.onnx'}  # standard operators only
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString())
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad(), use_backend('torchvision'):
        expected = layer(x)
    assert max_error(torch.from_numpy(got), expected) <= 1e-4


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_cuda_tensors_go_through_the_same_operator():
    from assets.ops.dcn import extension_has_cuda
    if not extension_has_cuda():
        pytest.fail('the dcn extension was built without CUDA kernels')
    cpu_args = _op_args(CASE, True, True)
    cuda_args = _op_args(CASE, True, True, device='cuda')
    torch.library.opcheck(FORWARD, _op_args(CASE, True, True, requires_grad=True, device='cuda'))
    got = FORWARD(*cuda_args)
    assert got.device.type == 'cuda' and got.is_contiguous()
    assert max_error(got, FORWARD(*cpu_args)) <= 1e-4
    with torch.no_grad():
        compiled = torch.compile(lambda *a: modulated_deform_conv(*a, **CASE.kwargs()), fullgraph=True,
                                 backend='aot_eager')
        assert max_error(compiled(*cuda_args[:5]), got) <= 1e-5
