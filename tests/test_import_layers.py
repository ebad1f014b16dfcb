"""The layer rule of docs/ARCHITECTURE.md: every import of a project module points down (or sideways within a
floor), and no set of modules imports itself round in a circle. Imports inside function bodies and under
``TYPE_CHECKING`` count: they are parsed from the source, not observed at run time."""
from __future__ import annotations

import ast
import os
import re
from typing import Dict, List, Optional, Set, Tuple

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Floors, lowest first; a module's floor is that of its longest listed prefix. Kept in step with the diagram of
# docs/ARCHITECTURE.md (test_architecture_lists_every_module checks the module list).
FLOORS: Tuple[Tuple[str, ...], ...] = (
    ('concern', 'assets', 'experiment'),                      # 0 ground: config, log, device, weights files, the op
    ('data',),                                                # 1 images, ground truth, label maps, loaders
    ('backbones', 'decoders'),                                # 2 network parts
    ('structure',),                                           # 3 model, weights, representer, measurers
    ('inference',),                                           # 4 runtime: runners, engine, evaluation loop, API
    ('training',),                                            # 5 trainer, checkpoints, validation
    ('train', 'eval', 'demo', 'convert_to_onnx', 'tools', 'benchmarks',
     'concern.detector'),                                     # 6 entry points, flags, compatibility re-exports
)
PROJECT_ROOTS = {name.split('.')[0] for floor in FLOORS for name in floor}
# Modules built from C++ (present once the op is built): imported, never parsed.
COMPILED_EXTENSIONS = ('assets.ops.dcn._dcn_ext',)
SKIPPED_DIRECTORIES = {'.git', '.venv', 'tests', '__pycache__', 'build', 'workspace', 'datasets', '.whl'}


def project_modules(root: str = REPO_ROOT) -> Dict[str, str]:
    """Dotted module name -> file path of every Python module of the project (tests excluded); the
    ``COMPILED_EXTENSIONS`` are modules too, with an empty path (nothing to parse)."""
    modules = {name: '' for name in COMPILED_EXTENSIONS}
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories
                                   if name not in SKIPPED_DIRECTORIES and not name.startswith('.'))
        for name in files:
            if not name.endswith('.py'):
                continue
            relative = os.path.relpath(os.path.join(directory, name), root)[:-3].replace(os.sep, '.')
            if relative.split('.')[0] not in PROJECT_ROOTS:
                continue  # setup.py and other stand-alone scripts
            modules[relative[:-len('.__init__')] if relative.endswith('.__init__') else relative] = \
                os.path.join(directory, name)
    return modules


def floor_of(module: str) -> Optional[int]:
    best: Tuple[int, Optional[int]] = (-1, None)
    for index, floor in enumerate(FLOORS):
        for prefix in floor:
            if (module == prefix or module.startswith(prefix + '.')) and len(prefix) > best[0]:
                best = (len(prefix), index)
    return best[1]


def imports_of(module: str, path: str, modules: Dict[str, str]) -> List[Tuple[str, int]]:
    """(imported project module, line) for every import statement of the file, wherever it stands."""
    is_package = path.endswith('__init__.py')
    found = []
    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read(), path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split('.') if is_package else module.split('.')[:-1]
                base = base[:len(base) - (node.level - 1)]
                stem = '.'.join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ''
            # ``from package import submodule`` imports the submodule
            targets = [f'{stem}.{alias.name}' if f'{stem}.{alias.name}' in modules else stem for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split('.')[0] not in PROJECT_ROOTS:
                continue
            while target not in modules and '.' in target:  # a name inside a module: the module
                target = target.rsplit('.', 1)[0]
            if target in modules and target != module:
                found.append((target, node.lineno))
    return found


def import_graph() -> Dict[str, List[Tuple[str, int]]]:
    modules = project_modules()
    return {module: imports_of(module, path, modules) for module, path in modules.items() if path}


def upward_imports(graph: Dict[str, List[Tuple[str, int]]]) -> List[str]:
    found = []
    for module, targets in sorted(graph.items()):
        for target, line in targets:
            if floor_of(target) > floor_of(module):
                found.append(f'{module}:{line} imports {target} (floor {floor_of(module)} -> {floor_of(target)})')
    return found


def circles(graph: Dict[str, List[Tuple[str, int]]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan), each a list of module names."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target, _ in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_every_project_module_has_a_floor():
    assert [module for module, path in project_modules().items() if path and floor_of(module) is None] == []


def test_no_import_runs_up_a_floor():
    assert upward_imports(import_graph()) == []


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_the_checks_see_upward_imports_and_circles_in_function_bodies(tmp_path):
    # the rule's own test: a function-body import up a floor and a two-module circle are found
    for name, text in {'structure/__init__.py': '', 'structure/a.py': 'def f():\n    from training import t\n',
                       'structure/b.py': 'from structure import c\n', 'structure/c.py': 'import structure.b\n',
                       'training/__init__.py': '', 'training/t.py': 'from structure.a import f\n'}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    modules = project_modules(str(tmp_path))
    assert 'assets.ops.dcn._dcn_ext' in modules and 'structure.a' in modules
    graph = {module: imports_of(module, path, modules) for module, path in modules.items() if path}
    assert upward_imports(graph) == ['structure.a:2 imports training.t (floor 3 -> 5)']
    assert circles(graph) == [['structure.a', 'training.t'], ['structure.b', 'structure.c']]


def test_architecture_lists_every_module():
    """docs/ARCHITECTURE.md names every module (``path/to/module.py``) and no module that does not exist."""
    text = open(os.path.join(REPO_ROOT, 'docs', 'ARCHITECTURE.md'), encoding='utf-8').read()
    modules = project_modules()
    files = {os.path.relpath(path, REPO_ROOT).replace(os.sep, '/') for path in modules.values() if path}
    listed = set(re.findall(r'[\w/]+\.py\b', text))
    missing = sorted(path for path in files if path not in listed and not path.endswith('__init__.py'))
    stale = sorted(path for path in listed
                   if path.endswith('.py') and not os.path.exists(os.path.join(REPO_ROOT, path)))
    assert missing == [] and stale == []


@pytest.mark.parametrize('shim, target', [('concern.detector', 'inference.detector')])
def test_compatibility_reexports_are_imported_by_nothing_in_the_project(shim, target):
    graph = import_graph()
    users = [module for module, targets in graph.items() if any(name == shim for name, _ in targets)]
    assert users == []
    assert (target, 1) in [(name, 1) for name, _ in graph[shim]]


def test_the_readme_import_of_the_api_still_works():
    from concern.detector import TextDetector as earlier
    from inference.detector import TextDetector
    assert earlier is TextDetector
