"""Install the project (``pip install --no-build-isolation -e .``) and build the DCN op in place.

The extension is described once, in assets/ops/dcn/setup.py (``make_extension``); here it is built as
``assets.ops.dcn._dcn_ext`` so that an editable install puts it where ``python setup.py build_ext --inplace``
inside assets/ops/dcn would.
"""
import importlib.util
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
OP_DIR = os.path.join(HERE, 'assets', 'ops', 'dcn')


def dcn_extension_and_command():
    spec = importlib.util.spec_from_file_location('dcn_build', os.path.join(OP_DIR, 'build_config.py'))
    build_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_config)
    return build_config.make_extension(prefix=os.path.relpath(OP_DIR, HERE), name='assets.ops.dcn._dcn_ext'), \
        build_config.build_ext_command()


with open(os.path.join(HERE, 'requirement.txt')) as stream:
    requirements = [line.strip() for line in stream if line.strip() and not line.startswith('#')]

extension, build_ext = dcn_extension_and_command()
setup(
    name='dbnet',
    version='0.1.0',
    description='DBNet / DBNet++ scene text detection in modern PyTorch',
    python_requires='>=3.10',
    packages=find_packages(include=['assets*', 'backbones*', 'concern*', 'data*', 'decoders*', 'inference*',
                                    'structure*', 'training*', 'benchmarks*', 'tools*']),
    py_modules=['experiment', 'train', 'eval', 'demo', 'convert_to_onnx'],
    install_requires=requirements,
    extras_require={'onnx': ['onnx>=1.15', 'onnxruntime>=1.17', 'onnxscript>=0.1']},
    ext_modules=[extension],
    cmdclass={'build_ext': build_ext},
)
