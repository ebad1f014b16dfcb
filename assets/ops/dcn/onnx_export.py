"""How the deformable convolution is written into an ONNX graph (the TorchScript exporter, ``dynamo=False``).

Two forms, chosen by the caller of ``torch.onnx.export`` with ``onnx_deform_conv_format``:

* ``'onnx'``: one standard ``DeformConv`` node per convolution (ai.onnx, opset 19 and later: inputs X, W, offset,
  B, mask; attributes dilations, group, kernel_shape, offset_group, pads, strides). The op's offset layout is
  ONNX's (and torchvision's): channel ``2 k`` holds dy, ``2 k + 1`` dx of kernel tap ``k`` (row-major over kh x kw)
  within each offset group, the mask one channel per tap, so the tensors go into the node as they are.
  onnxruntime 1.32 runs it (``onnxruntime_runs_deform_conv`` probes that); OpenVINO's ONNX frontend and older
  runtimes have no rule for it.
* ``'portable'`` (the default): the pure-PyTorch formulation (pytorch_impl.py: bilinear gathers and a MatMul),
  standard operators of every opset, slower (3-4x in onnxruntime).

While the TorchScript exporter traces in the ``'onnx'`` form the backend resolves to ``'onnx'`` (_backend.py) and
the functions call ``deform_conv_onnx``: the operator ``dbnet::deform_conv_onnx`` (``torch.library.custom_op``,
computed by the pure-PyTorch formulation), which the tracer records as one node and the symbolic function registered
for opset 19 writes as ``DeformConv``. (An ``autograd.Function`` with a ``symbolic`` method was the first try: the
exporter's peephole pass fails on the block its traced forward records, ``IndexError: Argument passed to at() was
not in the map``, on torch 2.14.) The torch.export-based exporter (``dynamo=True``) is not supported in this form.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from . import _backend
from .pytorch_impl import deform_conv2d_pytorch

ONNX_FORMATS = ('onnx', 'portable')
DEFORM_CONV_OPSET = 19  # the first opset of ai.onnx DeformConv
ONNX_OPERATOR = 'dbnet::deform_conv_onnx'  # what the exporter's tracer records in the 'onnx' form

_runtime_probe: Optional[Tuple[bool, str]] = None
_symbolic_registered = False


@contextlib.contextmanager
def onnx_deform_conv_format(name: str) -> Iterator[None]:
    """``with onnx_deform_conv_format('onnx'): torch.onnx.export(..., opset_version=19, dynamo=False)``: the
    deformable convolutions exported inside become ``DeformConv`` nodes ('onnx') or the portable formulation
    ('portable'); the previous choice is restored on exit."""
    if name not in ONNX_FORMATS:
        raise ValueError(f'unknown ONNX form of the deformable convolution {name!r}; expected one of {ONNX_FORMATS}')
    if name == 'onnx':
        _register_symbolic()
    with _backend.onnx_deform_conv(name == 'onnx'):
        yield


def _register_symbolic() -> None:
    """Tell the TorchScript exporter how to write ``dbnet::deform_conv_onnx`` (once; torch.onnx is imported here,
    not when the package is)."""
    global _symbolic_registered
    if not _symbolic_registered:
        from torch.onnx import symbolic_helper
        # tensors as graph values, the int lists and ints as Python values
        parse = symbolic_helper.parse_args('v', 'v', 'v', 'v', 'v', 'is', 'is', 'is', 'i', 'i')
        symbolic = parse(_deform_conv_symbolic)
        torch.onnx.register_custom_op_symbolic(ONNX_OPERATOR, symbolic, DEFORM_CONV_OPSET)
        _symbolic_registered = True


@torch.library.custom_op(ONNX_OPERATOR, mutates_args=())
def _deform_conv_for_onnx(input: Tensor, offset: Tensor, mask: Optional[Tensor], weight: Tensor,
                          bias: Optional[Tensor], stride: List[int], padding: List[int], dilation: List[int],
                          groups: int, deformable_groups: int) -> Tensor:
    """The op as the ONNX exporter's tracer records it: one node, computed by the pure-PyTorch formulation."""
    return deform_conv2d_pytorch(input, offset, mask, weight, bias, (stride[0], stride[1]), (padding[0], padding[1]),
                                 (dilation[0], dilation[1]), groups, deformable_groups)


def _deform_conv_symbolic(g, input, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups):
    """``dbnet::deform_conv_onnx`` -> ``DeformConv(X, W, offset[, B[, mask]])``: the layouts are the same, so the
    tensors go in as they are; an absent bias before a given mask is written as zeros (B precedes mask)."""
    from torch.onnx import symbolic_helper
    kernel = symbolic_helper._get_tensor_sizes(weight)[2:]
    inputs = [input, weight, offset]
    if not symbolic_helper._is_none(mask):
        if symbolic_helper._is_none(bias):
            out_channels = symbolic_helper._get_tensor_sizes(weight)[0]
            bias = g.op('Constant', value_t=torch.zeros(out_channels))
        inputs += [bias, mask]
    elif not symbolic_helper._is_none(bias):
        inputs.append(bias)
    return g.op('DeformConv', *inputs, dilations_i=dilation, group_i=groups, kernel_shape_i=kernel,
                offset_group_i=deformable_groups, pads_i=[padding[0], padding[1], padding[0], padding[1]],
                strides_i=stride)


def deform_conv_onnx(input: Tensor, offset: Tensor, mask: Optional[Tensor], weight: Tensor,
                     bias: Optional[Tensor], stride: Tuple[int, int], padding: Tuple[int, int],
                     dilation: Tuple[int, int], groups: int, deformable_groups: int) -> Tensor:
    """Same contract as the other backends (inputs validated); exported as one ``DeformConv`` node."""
    return _deform_conv_for_onnx(input, offset, mask, weight, bias, list(stride), list(padding), list(dilation),
                                 groups, deformable_groups)


def onnxruntime_runs_deform_conv() -> Tuple[bool, str]:
    """(whether the installed onnxruntime runs ``DeformConv`` as this op computes it, why not). Probed once per
    process with a one-node model (a 3x3 modulated convolution of a 1x2x5x6 image with random offsets, some
    sampling outside the image) against the pure-PyTorch formulation; the answer is cached."""
    global _runtime_probe
    if _runtime_probe is None:
        _runtime_probe = _probe_runtime()
    return _runtime_probe


def _probe_runtime() -> Tuple[bool, str]:
    try:
        import onnxruntime
        from onnx import TensorProto, helper
    except ImportError as error:
        return False, f'onnxruntime or onnx is not importable ({error})'
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    offset = (3 * rng.standard_normal((1, 18, 5, 6))).astype(np.float32)
    mask = rng.random((1, 9, 5, 6)).astype(np.float32)
    node = helper.make_node('DeformConv', ['x', 'w', 'offset', 'b', 'mask'], ['y'], kernel_shape=[3, 3],
                            pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1, offset_group=1)
    names = ('x', 'w', 'offset', 'b', 'mask')
    graph = helper.make_graph([node], 'deform_conv_probe',
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, array.shape)
                               for name, array in zip(names, (x, w, offset, b, mask))],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, (1, 3, 5, 6))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', DEFORM_CONV_OPSET)])
    try:
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
        got = session.run(None, dict(zip(names, (x, w, offset, b, mask))))[0]
    except Exception as error:  # onnxruntime's own exception types: no kernel for DeformConv(19), ...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return False, f'onnxruntime {onnxruntime.__version__} cannot run DeformConv ({first_line})'
    expected = deform_conv2d_pytorch(torch.from_numpy(x), torch.from_numpy(offset), torch.from_numpy(mask),
                                     torch.from_numpy(w), torch.from_numpy(b), (1, 1), (1, 1), (1, 1), 1, 1).numpy()
    difference = float(np.abs(got - expected).max())
    if not difference <= 1e-4:
        return False, (f'onnxruntime {onnxruntime.__version__} runs DeformConv but differs from this op by '
                       f'{difference:.3g}')
    return True, f'onnxruntime {onnxruntime.__version__} runs DeformConv'
