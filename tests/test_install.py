"""The installed package (issue 27): ``pip install .`` builds without torch, installs every module under one package,
``dbnet``, with nothing else at the top level of site-packages, and gives the commands; an experiment file loads
through the installed package unchanged, and the "classes only from this project's modules" rule holds there too.

The fast tests build the installed tree with setup.py's ``build_py`` (tools/build_package.py) and import it from
another folder; one (about a minute) installs a copy of the working tree with pip into a fresh virtual environment,
in the default suite (issue 27: the fresh-venv install test runs in `make test`)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from typing import Dict, List, Optional

import pytest

from tools.build_package import MODULES, PACKAGES, ROOTS, RewriteError, check_rewritten, rewrite_imports

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = 'experiments/seg_detector/synthetic_resnet18_deform_thre.yaml'
COMMANDS = ('dbnet-train', 'dbnet-eval', 'dbnet-demo', 'dbnet-score', 'dbnet-export', 'dbnet-build-op')
# The runtime dependencies' import names: pip's isolated build has none of them.
DEPENDENCIES = ('torch', 'torchvision', 'numpy', 'cv2', 'shapely', 'pyclipper', 'yaml', 'tqdm', 'tensorboard',
                'skimage', 'scipy', 'PIL')
BLOCK_DEPENDENCIES = textwrap.dedent(f'''\
    import sys
    class BlockDependencies:
        """As in pip's isolated build environment: the project's dependencies cannot be imported."""
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in {DEPENDENCIES!r}:
                raise ModuleNotFoundError(f'No module named {{name!r}} (blocked by the test)', name=name)
            return None
    sys.meta_path.insert(0, BlockDependencies())
    ''')
# Run by the built or installed package's Python from a folder outside the repository (which holds a foreign
# top-level ``data`` package): the shipped experiment loads and builds its model; foreign classes are refused.
LOAD_EXPERIMENT = textwrap.dedent(f'''\
    import json, sys
    import torch
    from dbnet.concern.config import ConfigError, ROOT_PACKAGE, load_config
    from dbnet.experiment import Experiment
    found = {{'root': ROOT_PACKAGE}}
    config = load_config({EXPERIMENT!r})
    found['source'] = config.source
    model = Experiment.build(config, ['structure']).structure.builder.build()
    model.eval()
    with torch.no_grad():
        found['output'] = list(model(torch.zeros(1, 3, 64, 64)).shape)
    found['model_module'] = type(model).__module__
    refused = {{}}
    for name, (package, builder) in {{
            'os.system': ('[]', "{{class: os.system, command: 'true'}}"),
            'subprocess.Popen': ('[]', "{{class: subprocess.Popen, args: ['true']}}"),
            'package os': ('[os]', "{{class: system, command: 'true'}}"),
            'dbnet.tools': ('[]', "{{class: dbnet.tools.cli.ArgumentParser}}"),
            'foreign data': ('[data]', "{{class: Foreign}}")}}.items():
        with open('refused.yaml', 'w') as stream:
            stream.write(f"package: {{package}}\\ndefine:\\n  - name: Experiment\\n    class: Experiment\\n"
                         f"    structure: {{{{class: Structure, builder: {{builder}}}}}}\\n")
        try:
            Experiment.build(load_config('refused.yaml'), ['structure'])
            refused[name] = 'built'
        except ConfigError as error:
            refused[name] = str(error)
    found['refused'] = refused
    found['generic_names'] = sorted(name for name in sys.modules if name.split('.')[0] in {sorted(ROOTS)!r})
    print(json.dumps(found))
    ''')


def source_files() -> List[str]:
    """The working tree's files that git knows or would add: tracked and untracked ones that are not ignored (so
    the op's build, workspace/ and caches stay out)."""
    listed = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.decode().split('\0')
    return [name for name in listed if name and os.path.isfile(os.path.join(REPO_ROOT, name))]


def copy_tree(destination: str) -> str:
    for name in source_files():
        target = os.path.join(destination, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(REPO_ROOT, name), target)
    return destination


def run(command: List[str], cwd: str, env: Optional[Dict[str, str]] = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != 'PYTHONPATH'}
    environment.update(env or {})
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


def check_loaded_experiment(found: dict, expected_source_prefix: str) -> None:
    assert found['root'] == 'dbnet.'
    assert found['source'].startswith(expected_source_prefix) and found['source'].endswith(EXPERIMENT)
    assert found['output'] == [1, 1, 64, 64] and found['model_module'] == 'dbnet.structure.model'
    refused = found['refused']
    assert "package 'os' is not a module of this project" in refused['os.system']
    assert "package 'subprocess' is not a module of this project" in refused['subprocess.Popen']
    assert "package 'os' is not a module of this project" in refused['package os']
    assert "package 'dbnet.tools.cli' is not a module of this project" in refused['dbnet.tools']
    # ``package: [data]`` is the project's data package, never the working directory's ``data``
    assert "unknown class 'Foreign'" in refused['foreign data']
    assert found['generic_names'] == []


def write_foreign_data_package(folder: str) -> None:
    os.makedirs(os.path.join(folder, 'data'), exist_ok=True)
    with open(os.path.join(folder, 'data', '__init__.py'), 'w') as stream:
        stream.write('class Foreign:\n    pass\n')


# ----------------------------------------------------------------------------------------------
# The rewrite of imports


@pytest.mark.parametrize('source, expected', [
    ('from data.image_io import read_image\n', 'from dbnet.data.image_io import read_image\n'),
    ('from data import processes\n', 'from dbnet.data import processes\n'),
    ('import train\n', 'from dbnet import train\n'),
    ('import data.processes\n', 'import dbnet.data.processes; from dbnet import data\n'),
    ('import data.processes as p, os\n', 'import dbnet.data.processes as p; import os\n'),
    ('import os, sys  # comment\n', 'import os, sys  # comment\n'),
    ('from . import functions\nfrom .modules import X\n', 'from . import functions\nfrom .modules import X\n'),
    ('from __future__ import annotations\nimport yaml\n', 'from __future__ import annotations\nimport yaml\n'),
    ('def f():\n    from structure.model import (A,\n        B)\n    return A\n',
     'def f():\n    from dbnet.structure.model import (A,\n        B)\n    return A\n'),
    ('if x: import demo; import os\n', 'if x: from dbnet import demo; import os\n'),
    ('from concern.config import a, \\\n    b\n', 'from dbnet.concern.config import a, \\\n    b\n'),
    ('"""import data"""\ntext = "from data import x"  # import train\n',
     '"""import data"""\ntext = "from data import x"  # import train\n'),
    ('def g():\n    yield from data\n    raise E from train\n',
     'def g():\n    yield from data\n    raise E from train\n'),
    ('import datasets\nfrom trainer import x\n', 'import datasets\nfrom trainer import x\n'),
])
def test_rewrite_imports(source, expected):
    assert rewrite_imports(source, filename='x.py') == expected
    check_rewritten(expected, filename='x.py')


def test_rewrite_refuses_what_it_cannot_write_on_one_line_and_check_finds_leftovers():
    with pytest.raises(RewriteError, match=r'x.py:1: an import of a project module spread over several lines'):
        rewrite_imports('import os, \\\n    data\n', filename='x.py')
    with pytest.raises(RewriteError, match=r"x.py:2: import of 'structure.model' left unrewritten"):
        check_rewritten('import os\nfrom structure.model import X\n', filename='x.py')


def test_the_renamed_roots_are_the_project_modules():
    from test_import_layers import PROJECT_ROOTS
    assert ROOTS == PROJECT_ROOTS and set(PACKAGES).isdisjoint(MODULES)
    for name in PACKAGES:
        assert os.path.isfile(os.path.join(REPO_ROOT, name, '__init__.py'))
    for name in MODULES:
        assert os.path.isfile(os.path.join(REPO_ROOT, f'{name}.py'))


# ----------------------------------------------------------------------------------------------
# The built tree (setup.py build_py), imported without pip


@pytest.fixture(scope='module')
def built_tree(module_tmp):
    """(the folder holding the built ``dbnet`` package, a folder outside the repository to run from)."""
    base = module_tmp('built')
    source = copy_tree(str(base / 'source'))
    library = str(base / 'lib')
    done = run([sys.executable, 'setup.py', '-q', 'build_py', '--build-lib', library], cwd=source)
    assert done.returncode == 0, done.stderr
    elsewhere = str(base / 'elsewhere')
    write_foreign_data_package(elsewhere)
    return library, elsewhere


def test_built_tree_holds_only_dbnet_and_every_module_imports(built_tree):
    library, elsewhere = built_tree
    assert os.listdir(library) == ['dbnet']
    shipped = os.path.join(library, 'dbnet')
    assert os.path.isfile(os.path.join(shipped, EXPERIMENT))
    assert os.path.isfile(os.path.join(shipped, 'assets', 'ops', 'dcn', 'src', 'dcn_cpu.cpp'))
    assert not os.path.exists(os.path.join(shipped, 'setup.py')) and not os.path.exists(os.path.join(shipped, 'tests'))
    code = textwrap.dedent(f'''\
        import importlib, json, pkgutil, sys
        sys.path.insert(0, {library!r})
        import dbnet
        failed = {{}}
        names = [module.name for module in pkgutil.walk_packages(dbnet.__path__, 'dbnet.')]
        for name in names:
            if name != 'dbnet.assets.ops.dcn.setup':  # the op's build script runs setup() when imported
                try:
                    importlib.import_module(name)
                except Exception as error:
                    failed[name] = repr(error)
        generic = sorted(name for name in sys.modules if name.split('.')[0] in {sorted(ROOTS)!r})
        print(json.dumps({{'count': len(names), 'failed': failed, 'generic': generic}}))
        ''')
    done = run([sys.executable, '-c', code], cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found['failed'] == {} and found['generic'] == []
    assert found['count'] > 100


def test_built_tree_loads_the_shipped_experiment_and_refuses_foreign_classes(built_tree):
    library, elsewhere = built_tree
    done = run([sys.executable, '-c', LOAD_EXPERIMENT], cwd=elsewhere, env={'PYTHONPATH': library})
    assert done.returncode == 0, done.stderr
    check_loaded_experiment(json.loads(done.stdout.splitlines()[-1]), os.path.join(library, 'dbnet'))


# ----------------------------------------------------------------------------------------------
# The build backend without torch (pip's isolated build)


def backend_call(source: str, hook_code: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return run([sys.executable, '-c', BLOCK_DEPENDENCIES + 'from setuptools import build_meta\n' + hook_code],
               cwd=source, env=env)


def test_the_build_backend_needs_no_torch(tmp_path):
    source = copy_tree(str(tmp_path / 'source'))
    metadata = str(tmp_path / 'metadata')
    os.makedirs(metadata)
    done = backend_call(source, textwrap.dedent(f'''\
        import json
        requires = build_meta.get_requires_for_build_wheel()
        name = build_meta.prepare_metadata_for_build_wheel({metadata!r})
        print(json.dumps({{'requires': requires, 'name': name}}))
        '''))
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert not any('torch' in requirement for requirement in found['requires'])
    info = os.path.join(metadata, found['name'])
    with open(os.path.join(info, 'METADATA')) as stream:
        fields = stream.read()
    assert 'Name: dbnet' in fields and 'Requires-Dist: torch>=2.4' in fields
    assert 'Requires-Dist: onnxruntime>=1.17; extra == "onnx"' in fields
    with open(os.path.join(info, 'entry_points.txt')) as stream:
        entry_points = stream.read()
    for command in COMMANDS:
        assert f'{command} = dbnet.' in entry_points
    with open(os.path.join(info, 'top_level.txt')) as stream:
        assert stream.read().split() == ['dbnet']


def test_compiling_the_op_without_torch_and_editable_installs_are_refused_with_the_way_out(tmp_path):
    source = copy_tree(str(tmp_path / 'source'))
    done = backend_call(source, 'build_meta.get_requires_for_build_wheel()\n', env={'DBNET_BUILD_OPS': '1'})
    assert done.returncode != 0
    assert 'DBNET_BUILD_OPS=1 pip install --no-build-isolation .' in done.stdout + done.stderr
    wheels = str(tmp_path / 'wheels')
    done = backend_call(source, f'build_meta.build_editable({wheels!r})\n')
    assert done.returncode != 0
    assert 'an editable install (pip install -e .) is not supported' in done.stdout + done.stderr


# ----------------------------------------------------------------------------------------------
# pip install into a fresh virtual environment


def test_pip_install_into_a_fresh_virtual_environment(tmp_path):
    source = copy_tree(str(tmp_path / 'source'))
    environment = str(tmp_path / 'venv')
    done = run([sys.executable, '-m', 'venv', '--without-pip', environment], cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    python = os.path.join(environment, 'bin', 'python')
    done = run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], cwd=str(tmp_path))
    site_packages = done.stdout.strip()
    # the project environment's packages (torch, pip, setuptools, ...) visible without network
    with open(os.path.join(site_packages, 'project_dependencies.pth'), 'w') as stream:
        stream.write(sysconfig.get_paths()['purelib'] + '\n')
    done = run([python, '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-build-isolation', '--no-index',
                source], cwd=str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(os.listdir(site_packages)) == ['dbnet', 'dbnet-0.1.0.dist-info', 'project_dependencies.pth']
    elsewhere = str(tmp_path / 'elsewhere')
    write_foreign_data_package(elsewhere)
    for command in COMMANDS:
        done = run([os.path.join(environment, 'bin', command), '--help'], cwd=elsewhere)
        assert done.returncode == 0 and 'usage:' in done.stdout, (command, done.stderr)
    done = run([python, '-c', 'import dbnet.train, dbnet.structure.model'], cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    done = run([python, '-c', LOAD_EXPERIMENT], cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    check_loaded_experiment(json.loads(done.stdout.splitlines()[-1]), os.path.join(site_packages, 'dbnet'))
