"""Deformable convolution (DCNv1 and modulated DCNv2) with selectable backends.

Backends: the compiled extension (C++ CPU and CUDA kernels, build in place with
``python setup.py build_ext --inplace`` in this directory), torchvision's ``deform_conv2d``,
and a pure-PyTorch formulation used while tracing for ONNX export. See docs/dcn.md.

Importing the package registers the extension's kernels as the dispatcher operators
``torch.ops.dbnet.modulated_deform_conv`` and ``torch.ops.dbnet.modulated_deform_conv_backward``
(custom_ops.py), which ``torch.compile`` and ``torch.export`` trace through.
"""
from ._backend import (BACKENDS, active_backend, extension_available, extension_error,
                       extension_has_cpu_bf16, extension_has_cuda, requested_backend, set_backend,
                       use_backend)
from .functions import deform_conv, modulated_deform_conv
from .modules import DeformConv, DeformConvPack, ModulatedDeformConv, ModulatedDeformConvPack
from .pytorch_impl import deform_conv2d_pytorch

__all__ = [
    'BACKENDS', 'active_backend', 'extension_available', 'extension_error', 'extension_has_cpu_bf16',
    'extension_has_cuda',
    'requested_backend', 'set_backend', 'use_backend', 'deform_conv', 'modulated_deform_conv',
    'DeformConv', 'ModulatedDeformConv', 'DeformConvPack', 'ModulatedDeformConvPack',
    'deform_conv2d_pytorch',
]
