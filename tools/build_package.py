"""The installed tree: every module of the project under one package, ``dbnet`` (setup.py's ``build_py``).

In a checkout the project's modules are top-level names (``data``, ``structure``, ``training``, ``tools``,
``train``, ...) that import each other absolutely (``from structure.model import SegDetectorModel``). Installed
under those names they would collide with other projects' ``data`` or ``tools`` in site-packages. So
``pip install .`` builds a tree in which each module lives under ``dbnet.`` (``dbnet.structure.model``,
``dbnet.train``) and each absolute import of a project module names ``dbnet.``: setup.py's ``build_py``
(``make_build_py``) copies the modules, then rewrites their imports (``rewrite_imports``).

Why a rewrite at build time, and not one of these:

* relative imports in the sources: the entry scripts (``python train.py``) run as ``__main__``, where relative
  imports do not work, and every module of the checkout would change;
* a ``dbnet/__init__.py`` that puts its own folder on ``sys.path``, or an import hook that answers ``data`` with
  ``dbnet.data``: both put the generic names back into every process that imports ``dbnet``
  (``sys.modules['data']``), the collision the package name exists to avoid, and the hook makes each module
  importable under two names (two copies of a class; ``isinstance`` fails across them);
* an editable install (``pip install -e .``) cannot give the ``dbnet.`` names without one of the two above, so
  it is refused (``refuse_editable``) with the supported ways named.

The rewrite changes import statements only, found with ``tokenize`` (strings, comments and docstrings are never
touched) and written on the same line (tracebacks keep their line numbers); ``check_rewritten`` parses each result
and refuses the build when an absolute import of a project module is left. Names of project modules built from
strings at run time (an experiment file's ``package:`` and ``class:``) cannot be rewritten: they go through
``concern.config.project_module``, the one place that knows the root package at run time.

This module is loaded by setup.py from its path, before anything is installed and without torch (pip's isolated
build has only setuptools), so it imports the standard library only, and setuptools only when asked.
"""
from __future__ import annotations

import ast
import io
import os
import tokenize
from typing import Any, Collection, Dict, List, Sequence, Tuple

TOP_PACKAGE = 'dbnet'
# The checkout's top-level packages and modules: the names that become ``dbnet.<name>`` (tests/ stays out; so do
# setup.py and the repository's folders without Python modules). tests/test_install.py checks these against the
# floors of tests/test_import_layers.py, which name every module of the project.
PACKAGES = ('assets', 'backbones', 'benchmarks', 'concern', 'data', 'decoders', 'inference', 'structure', 'tools',
            'training')
MODULES = ('convert_to_onnx', 'demo', 'eval', 'experiment', 'train')
ROOTS = frozenset(PACKAGES + MODULES)
# Files besides the modules that the installed package needs: the experiment files (``import: experiments/...``
# resolves to them from any folder, concern.config), the op's sources (``dbnet-build-op`` compiles them in place).
PACKAGE_DATA: Dict[str, List[str]] = {
    TOP_PACKAGE: ['experiments/*.yaml', 'experiments/*/*.yaml'],
    f'{TOP_PACKAGE}.assets.ops.dcn': ['src/*.cpp', 'src/*.h', 'src/*.cu'],
}
EDITABLE_REFUSED = (
    'dbnet: an editable install (pip install -e .) is not supported: installed, every module lives under the '
    "package 'dbnet' with its imports rewritten at build time, which an editable install cannot do without putting "
    "the checkout's generic top-level names (data, structure, tools, ...) into site-packages. Either work in the "
    'checkout (make setup, then python train.py ...; the modules import from the repository root), or install a '
    'copy: pip install . (add --no-build-isolation and DBNET_BUILD_OPS=1 to compile the DCN op, or run '
    'dbnet-build-op afterwards).')
_STATEMENT_STARTS = {tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}


class RewriteError(ValueError):
    """An import statement the rewrite cannot handle, or a project import left after it."""


def packages(top: str = TOP_PACKAGE, root: str = '.') -> List[str]:
    """``top`` and every package of the checkout at ``root`` as it is named installed (``dbnet.data.processes``)."""
    found = [top]
    for name in PACKAGES:
        for directory, subdirectories, files in os.walk(os.path.join(root, name)):
            subdirectories[:] = sorted(d for d in subdirectories if d != '__pycache__' and not d.startswith('.'))
            if '__init__.py' in files:
                found.append('.'.join([top] + os.path.relpath(directory, root).split(os.sep)))
    return found


def _is_project(dotted: str, roots: Collection[str]) -> bool:
    return dotted.split('.')[0] in roots


def _import_statement(names: Sequence[Tuple[str, str]], roots: Collection[str], top: str) -> str:
    """``import a.b as c, d`` written anew: project names under ``top``, binding the same local names."""
    statements = []
    for dotted, alias in names:
        if not _is_project(dotted, roots):
            statements.append(f'import {dotted} as {alias}' if alias else f'import {dotted}')
        elif alias:
            statements.append(f'import {top}.{dotted} as {alias}')
        elif '.' not in dotted:
            statements.append(f'from {top} import {dotted}')
        else:  # ``import data.x`` binds ``data`` with ``data.x`` loaded
            statements.append(f'import {top}.{dotted}; from {top} import {dotted.split(".")[0]}')
    return '; '.join(statements)


def _parse_import_names(tokens: Sequence[tokenize.TokenInfo], where: str) -> List[Tuple[str, str]]:
    """The (dotted name, alias) pairs of the tokens after ``import`` in an ``import`` statement."""
    names: List[Tuple[str, str]] = []
    parts: List[str] = []
    alias = ''
    expect_alias = False
    for token in list(tokens) + [tokenize.TokenInfo(tokenize.OP, ',', (0, 0), (0, 0), '')]:
        if token.type == tokenize.NAME and token.string == 'as':
            expect_alias = True
        elif token.type == tokenize.NAME and expect_alias:
            alias = token.string
        elif token.type == tokenize.NAME or (token.type == tokenize.OP and token.string == '.'):
            parts.append(token.string)
        elif token.type == tokenize.OP and token.string == ',':
            names.append((''.join(parts), alias))
            parts, alias, expect_alias = [], '', False
        else:
            raise RewriteError(f'{where}: unexpected {token.string!r} in an import statement')
    return names


def rewrite_imports(source: str, roots: Collection[str] = ROOTS, top: str = TOP_PACKAGE,
                    filename: str = '<source>') -> str:
    """``source`` with every absolute import of a module under ``roots`` made to import it under ``top``:
    ``from data.x import y`` -> ``from dbnet.data.x import y``; ``import train`` -> ``from dbnet import train``;
    ``import data.x`` -> ``import dbnet.data.x; from dbnet import data``; ``import data.x as x`` ->
    ``import dbnet.data.x as x``. Relative imports, other modules' imports, strings and comments are left as they
    are; every line stays on its line."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    lines = source.splitlines(keepends=True)
    # (line, column) -> replacement of the span up to (end line, end column); applied from the end
    edits: List[Tuple[Tuple[int, int], Tuple[int, int], str]] = []
    previous = None
    for index, token in enumerate(tokens):
        starts_statement = previous is None or previous.type in _STATEMENT_STARTS or (
            previous.type == tokenize.OP and previous.string in (';', ':'))
        if token.type not in (tokenize.NL, tokenize.COMMENT):
            previous = token
        if not starts_statement or token.type != tokenize.NAME or token.string not in ('import', 'from'):
            continue
        where = f'{filename}:{token.start[0]}'
        if token.string == 'from':
            module = tokens[index + 1]
            if module.type == tokenize.NAME and module.string != 'import' and _is_project(module.string, roots):
                edits.append((module.start, module.start, f'{top}.'))
            continue
        end = index + 1
        while tokens[end].type not in (tokenize.NEWLINE, tokenize.COMMENT, tokenize.ENDMARKER) and not (
                tokens[end].type == tokenize.OP and tokens[end].string == ';'):
            end += 1
        body = [t for t in tokens[index + 1:end] if t.type != tokenize.NL]
        names = _parse_import_names(body, where)
        if not any(_is_project(dotted, roots) for dotted, _ in names):
            continue
        last = tokens[end - 1]
        if last.end[0] != token.start[0]:
            raise RewriteError(f'{where}: an import of a project module spread over several lines (write it on one '
                               'line, or as from ... import (...))')
        edits.append((token.start, last.end, _import_statement(names, roots, top)))
    for (row, column), (end_row, end_column), text in sorted(edits, reverse=True):
        line = lines[row - 1]
        assert end_row == row or (end_row, end_column) == (row, column)
        lines[row - 1] = line[:column] + text + line[end_column if end_row == row else column:]
    return ''.join(lines)


def check_rewritten(source: str, roots: Collection[str] = ROOTS, filename: str = '<source>') -> None:
    """RewriteError when ``source`` still imports a module under ``roots`` absolutely (not under the package)."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            left = [alias.name for alias in node.names if _is_project(alias.name, roots)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            left = [node.module] if _is_project(node.module, roots) else []
        else:
            continue
        if left:
            raise RewriteError(f'{filename}:{node.lineno}: import of {left[0]!r} left unrewritten')


def rewrite_file(path: str, roots: Collection[str] = ROOTS, top: str = TOP_PACKAGE) -> None:
    """Rewrite the module at ``path`` in place (``rewrite_imports``), checked (``check_rewritten``)."""
    with open(path, encoding='utf-8') as stream:
        source = stream.read()
    rewritten = rewrite_imports(source, roots, top, path)
    check_rewritten(rewritten, roots, path)
    if rewritten != source:
        with open(path, 'w', encoding='utf-8') as stream:
            stream.write(rewritten)


PACKAGE_INIT = f'''"""DBNet / DBNet++ scene text detection, installed: every module of the project lives under
``{TOP_PACKAGE}.`` (``{TOP_PACKAGE}.structure.model``, ``{TOP_PACKAGE}.train``); the commands are dbnet-train,
dbnet-eval, dbnet-demo, dbnet-score, dbnet-export and dbnet-build-op. Written by setup.py (tools/build_package.py)."""
'''


def make_build_py(base: Any) -> Any:
    """setuptools' ``build_py`` (``base``) building the ``dbnet`` tree: the checkout's top-level modules
    (``MODULES``, not setup.py or other files of the root) in ``dbnet`` itself, every module's project imports
    rewritten, and a ``dbnet/__init__.py`` written."""

    class BuildPy(base):
        def check_package(self, package: str, package_dir: str) -> Any:
            if package == TOP_PACKAGE:
                return None  # the repository root: no __init__.py there, run() writes one
            return super().check_package(package, package_dir)

        def find_package_modules(self, package: str, package_dir: str) -> Any:
            modules = super().find_package_modules(package, package_dir)
            if package == TOP_PACKAGE:
                modules = [entry for entry in modules if entry[1] in MODULES]
            return modules

        def build_module(self, module: str, module_file: str, package: Any) -> Any:
            outfile, copied = super().build_module(module, module_file, package)
            if copied and not self.dry_run:
                rewrite_file(outfile)
            return outfile, copied

        def run(self) -> None:
            super().run()
            init = self._package_init()
            os.makedirs(os.path.dirname(init), exist_ok=True)
            with open(init, 'w', encoding='utf-8') as stream:
                stream.write(PACKAGE_INIT)

        def get_outputs(self, include_bytecode: Any = 1) -> Any:
            return list(super().get_outputs(include_bytecode)) + [self._package_init()]

        def _package_init(self) -> str:
            return os.path.join(self.build_lib, TOP_PACKAGE, '__init__.py')

    return BuildPy


def refuse_editable(base: Any) -> Any:
    """A command class standing in for ``base`` (``editable_wheel``, ``develop``) that stops with
    ``EDITABLE_REFUSED``."""

    class RefuseEditable(base):
        def run(self) -> None:
            raise SystemExit(EDITABLE_REFUSED)

    return RefuseEditable
