"""Build the deformable convolution extension in place:

    cd assets/ops/dcn && python setup.py build_ext --inplace

C++ CPU kernels are always built. CUDA kernels are added when PyTorch is a CUDA build and a
CUDA toolkit is found (CUDA_HOME, or nvcc on PATH); set DCN_WITH_CUDA=0 to skip them, or
DCN_WITH_CUDA=1 to fail when they cannot be built. TORCH_CUDA_ARCH_LIST (default "8.0;9.0")
picks the GPU architectures compiled for.
"""
import os
import sys

from setuptools import setup
import torch
from torch.utils import cpp_extension

HERE = os.path.dirname(os.path.abspath(__file__))
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


def make_extension():
    cxx_flags = ['-O3', '-fopenmp-simd']
    if want_cuda():
        os.environ.setdefault('TORCH_CUDA_ARCH_LIST', '8.0;9.0')
        print(f'dcn: building CPU + CUDA kernels (CUDA_HOME={cpp_extension.CUDA_HOME}, '
              f'TORCH_CUDA_ARCH_LIST={os.environ["TORCH_CUDA_ARCH_LIST"]})')
        return cpp_extension.CUDAExtension(
            '_dcn_ext', SOURCES_CPP + SOURCES_CUDA, define_macros=[('WITH_CUDA', None)],
            extra_compile_args={'cxx': cxx_flags, 'nvcc': ['-O3']})
    print('dcn: building CPU kernels only (no CUDA toolkit or CPU-only torch)')
    return cpp_extension.CppExtension('_dcn_ext', SOURCES_CPP, extra_compile_args={'cxx': cxx_flags})


os.chdir(HERE)
setup(
    name='dcn_ext',
    ext_modules=[make_extension()],
    cmdclass={'build_ext': cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
