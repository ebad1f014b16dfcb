"""``dbnet-build-op`` (``python -m tools.build_op`` in a checkout): compile the deformable convolution op in place,
into the project's ``assets/ops/dcn`` folder, which is the installed package's folder after ``pip install .``.

It runs the op's own build, ``python setup.py build_ext --inplace`` inside that folder (assets/ops/dcn/setup.py),
with the Python that runs this command, so the op is compiled against the torch installed beside the package. The
checkout's set-up (``make setup``, tools/build_op.sh) runs the same build and also reuses an up-to-date one.
Needs a C++ compiler, and torch's headers (they come with torch); ninja speeds it up.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

from concern.config import PROJECT_DIR, ROOT_PACKAGE, project_module

OP_DIR = os.path.join(PROJECT_DIR, 'assets', 'ops', 'dcn')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=f'Compile the deformable convolution op into {OP_DIR} (C++ CPU kernels; CUDA kernels too with '
                    'a CUDA build of torch and a CUDA toolkit). Without it the project runs on torchvision\'s op.')
    parser.add_argument('--cuda', default='auto', choices=['auto', '0', '1'],
                        help='CUDA kernels: auto (when torch is a CUDA build and CUDA_HOME or nvcc gives a toolkit), '
                             '0 (CPU kernels only), 1 (their absence is an error); DCN_WITH_CUDA of build_config.py')
    parser.add_argument('--quiet', action='store_true', help='print only the outcome, not the compiler\'s output')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not os.access(OP_DIR, os.W_OK):
        print(f'dbnet-build-op: cannot write to {OP_DIR}; run it as the user who installed the package',
              file=sys.stderr)
        return 1
    environment = dict(os.environ, DCN_WITH_CUDA=args.cuda)
    # the interpreter's folder first on PATH: ninja installed beside it is found
    environment['PATH'] = os.pathsep.join([os.path.dirname(sys.executable), environment.get('PATH', '')])
    with tempfile.TemporaryDirectory(prefix='dbnet-build-op-') as scratch:  # only the op itself lands in OP_DIR
        command = [sys.executable, 'setup.py', 'build_ext', '--inplace', '--build-temp', os.path.join(scratch, 'temp'),
                   '--build-lib', os.path.join(scratch, 'lib')]
        print(f'dbnet-build-op: compiling in {OP_DIR} ({" ".join(command[1:4])})', flush=True)
        output = subprocess.DEVNULL if args.quiet else None
        status = subprocess.run(command, cwd=OP_DIR, env=environment, stdout=output, stderr=output).returncode
    if status != 0:
        print(f'dbnet-build-op: the build failed (exit status {status}); the project keeps running on '
              "torchvision's op", file=sys.stderr)
        return status
    # a fresh process: this one may have the previous build loaded
    probe = (f'from {project_module("assets.ops.dcn")} import extension_error, extension_has_cuda\n'
             'error = extension_error()\n'
             'print("dbnet-build-op: the op does not load: " + error if error else "dbnet-build-op: built, "\n'
             '      + ("CPU and CUDA kernels" if extension_has_cuda() else "CPU kernels"))\n'
             'raise SystemExit(1 if error else 0)\n')
    # run where the project's root package is importable: the checkout's root, or the folder holding ``dbnet``
    where = os.path.dirname(PROJECT_DIR) if ROOT_PACKAGE else PROJECT_DIR
    return subprocess.run([sys.executable, '-c', probe], cwd=where).returncode


if __name__ == '__main__':
    sys.exit(main())
