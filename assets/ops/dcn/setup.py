"""Build the deformable convolution extension in place:

    cd assets/ops/dcn && python setup.py build_ext --inplace

(``tools/build_op.sh`` and the Makefile do this, reusing an up-to-date build.) Options are described
in build_config.py: DCN_WITH_CUDA=0|1|auto, TORCH_CUDA_ARCH_LIST.
"""
import os
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from build_config import build_ext_command, make_extension  # noqa: E402

os.chdir(HERE)
setup(
    name='dcn_ext',
    ext_modules=[make_extension()],
    cmdclass={'build_ext': build_ext_command()},
)
