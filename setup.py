"""Install the project as one package, ``dbnet`` (``pip install .``); the metadata is in pyproject.toml.

Every module of the checkout is installed under ``dbnet.`` (``dbnet.structure.model``, ``dbnet.train``) with its
imports rewritten at build time, and nothing else is put at the top level of site-packages: tools/build_package.py
says how and why. An editable install (``pip install -e .``) is refused with the supported ways named.

The deformable convolution op is compiled only when asked, so that ``pip install .`` needs nothing but setuptools
(pip's isolated build has no torch): ``DBNET_BUILD_OPS=1 pip install --no-build-isolation .`` compiles it into the
package (torch must be installed first); otherwise the package is pure Python, runs on torchvision's op (or the
pure-PyTorch formulation), and ``dbnet-build-op`` compiles the op into the installed package later. The checkout's
own build (``make setup``, tools/build_op.sh: ``cd assets/ops/dcn && python setup.py build_ext --inplace``) does
not go through this file.
"""
import importlib.util
import os

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop
from setuptools.command.editable_wheel import editable_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
OP_DIR = os.path.join(HERE, 'assets', 'ops', 'dcn')
BUILD_OPS = 'DBNET_BUILD_OPS'


def load_by_path(name: str, path: str):
    """The module at ``path``, loaded without importing its package (whose modules need torch)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def op_extension():
    """([the DCN extension], {'build_ext': its command}) when DBNET_BUILD_OPS=1, else nothing to compile."""
    choice = os.environ.get(BUILD_OPS, '0').strip().lower()
    if choice in ('', '0', 'false', 'no'):
        return [], {}
    if choice not in ('1', 'true', 'yes'):
        raise SystemExit(f'{BUILD_OPS}={choice!r}: expected 1 (compile the DCN op) or 0 (pure Python, the default)')
    try:
        import torch  # noqa: F401 - the op is compiled against it
    except ImportError:
        raise SystemExit(f'{BUILD_OPS}=1 compiles the DCN op against the installed torch, which this build cannot '
                         'import: install torch first, then build without isolation: '
                         f'{BUILD_OPS}=1 pip install --no-build-isolation . (or install without {BUILD_OPS} and '
                         'run dbnet-build-op afterwards)') from None
    build_config = load_by_path('dcn_build_config', os.path.join(OP_DIR, 'build_config.py'))
    extension = build_config.make_extension(prefix=os.path.relpath(OP_DIR, HERE), name='dbnet.assets.ops.dcn._dcn_ext')
    return [extension], {'build_ext': build_config.build_ext_command()}


package_tree = load_by_path('dbnet_build_package', os.path.join(HERE, 'tools', 'build_package.py'))
extensions, extension_commands = op_extension()
setup(
    packages=package_tree.packages(package_tree.TOP_PACKAGE, HERE),
    package_dir={package_tree.TOP_PACKAGE: '.'},
    package_data=package_tree.PACKAGE_DATA,
    ext_modules=extensions,
    cmdclass={'build_py': package_tree.make_build_py(build_py),
              'editable_wheel': package_tree.refuse_editable(editable_wheel),
              'develop': package_tree.refuse_editable(develop),
              **extension_commands},
)
