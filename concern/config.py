"""Composable YAML experiments: ``import:`` / ``package:`` / ``define:``.

The format is the original DB code base's, so its experiment files load unchanged:

* ``import:`` lists YAML files (paths relative to the working directory, then to ``PROJECT_DIR``, so that the
  shipped ``experiments/...`` are found from any folder) loaded first, recursively; their packages and defines are
  merged in, the importing file's own entries winning.
* ``package:`` lists modules of this project in which bare ``class:`` names are looked up, in order; they are
  named as in a checkout (``decoders.seg_detector_loss``) whether the project runs from one or is installed as
  the package ``dbnet`` (``ROOT_PACKAGE``).
* ``define:`` lists mappings, each with a string ``name:``; ``^name`` elsewhere refers to that define.

Compiling a define resolves every ``^name`` into a deep copy of the referenced define, giving a plain
tree of dicts and lists (what ``--print-config-only`` prints and what is saved beside each run).
Building turns each dict holding ``class:`` into an instance, calling the constructor with the other keys
as keyword arguments, checked against its signature (and, where the constructor annotates an argument as a
plain ``int``, ``float``, ``bool`` or ``str``, against that type). Nothing here knows about any particular
component.

Bounds (an experiment file is data, and may come from elsewhere): a file is at most ``MAX_FILE_BYTES`` and must
be UTF-8; YAML aliases (``*anchor``) and ``^references`` may expand a file or a define to at most
``MAX_EXPANDED_NODES`` nodes (the "billion laughs" file of nested aliases is refused at once, naming the file);
classes come only from ``COMPONENT_MODULES``, checked before anything is imported.
"""
from __future__ import annotations

import argparse
import copy
import functools
import importlib
import inspect
import math
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeGuard, Union

import yaml

# The one place that knows the project's root package at run time: '' in a checkout (this module is
# ``concern.config``), 'dbnet.' when installed (``dbnet.concern.config``; tools/build_package.py). Experiment files
# and the names below are written without it (``package: [decoders.seg_detector_loss]``) and load unchanged in both;
# every import of a project module by a name held in a string goes through ``project_module``.
_THIS_MODULE = 'concern.config'
assert __name__.endswith(_THIS_MODULE), f'concern/config.py imported as {__name__!r}'
ROOT_PACKAGE = __name__[:-len(_THIS_MODULE)]
# The folder holding the project's top-level modules and experiments/: the repository, or the installed package.
PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def project_module(name: str) -> str:
    """The importable name of the project module ``name`` as the checkout writes it (``decoders``,
    ``structure.model``): the same in a checkout, ``dbnet.<name>`` when installed."""
    return ROOT_PACKAGE + name


# Top-level packages and modules of this project (without ``ROOT_PACKAGE``): the only places classes may come from.
PROJECT_ROOTS = frozenset({
    'experiment', 'structure', 'training', 'concern', 'data', 'decoders', 'backbones', 'assets', 'inference',
})

# Searched, in this order, after an experiment's own ``package:`` list, so that short experiment files
# need not list every module. Imported lazily, only when a name is not found earlier.
PROJECT_MODULES = (
    'experiment',
    'structure.builder',
    'structure.model',
    'structure.representers',
    'structure.measurers',
    'structure.visualizers',
    'training.learning_rate',
    'training.optimizer_scheduler',
    'training.checkpoint',
    'training.model_saver',
    'training.early_stopping',
    'training.precise_bn',
    'concern.log',
    'data',
    'data.processes',
    'decoders',
    'decoders.seg_detector_loss',
)

# The modules classes may be taken from: those above, and the modules that define the classes they offer
# (so ``class: data.processes.augment_data.AugmentDetectionData`` works too). A ``package:`` entry or a dotted
# ``class:`` name must name one of them exactly; it is checked before anything is imported, so a build script
# (assets/ops/dcn/setup.py), a test, a benchmark or a tool is never imported from an experiment file.
COMPONENT_MODULES = frozenset(PROJECT_MODULES) | frozenset({
    'backbones',
    'data.data_loader',
    'data.image_dataset',
    'data.processes.augment_data',
    'data.processes.collect_fn',
    'data.processes.data_process',
    'data.processes.filter_keys',
    'data.processes.make_border_map',
    'data.processes.make_icdar_data',
    'data.processes.make_seg_detection_data',
    'data.processes.normalize_image',
    'data.processes.random_crop_data',
    'decoders.feature_attention',
    'decoders.loss_terms',
    'decoders.seg_detector',
    'decoders.seg_detector_asf',
    'structure.measurers.quad_measurer',
    'structure.representers.seg_detector_representer',
    'structure.visualizers.seg_detector_visualizer',
})

# Limits of an experiment file, far above the real ones (experiments/: at most 3.6 kB and 320 nodes compiled).
MAX_FILE_BYTES = 1 << 20
# Nodes (mappings, sequences, keys and scalars) a file may hold with its YAML aliases expanded, and a compiled
# define with its ^references expanded.
MAX_EXPANDED_NODES = 100_000

REFERENCE_PREFIX = '^'
EXPERIMENT_DEFINE = 'Experiment'


class ConfigError(ValueError):
    """A problem in an experiment file, reported with the file, the define and the key."""


@dataclass
class Define:
    name: str
    body: Dict[str, Any]
    source: str


@dataclass
class ExperimentFile:
    """An experiment file with all its imports merged in."""
    path: str
    packages: List[str] = field(default_factory=list)
    defines: Dict[str, Define] = field(default_factory=dict)
    files: List[str] = field(default_factory=list)  # every YAML file read: this one, then its imports'


@dataclass
class CompiledConfig:
    """A define with every ``^ref`` resolved: a plain tree, plus where its parts came from."""
    tree: Dict[str, Any]
    packages: List[str]
    define: str
    source: str
    # id(dict) of each inlined define's copy -> (define name, source file), for error messages.
    origins: Dict[int, Tuple[str, str]] = field(default_factory=dict)
    files: List[str] = field(default_factory=list)  # the YAML files it was loaded from (imports included)

    def origin_of(self, node: Any, default: Tuple[str, str]) -> Tuple[str, str]:
        return self.origins.get(id(node), default)


def _location(source: str, define: str, key_path: str) -> str:
    where = f"{source}: define '{define}'"
    if key_path:
        where += f", key '{key_path}'"
    return where


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f'{path}[{key}]'
    return f'{path}.{key}' if path else str(key)


# ----------------------------------------------------------------------------------------------
# Loading


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a document whose aliases would expand it past ``MAX_EXPANDED_NODES``
    (or that refers to itself) before any Python object is built."""

    source = '<string>'

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expanded_size(node, self.source)
        return super().construct_document(node)


def _check_expanded_size(root: yaml.Node, source: str) -> None:
    """ConfigError when the YAML node graph under ``root``, every alias expanded, has more than
    ``MAX_EXPANDED_NODES`` nodes, or holds an alias to one of its own ancestors. Linear in the graph (each
    node's expanded size is computed once), so an alias bomb is refused at the cost of reading it."""
    sizes: Dict[int, int] = {}
    on_path: set = set()
    stack: List[Tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            if isinstance(node, yaml.MappingNode):
                children = [part for pair in node.value for part in pair]
            else:
                children = list(node.value)
            size = 1 + sum(sizes[id(child)] for child in children)
            if size > MAX_EXPANDED_NODES:
                raise ConfigError(f'{source}: its aliases (*anchor) expand it to more than {MAX_EXPANDED_NODES} '
                                  f'YAML nodes (line {node.start_mark.line + 1}); real experiment files have a '
                                  'few hundred: write the values out, or refer to a define with ^name')
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ConfigError(f'{source}: line {node.start_mark.line + 1}: an alias (*anchor) refers to a node '
                              'that contains it (a recursive structure)')
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = 1
            continue
        on_path.add(key)
        stack.append((node, True))
        if isinstance(node, yaml.MappingNode):
            stack.extend((part, False) for pair in node.value for part in pair)
        else:
            stack.extend((child, False) for child in node.value)


def safe_load_bounded(text: Union[str, bytes], source: str) -> Any:
    """``yaml.safe_load`` of ``text`` with the alias-expansion bound; ``source`` names it in errors."""
    loader = _BoundedLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except RecursionError:
        raise ConfigError(f'{source}: nested too deeply to read') from None
    finally:
        loader.dispose()


def _read_yaml(path: str, imported_from: Optional[str]) -> Dict[str, Any]:
    if not os.path.isfile(path):
        if imported_from:
            raise ConfigError(f"{imported_from}: key 'import': file not found: {path!r} "
                              f"(import paths are relative to the working directory {os.getcwd()!r}, "
                              f"then to the project's folder {PROJECT_DIR!r})")
        raise ConfigError(f'experiment file not found: {path!r}')
    with open(path, 'rb') as stream:
        raw = stream.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f'{path}: larger than {MAX_FILE_BYTES} bytes, the limit of an experiment file '
                          '(real ones are a few kB); is this an experiment file?')
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as error:
        line = raw.count(b'\n', 0, error.start) + 1
        raise ConfigError(f'{path}:{line}: not UTF-8 text (byte 0x{raw[error.start]:02x} at byte offset '
                          f'{error.start}); save the experiment file as UTF-8') from None
    try:
        content = safe_load_bounded(text, path)
    except yaml.YAMLError as error:
        raise ConfigError(f'{path}: not valid YAML: {error}') from error
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f'{path}: the top level must be a mapping with import/package/define, '
                          f'got {type(content).__name__}')
    unknown = set(content) - {'import', 'package', 'define'}
    if unknown:
        raise ConfigError(f'{path}: unknown top-level key(s) {sorted(unknown)}; '
                          f"expected 'import', 'package' and 'define'")
    return content


def _as_list(content: Dict[str, Any], key: str, path: str) -> list:
    value = content.get(key) or []
    if not isinstance(value, list):
        raise ConfigError(f"{path}: key '{key}' must be a list, got {type(value).__name__}")
    return value


def check_package(name: Any, where: str) -> str:
    """A ``package:`` entry (or the module of a dotted ``class:``) must be one of ``COMPONENT_MODULES``, the
    modules that define experiment components; checked by name, before anything is imported."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: a package must be a module name, got {name!r}")
    allowed = ', '.join(sorted(COMPONENT_MODULES))
    if name.split('.')[0] not in PROJECT_ROOTS:
        raise ConfigError(f"{where}: package {name!r} is not a module of this project; experiment components "
                          f"come from: {allowed}")
    if name not in COMPONENT_MODULES:
        raise ConfigError(f"{where}: module {name!r} is not a module of experiment components (build scripts, "
                          f"tests, benchmarks and tools are never imported from an experiment file); "
                          f"allowed: {allowed}")
    return name


def find_experiment_file(path: str) -> str:
    """The file an experiment path names: ``path`` itself (relative paths: from the working directory) when it is a
    file; else, for a relative path, the project's own file of that name under ``PROJECT_DIR`` (so that
    ``experiments/base.yaml`` is found from any folder: the installed package ships experiments/); else ``path``."""
    if os.path.isabs(path) or os.path.isfile(path):
        return path
    shipped = os.path.join(PROJECT_DIR, path)
    return shipped if os.path.isfile(shipped) else path


def load_experiment_file(path: str, _stack: Sequence[str] = (), _imported_from: Optional[str] = None,
                         _loaded: Optional[Dict[str, ExperimentFile]] = None) -> ExperimentFile:
    """Read ``path`` and, recursively, the files it imports (each file read once however often it is imported,
    so a diamond of imports costs no more than its files). Paths are found with ``find_experiment_file``."""
    path = find_experiment_file(path)
    real = os.path.realpath(path)
    if real in _stack:
        chain = ' -> '.join(list(_stack) + [real])
        raise ConfigError(f'{path}: import cycle: {chain}')
    loaded: Dict[str, ExperimentFile] = {} if _loaded is None else _loaded
    if real in loaded:
        return loaded[real]
    content = _read_yaml(path, _imported_from)
    merged = ExperimentFile(path=path, files=[path])
    for imported in _as_list(content, 'import', path):
        if not isinstance(imported, str):
            raise ConfigError(f"{path}: key 'import': entries must be file paths, got {imported!r}")
        child = load_experiment_file(imported, tuple(_stack) + (real,), path, loaded)
        merged.files += [file for file in child.files if file not in merged.files]
        for package in child.packages:
            if package not in merged.packages:
                merged.packages.append(package)
        merged.defines.update(child.defines)
    own_packages = [check_package(p, f"{path}: key 'package'") for p in _as_list(content, 'package', path)]
    # The importing file's packages are searched first.
    merged.packages = own_packages + [p for p in merged.packages if p not in own_packages]
    for index, entry in enumerate(_as_list(content, 'define', path)):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: key 'define[{index}]' must be a mapping, got {type(entry).__name__}")
        name = entry.get('name')
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{path}: key 'define[{index}]' needs a string 'name:', got {name!r}")
        body = {key: value for key, value in entry.items() if key != 'name'}
        merged.defines[name] = Define(name=name, body=body, source=path)
    loaded[real] = merged
    return merged


# ----------------------------------------------------------------------------------------------
# Compiling (resolving ^references)


def compile_define(experiment_file: ExperimentFile, name: str = EXPERIMENT_DEFINE) -> CompiledConfig:
    if name not in experiment_file.defines:
        raise ConfigError(f"{experiment_file.path}: no define named '{name}' "
                          f"(defines: {sorted(experiment_file.defines)})")
    define = experiment_file.defines[name]
    origins: Dict[int, Tuple[str, str]] = {}
    produced = [0]  # nodes of the compiled tree so far: ^references (and aliases) may multiply them

    def resolve(node: Any, current: Define, key_path: str, active: Tuple[str, ...]) -> Any:
        produced[0] += 1
        if produced[0] > MAX_EXPANDED_NODES:
            raise ConfigError(f'{_location(current.source, current.name, key_path)}: the ^references expand '
                              f"define '{name}' to more than {MAX_EXPANDED_NODES} nodes; real experiments have a "
                              'few hundred: is a define referred to in a loop of copies?')
        if isinstance(node, str) and node.startswith(REFERENCE_PREFIX):
            target = node[len(REFERENCE_PREFIX):]
            if target not in experiment_file.defines:
                raise ConfigError(f'{_location(current.source, current.name, key_path)}: '
                                  f"reference {node!r} names no define (defines: {sorted(experiment_file.defines)})")
            if target in active:
                raise ConfigError(f'{_location(current.source, current.name, key_path)}: '
                                  f"reference cycle {' -> '.join(active + (target,))}")
            referenced = experiment_file.defines[target]
            resolved = resolve(referenced.body, referenced, '', active + (target,))
            if isinstance(resolved, dict):
                origins[id(resolved)] = (referenced.name, referenced.source)
            return resolved
        if isinstance(node, dict):
            return {key: resolve(value, current, _join(key_path, key), active) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value, current, _join(key_path, index), active) for index, value in enumerate(node)]
        # Scalars; aliases (*anchor) were expanded by YAML into shared objects and are copied by the walk.
        return copy.deepcopy(node)

    tree = resolve(define.body, define, '', (name,))
    origins[id(tree)] = (define.name, define.source)
    return CompiledConfig(tree=tree, packages=list(experiment_file.packages), define=name,
                          source=define.source, origins=origins, files=list(experiment_file.files))


def load_config(path: str, define: str = EXPERIMENT_DEFINE) -> CompiledConfig:
    """Load an experiment file with its imports and compile one of its defines."""
    return compile_define(load_experiment_file(path), define)


# ----------------------------------------------------------------------------------------------
# Class lookup


def _import_project_module(module_name: str, where: str) -> Any:
    check_package(module_name, where)
    full_name = project_module(module_name)
    try:
        return importlib.import_module(full_name)
    except ModuleNotFoundError as error:
        if error.name and (error.name == full_name or full_name.startswith(error.name + '.')):
            return None
        raise


def _is_project_class(obj: Any) -> TypeGuard[type]:
    """Whether ``obj`` is a class defined in a module of this project (under ``ROOT_PACKAGE``)."""
    if not inspect.isclass(obj) or not obj.__module__.startswith(ROOT_PACKAGE):
        return False
    return obj.__module__[len(ROOT_PACKAGE):].split('.')[0] in PROJECT_ROOTS


def resolve_class(name: Any, packages: Iterable[str], where: str) -> type:
    """Find the class a ``class:`` value names: ``module.Class`` or a bare name searched in ``packages``."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: 'class' must be a class name, got {name!r}")
    if '.' in name:
        module_name, _, class_name = name.rpartition('.')
        module = _import_project_module(module_name, where)
        obj = getattr(module, class_name, None) if module is not None else None
        if not _is_project_class(obj):
            raise ConfigError(f"{where}: unknown class {name!r} (no class {class_name!r} in module {module_name!r})")
        return obj
    searched = []
    for module_name in list(packages) + [m for m in PROJECT_MODULES if m not in packages]:
        module = _import_project_module(module_name, where)
        if module is None:
            continue
        searched.append(module_name)
        obj = getattr(module, name, None)
        if _is_project_class(obj):
            return obj
    raise ConfigError(f"{where}: unknown class {name!r} (searched modules: {', '.join(searched)})")


def constructor_parameters(cls: type) -> Tuple[Dict[str, inspect.Parameter], bool]:
    """The keyword parameters of ``cls`` and whether it accepts arbitrary ``**kwargs``."""
    parameters = dict(inspect.signature(cls).parameters)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = {name: p for name, p in parameters.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return named, takes_any


# ----------------------------------------------------------------------------------------------
# Building

_PLAIN_TYPES = (bool, int, float, str)


@functools.lru_cache(maxsize=None)
def _plain_argument_types(cls: type) -> Dict[str, Tuple[type, ...]]:
    """Constructor arguments of ``cls`` annotated as a plain ``bool``, ``int``, ``float`` or ``str`` (or
    ``Optional`` of one): name -> the accepted types (``type(None)`` among them for ``Optional``). Other
    annotations (containers, unions, classes, ``Any``) are not checked; a class whose annotations cannot be
    resolved is not checked either."""
    try:
        hints = typing.get_type_hints(getattr(cls, '__init__'))
    except Exception:  # noqa: BLE001 - unresolvable annotations: no check rather than no build
        return {}
    plain: Dict[str, Tuple[type, ...]] = {}
    hints.pop('return', None)
    for name, hint in hints.items():
        options = typing.get_args(hint) if typing.get_origin(hint) is Union else (hint,)
        if options and all(option in _PLAIN_TYPES or option is type(None) for option in options):
            plain[name] = tuple(options)
    return plain


def _has_plain_type(value: Any, expected: Tuple[type, ...]) -> bool:
    """Whether ``value`` fits one of ``expected``: an int fits ``float``; a bool fits only ``bool``; an
    integral float fits ``int`` (the constructors convert it)."""
    if value is None:
        return type(None) in expected
    if isinstance(value, bool):
        return bool in expected
    if isinstance(value, int):
        return int in expected or float in expected
    if isinstance(value, float):
        return float in expected or (int in expected and value.is_integer())
    if isinstance(value, str):
        return str in expected
    return False


_DECIMAL_NUMBER = re.compile(r'[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?')


def _float_of_string(value: Any, expected: Tuple[type, ...]) -> Any:
    """``value`` as a float when ``expected`` takes a float but not a string and ``value`` is a string written as
    a decimal number (digits, an optional dot and exponent) whose value is finite: PyYAML (YAML 1.1) reads
    ``1e-3`` or ``5e4`` (no dot) as a string, as ``--opt ...lr=1e-3`` does. ``nan``, ``inf``, ``1e999`` and
    ``1_000`` (which ``float`` would take) stay strings, so they are refused. Any other value as it is."""
    if isinstance(value, str) and float in expected and str not in expected:
        text = value.strip()
        if _DECIMAL_NUMBER.fullmatch(text) is None:
            return value
        number = float(text)
        return number if math.isfinite(number) else value
    return value


def _describe_types(expected: Tuple[type, ...]) -> str:
    names = {bool: 'a boolean (true / false)', int: 'an integer', float: 'a number', str: 'a string',
             type(None): 'null'}
    return ' or '.join(names[option] for option in expected)


class ObjectBuilder:
    """Turns a compiled tree (or a part of it) into objects."""

    def __init__(self, config: CompiledConfig):
        self.config = config

    def build(self, node: Any, key_path: str = '', context: Optional[Tuple[str, str]] = None) -> Any:
        context = self.config.origin_of(node, context or (self.config.define, self.config.source))
        if isinstance(node, dict):
            if 'class' in node:
                return self._build_object(node, key_path, context)
            return {key: self.build(value, _join(key_path, key), context) for key, value in node.items()}
        if isinstance(node, list):
            return [self.build(value, _join(key_path, index), context) for index, value in enumerate(node)]
        return node

    def _build_object(self, node: Dict[str, Any], key_path: str, context: Tuple[str, str]) -> Any:
        define, source = context
        where = _location(source, define, _join(key_path, 'class'))
        cls = resolve_class(node['class'], self.config.packages, where)
        parameters, takes_any = constructor_parameters(cls)
        kwargs = {}
        for key, value in node.items():
            if key == 'class':
                continue
            if key not in parameters and not takes_any:
                raise ConfigError(f'{_location(source, define, _join(key_path, key))}: '
                                  f'unknown argument {key!r} for class {cls.__name__} '
                                  f'(accepted: {", ".join(parameters) or "none"})')
            kwargs[key] = self.build(value, _join(key_path, key), context)
            expected = _plain_argument_types(cls).get(key)
            if expected is not None:
                kwargs[key] = _float_of_string(kwargs[key], expected)
            if (expected is not None and not _has_plain_type(kwargs[key], expected)
                    and not (kwargs[key] is None and parameters[key].default is None)):
                raise ConfigError(f'{_location(source, define, _join(key_path, key))}: class {cls.__name__} takes '
                                  f'{_describe_types(expected)} for {key!r}, got {type(kwargs[key]).__name__} '
                                  f'{kwargs[key]!r}')
        missing = [name for name, p in parameters.items()
                   if p.default is inspect.Parameter.empty and name not in kwargs]
        if missing:
            raise ConfigError(f'{_location(source, define, key_path)}: class {cls.__name__} '
                              f'needs argument(s) {missing}')
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError, FileNotFoundError, KeyError) as error:
            raise ConfigError(f'{_location(source, define, key_path)}: building {cls.__name__} failed: '
                              f'{error}') from error


# ----------------------------------------------------------------------------------------------
# Overrides (--opt key.path=value and the entry points' flags)


def _step(node: Any, key: str, where: str) -> Any:
    if isinstance(node, list):
        try:
            return node[int(key)]
        except (ValueError, IndexError):
            raise ConfigError(f'{where}: {key!r} is not an index of a list of length {len(node)}') from None
    if isinstance(node, dict):
        if key not in node:
            raise ConfigError(f'{where}: no key {key!r} here (keys: {sorted(map(str, node))})')
        return node[key]
    raise ConfigError(f'{where}: cannot descend into a {type(node).__name__} with {key!r}')


def accepts_argument(node: Any, key: str, packages: Sequence[str], where: str) -> bool:
    """Whether ``node`` is a class dict whose constructor takes ``key``."""
    if not isinstance(node, dict) or 'class' not in node:
        return False
    parameters, takes_any = constructor_parameters(resolve_class(node['class'], packages, where))
    return takes_any or key in parameters


def get_path(config: CompiledConfig, dotted: str) -> Any:
    node: Any = config.tree
    for key in dotted.split('.'):
        node = _step(node, key, f"{config.source}: define '{config.define}', option '{dotted}'")
    return node


def has_path(config: CompiledConfig, dotted: str) -> bool:
    try:
        get_path(config, dotted)
    except ConfigError:
        return False
    return True


def set_path(config: CompiledConfig, dotted: str, value: Any) -> None:
    """Set the value at ``dotted``. The path must exist, except for a last key that the class of its
    parent accepts as an argument (so a default can be overridden without being written in the file)."""
    where = f"{config.source}: define '{config.define}', option '{dotted}'"
    keys = dotted.split('.')
    if not dotted or any(not key for key in keys):
        raise ConfigError(f'{where}: empty key in path')
    node: Any = config.tree
    for key in keys[:-1]:
        node = _step(node, key, where)
    last = keys[-1]
    if isinstance(node, list):
        _step(node, last, where)
        node[int(last)] = value
    elif isinstance(node, dict):
        if last not in node and not accepts_argument(node, last, config.packages, where):
            raise ConfigError(f'{where}: no key {last!r} here (keys: {sorted(map(str, node))})')
        node[last] = value
    else:
        raise ConfigError(f'{where}: cannot set {last!r} inside a {type(node).__name__}')


def ensure_component(config: CompiledConfig, dotted: str, defaults: Mapping[str, str]) -> bool:
    """Whether ``dotted`` exists, adding it first (``{'class': defaults[dotted]}``) when ``defaults`` names a
    component for it that its owner accepts."""
    if has_path(config, dotted):
        return True
    owner_path, _, owner_key = dotted.rpartition('.')
    if dotted not in defaults or (owner_path and not has_path(config, owner_path)):
        return False
    owner = get_path(config, owner_path) if owner_path else config.tree
    if not isinstance(owner, dict) or (owner_path and not accepts_argument(owner, owner_key, config.packages, dotted)):
        return False
    owner[owner_key] = {'class': defaults[dotted]}
    return True


def set_if_accepted(config: CompiledConfig, dotted: str, value: Any, defaults: Mapping[str, str] = {}) -> bool:
    """Set ``dotted`` to ``value`` when its parent exists (or is a component ``defaults`` adds: dotted path ->
    class name) and holds the key or its class accepts it; report whether it did."""
    parent_path, _, key = dotted.rpartition('.')
    if parent_path and not ensure_component(config, parent_path, defaults):
        return False
    parent = get_path(config, parent_path) if parent_path else config.tree
    if isinstance(parent, dict) and (key in parent or accepts_argument(parent, key, config.packages, dotted)):
        set_path(config, dotted, value)
        return True
    return False


def require_key(done: bool, setting: str, dotted: str, config: CompiledConfig) -> None:
    """``ConfigError`` naming the file, the define, ``setting`` (a flag or an argument) and the key it needs,
    unless ``done``."""
    if not done:
        raise ConfigError(f"{config.source}: define '{config.define}': {setting} needs key '{dotted}', "
                          'which this experiment does not have')


def threshold_settings(thresh: Optional[float] = None, box_thresh: Optional[float] = None) -> Dict[str, float]:
    """The representer settings a dedicated ``thresh`` / ``box_thresh`` stands for (None: not given). A given
    box_thresh is the minimum score in both modes: it also replaces the ``polygon_box_thresh`` an experiment may
    set for polygon mode (``SegDetectorRepresenter``), so that ``--box_thresh 0.6 --polygon`` keeps what scores
    at least 0.6, whatever the file says."""
    settings: Dict[str, float] = {}
    if thresh is not None:
        settings['thresh'] = thresh
    if box_thresh is not None:
        settings['box_thresh'] = settings['polygon_box_thresh'] = box_thresh
    return settings


def set_representer_thresholds(config: CompiledConfig, thresh: Optional[float] = None,
                               box_thresh: Optional[float] = None, prefix: str = '--') -> None:
    """Set the representer's ``thresh`` (binarisation threshold of the probability map) and ``box_thresh``
    (minimum score of a kept detection, in both modes: ``threshold_settings``) in ``config``; None leaves a value
    as it is.

    Ownership: ``structure.representer.box_thresh`` (and ``thresh``, and ``polygon_box_thresh`` for polygon mode
    where set) is the one value of the experiment, held by the one ``SegDetectorRepresenter`` built from it, which
    alone filters detections by it, in inference, evaluation and validation alike (the evaluator reads it there,
    the box_thresh sweep varies it from the representer's candidates). Precedence, highest first: a dedicated
    setting (``--box_thresh`` of train.py / eval.py / demo.py, ``TextDetector(box_thresh=...)``: this function) >
    ``--opt`` / ``opts`` overrides (``apply_overrides``) > the experiment file. ``prefix`` is how the caller's
    settings are named in errors ('--' for flags, '' for arguments). ConfigError when the experiment has no
    representer to take them.
    """
    for name, value in threshold_settings(thresh, box_thresh).items():
        done = set_if_accepted(config, f'structure.representer.{name}', value)
        if name != 'polygon_box_thresh':  # a representer with one threshold for both modes takes box_thresh alone
            require_key(done, f'{prefix}{name}', f'structure.representer.{name}', config)


def parse_override(text: str) -> Tuple[str, Any]:
    """``key.path=value`` with the value read as YAML (numbers, lists, booleans, null, strings)."""
    if '=' not in text:
        raise ConfigError(f'--opt {text!r}: expected key.path=value')
    key, _, raw = text.partition('=')
    try:
        value = safe_load_bounded(raw, f'--opt {text!r}') if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f'--opt {text!r}: value is not valid YAML: {error}') from error
    return key.strip(), value


def add_override_argument(parser: argparse.ArgumentParser, help_text: str = 'override any value of the compiled '
                          'experiment, e.g. train.data_loader.batch_size=8') -> None:
    """``--opt KEY.PATH=VALUE ...`` on ``parser``, read by :func:`apply_overrides`: repeated flags add up (argparse's
    plain ``nargs='+'`` keeps only the last flag, dropping the others' keys in silence); a later value of the same
    key wins."""
    parser.add_argument('--opt', nargs='+', action='extend', default=[], metavar='KEY.PATH=VALUE',
                        help=f'{help_text}; repeated --opt flags add up (a later value of the same key wins)')


def apply_overrides(config: CompiledConfig, overrides: Iterable[str]) -> None:
    for text in overrides:
        key, value = parse_override(text)
        set_path(config, key, value)


def dump_config(config: CompiledConfig) -> str:
    return yaml.safe_dump({config.define: config.tree}, sort_keys=False, allow_unicode=True)
