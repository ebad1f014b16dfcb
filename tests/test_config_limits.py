"""Experiment files as untrusted data (issue 25): bounded loading (size, alias and reference expansion),
UTF-8 named, classes only from the modules of experiment components, arguments of the wrong plain type."""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from concern.config import (COMPONENT_MODULES, MAX_EXPANDED_NODES, MAX_FILE_BYTES, PROJECT_MODULES, ConfigError,
                            ObjectBuilder, apply_overrides, load_config, load_experiment_file, parse_override,
                            resolve_class)
from experiment import Experiment

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_EXPERIMENTS = sorted(os.path.relpath(os.path.join(folder, name), REPO_ROOT)
                         for folder, _, names in os.walk(os.path.join(REPO_ROOT, 'experiments'))
                         for name in names if name.endswith('.yaml'))


def write(root, name, text):
    path = os.path.join(root, name)
    with open(path, 'w', encoding='utf-8') as stream:
        stream.write(textwrap.dedent(text))
    return name


def billion_laughs(levels=9, width=9):
    """The issue's file: nested anchors and aliases, ``levels`` x ``width`` (9 x 9: 9**9 leaves, under 1 kB)."""
    lines = ['define:', '  - name: Experiment', '    class: Experiment',
             '    a0: &a0 [' + ', '.join(['lol'] * width) + ']']
    for level in range(1, levels + 1):
        lines.append(f'    a{level}: &a{level} [' + ', '.join([f'*a{level - 1}'] * width) + ']')
    return '\n'.join(lines) + '\n'


# ------------------------------------------------------------------ bounded loading

def test_billion_laughs_is_refused_at_once_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = billion_laughs()
    assert len(text.encode()) < 1024
    write(tmp_path, 'laughs.yaml', text)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf'laughs.yaml: its aliases \(\*anchor\) expand it to more than '
                                          rf'{MAX_EXPANDED_NODES} YAML nodes'):
        load_config('laughs.yaml')
    # refused after 100,000 nodes (milliseconds); unbounded it ran past 120 s: a wide margin for a loaded CI machine
    assert time.perf_counter() - start < 30.0


def test_billion_laughs_through_print_config_only_exits_quickly_with_the_message(tmp_path):
    path = tmp_path / 'laughs.yaml'
    path.write_text(billion_laughs())
    start = time.perf_counter()
    done = subprocess.run([sys.executable, 'train.py', str(path), '--print-config-only'], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert time.perf_counter() - start < 60  # a Python start with torch; the expansion itself was > 120 s
    assert done.returncode != 0
    assert 'laughs.yaml' in done.stderr and 'expand it to more than' in done.stderr


def test_reference_bomb_is_refused(tmp_path, monkeypatch):
    # the same multiplication with ^references instead of YAML aliases
    monkeypatch.chdir(tmp_path)
    defines = ['  - name: d0\n    v: [' + ', '.join(['x'] * 9) + ']\n']
    for level in range(1, 10):
        defines.append(f'  - name: d{level}\n    v: [' + ', '.join([f'^d{level - 1}'] * 9) + ']\n')
    defines.append('  - name: Experiment\n    class: Experiment\n    structure: ^d9\n')
    write(tmp_path, 'refs.yaml', 'define:\n' + ''.join(defines))
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"refs.yaml: define '.*'.*the \^references expand define 'Experiment' "
                                          rf'to more than {MAX_EXPANDED_NODES} nodes'):
        load_config('refs.yaml')
    assert time.perf_counter() - start < 30.0  # milliseconds when bounded; 9**9 nodes unbounded


def test_recursive_alias_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'loop.yaml', 'define:\n  - name: Experiment\n    a: &a [1, *a]\n')
    with pytest.raises(ConfigError, match='loop.yaml: line 3: an alias .* refers to a node that contains it'):
        load_config('loop.yaml')


def test_diamond_of_imports_reads_each_file_once(tmp_path, monkeypatch):
    # 9 levels of files each importing the next level's file 9 times: without the memo 9**9 reads
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'f0.yaml', 'define:\n  - name: Experiment\n    class: Experiment\n')
    for level in range(1, 10):
        write(tmp_path, f'f{level}.yaml', 'import: [' + ', '.join([f'f{level - 1}.yaml'] * 9) + ']\n')
    start = time.perf_counter()
    assert set(load_experiment_file('f9.yaml').defines) == {'Experiment'}
    assert time.perf_counter() - start < 30.0  # ten files read; 9**9 reads without the memo


def test_oversized_file_is_refused_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'big.yaml').write_text('# ' + 'x' * MAX_FILE_BYTES + '\ndefine: []\n')
    with pytest.raises(ConfigError, match=rf'big.yaml: larger than {MAX_FILE_BYTES} bytes'):
        load_experiment_file('big.yaml')


def test_opt_value_is_bounded_too():
    bomb = '[' + ', '.join(['&a0 [x, x, x, x, x, x, x, x, x]'] + ['*a0'] * 8) + ']'
    assert len(parse_override(f'k={bomb}')[1]) == 9  # an alias or two is fine
    levels = ['&a0 [x, x, x, x, x, x, x, x, x]'] + [f'&a{i} [' + ', '.join([f'*a{i - 1}'] * 9) + ']'
                                                    for i in range(1, 10)]
    with pytest.raises(ConfigError, match='--opt .*expand it to more than'):
        parse_override('k=[' + ', '.join(levels) + ']')


@pytest.mark.parametrize('path', ALL_EXPERIMENTS)
def test_every_experiment_file_loads_far_within_the_limits(path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    assert os.path.getsize(path) * 100 < MAX_FILE_BYTES
    loaded = load_experiment_file(path)
    if 'Experiment' in loaded.defines:
        config = load_config(path)
        nodes = [0]

        def count(node):
            nodes[0] += 1
            children = list(node.items()) if isinstance(node, dict) else node if isinstance(node, list) else []
            for child in children:
                count(child)
        count(config.tree)
        assert nodes[0] * 100 < MAX_EXPANDED_NODES


def test_non_utf8_file_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'latin.yaml').write_bytes('define:\n  - name: Experiment\n    x: "caf\u00e9"\n'.encode('latin-1'))
    with pytest.raises(ConfigError, match=r'latin.yaml:3: not UTF-8 text \(byte 0xe9 at byte offset \d+\); '
                                          'save the experiment file as UTF-8'):
        load_experiment_file('latin.yaml')


# ------------------------------------------------------------------ class lookup

REFUSED_CLASSES = ['assets.ops.dcn.setup.Anything', 'tests.x.Y', 'benchmarks.bench_dcn.Z', 'tools.score.W',
                   'os.system']


def test_class_lookup_imports_nothing_outside_the_component_modules(tmp_path):
    """In a fresh interpreter (so no earlier test has imported them): each refused name is a ConfigError naming
    the key and the allowed modules, nothing new is imported, and the working directory stays."""
    script = textwrap.dedent(f"""\
        import json, os, sys
        sys.path.insert(0, {REPO_ROOT!r})
        os.chdir({str(tmp_path)!r})
        from concern.config import ConfigError, load_config
        from experiment import Experiment
        results = []
        for index, name in enumerate({REFUSED_CLASSES!r}):
            path = f'exp{{index}}.yaml'
            with open(path, 'w') as stream:
                stream.write('define:\\n  - name: Experiment\\n    class: Experiment\\n'
                             f'    structure: {{{{class: Structure, builder: {{{{class: {{name}}}}}}}}}}\\n')
            before = set(sys.modules)
            try:
                Experiment.build(load_config(path), ['structure'])
                message = None
            except ConfigError as error:
                message = str(error)
            results.append({{'name': name, 'message': message, 'new': sorted(set(sys.modules) - before),
                             'cwd': os.getcwd()}})
        print(json.dumps(results))
    """)
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert [result['name'] for result in results] == REFUSED_CLASSES
    for result in results:
        name, message = result['name'], result['message']
        assert message is not None, f'{name} was built'
        assert "key 'structure.builder.class'" in message
        assert repr(name.rpartition('.')[0]) in message
        assert 'data.processes' in message and 'structure.model' in message  # the allowed modules are listed
        top = name.split('.')[0]
        assert not [module for module in result['new'] if module.split('.')[0] == top or 'setup' in module], \
            result['new']
        assert result['cwd'] == str(tmp_path)


def test_package_entries_are_checked_against_the_component_modules_before_importing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for package in ('assets.ops.dcn.setup', 'assets.ops.dcn', 'structure.weights', 'inference.detector'):
        write(tmp_path, 'exp.yaml', f'package: [{package}]\ndefine: []\n')
        with pytest.raises(ConfigError, match=rf"exp.yaml: key 'package': module '{package}' is not a module of "
                                              r'experiment components .*allowed: .*data\.processes'):
            load_experiment_file('exp.yaml')


def test_every_class_of_every_experiment_resolves_in_the_component_modules(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    checked = 0
    for path in ALL_EXPERIMENTS:
        loaded = load_experiment_file(path)
        if 'Experiment' not in loaded.defines:
            continue
        config = load_config(path)

        def visit(node):
            nonlocal checked
            if isinstance(node, dict):
                if 'class' in node:
                    cls = resolve_class(node['class'], config.packages, path)
                    assert any(cls.__module__ == module or getattr(__import__(module, fromlist=['x']),
                                                                   cls.__name__, None) is cls
                               for module in COMPONENT_MODULES)
                    checked += 1
                for value in node.values():
                    visit(value)
            elif isinstance(node, list):
                for value in node:
                    visit(value)
        visit(config.tree)
    assert checked > 100


def test_component_modules_hold_every_searched_module_and_dotted_names_work(tmp_path, monkeypatch):
    assert set(PROJECT_MODULES) <= COMPONENT_MODULES
    assert resolve_class('data.processes.augment_data.AugmentDetectionData', [], 'here').__name__ == \
        'AugmentDetectionData'
    assert resolve_class('decoders.seg_detector.SegDetector', [], 'here').__name__ == 'SegDetector'


# ------------------------------------------------------------------ argument types

def test_batch_size_of_the_wrong_type_names_the_key_and_the_type(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', """\
        package: [experiment, data]
        define:
          - name: Experiment
            class: Experiment
            structure: {class: Structure, builder: null}
            train:
              class: TrainSettings
              data_loader: {class: DataLoader, dataset: [], batch_size: eight}
    """)
    config = load_config('exp.yaml')
    with pytest.raises(ConfigError, match=r"exp.yaml: define 'Experiment', key 'train.data_loader.batch_size': "
                                          r"class DataLoader takes an integer for 'batch_size', got str 'eight'"):
        ObjectBuilder(config).build(config.tree['train'], 'train')


@pytest.mark.parametrize('key, value, expected', [
    ('validation.interval', 'often', 'an integer'),
    ('validation.visualize', 'yes please', 'a boolean'),
    ('validation.sweep', 1.5, 'a boolean'),
])
def test_plain_argument_types_are_checked(tmp_path, monkeypatch, key, value, expected):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', """\
        package: [experiment]
        define:
          - name: Experiment
            class: Experiment
            structure: {class: Structure, builder: null}
            validation: {class: ValidationSettings, data_loaders: {a: 1}}
    """)
    config = load_config('exp.yaml')
    config.tree['validation'][key.split('.')[1]] = value
    with pytest.raises(ConfigError, match=rf"key '{key}': class ValidationSettings takes {expected}"):
        Experiment.build(config, ['structure', 'validation'])


def test_numbers_convertible_as_before_still_build(tmp_path, monkeypatch):
    # an int where a float is annotated, an integral float where an int is, None for an argument defaulting to None
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', """\
        package: [experiment]
        define:
          - name: Experiment
            class: Experiment
            structure: {class: Structure, builder: null, representer: {class: SegDetectorRepresenter, unclip_ratio: 2}}
            validation: {class: ValidationSettings, data_loaders: {a: 1}, interval: 100.0, resume: null}
    """)
    experiment = Experiment.build(load_config('exp.yaml'), ['structure', 'validation'])
    assert experiment.validation.interval == 100 and experiment.structure.representer.unclip_ratio == 2


def test_a_float_argument_written_as_yaml_reads_it_a_string_still_builds(tmp_path, monkeypatch):
    # review item 4: PyYAML reads 1e-3 (no dot) as the string '1e-3'; a float-annotated argument takes it, from the
    # file and from --opt, converted to a float; a string no float parses is still refused
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', """\
        package: [experiment, training.optimizer_scheduler, training.learning_rate]
        define:
          - name: Experiment
            class: Experiment
            structure: {class: Structure, builder: null}
            train:
              class: TrainSettings
              data_loader: null
              scheduler:
                class: OptimizerScheduler
                learning_rate: {class: DecayLearningRate, lr: 1e-3, factor: 9e-1}
    """)
    config = load_config('exp.yaml')
    assert config.tree['train']['scheduler']['learning_rate']['lr'] == '1e-3'  # what PyYAML gives
    schedule = ObjectBuilder(config).build(config.tree['train']['scheduler']['learning_rate'], 'lr_schedule')
    assert schedule.lr == 1e-3 and isinstance(schedule.lr, float) and schedule.factor == 0.9
    apply_overrides(config, ['train.scheduler.learning_rate.lr=5e-4'])
    schedule = ObjectBuilder(config).build(config.tree['train']['scheduler']['learning_rate'], 'lr_schedule')
    assert schedule.lr == 5e-4
    apply_overrides(config, ['train.scheduler.learning_rate.lr=fast'])
    with pytest.raises(ConfigError, match=r"class DecayLearningRate takes a number for 'lr', got str 'fast'"):
        ObjectBuilder(config).build(config.tree['train']['scheduler']['learning_rate'], 'lr_schedule')


@pytest.mark.parametrize('text', ['nan', 'NaN', 'inf', '-inf', 'Infinity', '1e999', '1_000', '0x10'])
def test_a_float_argument_refuses_a_string_that_is_not_a_finite_decimal_number(tmp_path, monkeypatch, text):
    # second review item 4: float() parses 'nan', 'inf', '1e999' (inf) and '1_000'; none of them is taken for a
    # float-annotated argument (DecayLearningRate(lr='inf') built before), from the file or from --opt
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', f"""\
        package: [experiment, training.optimizer_scheduler, training.learning_rate]
        define:
          - name: Experiment
            class: Experiment
            structure: {{class: Structure, builder: null}}
            train:
              class: TrainSettings
              data_loader: null
              scheduler:
                class: OptimizerScheduler
                learning_rate: {{class: DecayLearningRate, lr: '{text}'}}
    """)
    config = load_config('exp.yaml')
    with pytest.raises(ConfigError, match=r"class DecayLearningRate takes a number for 'lr', got str"):
        ObjectBuilder(config).build(config.tree['train']['scheduler']['learning_rate'], 'lr_schedule')
    apply_overrides(config, ['train.scheduler.learning_rate.lr=1e-3'])
    assert ObjectBuilder(config).build(config.tree['train']['scheduler']['learning_rate'], 'lr_schedule').lr == 1e-3
    apply_overrides(config, [f'train.scheduler.learning_rate.lr={text}'])
    if isinstance(config.tree['train']['scheduler']['learning_rate']['lr'], int):
        return  # YAML 1.1 reads an unquoted 1_000 or 0x10 as an integer, which is a number
    with pytest.raises(ConfigError, match=r"class DecayLearningRate takes a number for 'lr', got str"):
        ObjectBuilder(config).build(config.tree['train']['scheduler']['learning_rate'], 'lr_schedule')
