"""How the DCN extension is built; shared by assets/ops/dcn/setup.py and the project's setup.py.

C++ CPU kernels are always built. CUDA kernels are added when PyTorch is a CUDA build and a CUDA
toolkit is found (CUDA_HOME, or nvcc on PATH); DCN_WITH_CUDA=0 skips them, DCN_WITH_CUDA=1 makes their
absence an error. TORCH_CUDA_ARCH_LIST (default "8.0;9.0") picks the GPU architectures compiled for.
"""
import os
import sys

import torch
from torch.utils import cpp_extension

SOURCES_CPP = ['src/dcn.cpp', 'src/dcn_cpu.cpp']
SOURCES_CUDA = ['src/dcn_cuda.cu']


def want_cuda() -> bool:
    choice = os.environ.get('DCN_WITH_CUDA', 'auto').lower()
    found = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if choice in ('0', 'false', 'no'):
        return False
    if choice in ('1', 'true', 'yes') and not found:
        sys.exit('DCN_WITH_CUDA=1 but no CUDA build of torch or no CUDA toolkit '
                 f'(torch.version.cuda={torch.version.cuda}, CUDA_HOME={cpp_extension.CUDA_HOME})')
    return found


def make_extension(prefix: str = '', name: str = '_dcn_ext'):
    """The extension ``name`` built from the sources under ``prefix`` (relative to the setup script)."""
    cxx_flags = ['-O3', '-fopenmp-simd']
    cpp = [os.path.join(prefix, source) for source in SOURCES_CPP]
    if want_cuda():
        os.environ.setdefault('TORCH_CUDA_ARCH_LIST', '8.0;9.0')
        print(f'dcn: building CPU + CUDA kernels (CUDA_HOME={cpp_extension.CUDA_HOME}, '
              f'TORCH_CUDA_ARCH_LIST={os.environ["TORCH_CUDA_ARCH_LIST"]})')
        return cpp_extension.CUDAExtension(
            name, cpp + [os.path.join(prefix, source) for source in SOURCES_CUDA],
            define_macros=[('WITH_CUDA', None)],
            extra_compile_args={'cxx': cxx_flags, 'nvcc': ['-O3']})
    print('dcn: building CPU kernels only (no CUDA toolkit, CPU-only torch, or DCN_WITH_CUDA=0)')
    return cpp_extension.CppExtension(name, cpp, extra_compile_args={'cxx': cxx_flags})


def build_ext_command():
    return cpp_extension.BuildExtension.with_options(use_ninja=True)
