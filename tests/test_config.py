"""The YAML experiment format: imports, packages, references, aliases, errors and overrides."""
import os
import textwrap

import pytest
import yaml

from concern.config import (ConfigError, ObjectBuilder, apply_overrides, dump_config, get_path, load_config,
                            load_experiment_file)
from experiment import Experiment, Structure, ValidationSettings

FIXTURE_ROOT = os.path.join(os.path.dirname(__file__), 'fixtures', 'config', 'original')
ORIGINAL_EXPERIMENT = 'experiments/seg_detector/totaltext_resnet18_deform_thre.yaml'


def write(root, relative_path, text):
    path = os.path.join(root, relative_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as stream:
        stream.write(textwrap.dedent(text))
    return relative_path


@pytest.fixture
def in_fixture(monkeypatch):
    monkeypatch.chdir(FIXTURE_ROOT)


def test_three_level_import_chain_merges_packages_and_defines(in_fixture):
    loaded = load_experiment_file(ORIGINAL_EXPERIMENT)
    # The importing file's packages come first: base_totaltext's, then base's.
    assert loaded.packages == ['decoders.seg_detector_loss', 'experiment', 'structure.model',
                               'training.learning_rate', 'data', 'data.processes']
    assert set(loaded.defines) == {'train_data', 'validate_data', 'Experiment'}
    assert loaded.defines['train_data'].source == 'experiments/seg_detector/base_totaltext.yaml'
    assert loaded.defines['Experiment'].source == ORIGINAL_EXPERIMENT


def test_references_are_resolved_into_copies(in_fixture):
    config = load_config(ORIGINAL_EXPERIMENT)
    dataset = get_path(config, 'train.data_loader.dataset')
    assert dataset['class'] == 'ImageDataset'
    assert dataset['data_list'] == ['./datasets/total_text/train_list.txt']
    assert get_path(config, 'validation.data_loaders.icdar2015.dataset.data_list') == \
        ['./datasets/total_text/test_list.txt']
    # Each reference is its own copy: changing one place changes nothing else.
    apply_overrides(config, ['train.data_loader.dataset.processes.1.size=[512, 512]'])
    assert get_path(config, 'train.data_loader.dataset.processes.1.size') == [512, 512]
    assert load_config(ORIGINAL_EXPERIMENT).tree['train']['data_loader']['dataset']['processes'][1]['size'] == \
        [640, 640]


def test_yaml_alias_gives_an_independent_copy(in_fixture):
    config = load_config(ORIGINAL_EXPERIMENT)
    assert config.tree['evaluation'] == config.tree['validation']
    apply_overrides(config, ['validation.interval=7'])
    assert config.tree['validation']['interval'] == 7
    assert config.tree['evaluation']['interval'] == 4500


def test_overriding_a_missing_path_is_an_error_naming_it(in_fixture):
    config = load_config(ORIGINAL_EXPERIMENT)
    with pytest.raises(ConfigError, match=r"train\.data_loader\.batchsize.*no key 'batchsize'"):
        apply_overrides(config, ['train.data_loader.batchsize=8'])
    with pytest.raises(ConfigError, match=r"no key 'nothere'"):
        apply_overrides(config, ['nothere.x=1'])
    with pytest.raises(ConfigError, match='expected key.path=value'):
        apply_overrides(config, ['train.epochs'])


def test_override_values_are_read_as_yaml(in_fixture):
    config = load_config(ORIGINAL_EXPERIMENT)
    apply_overrides(config, ['train.data_loader.batch_size=8', 'logger.level=debug',
                             'train.checkpoint.resume=null', 'validation.visualize=true'])
    assert get_path(config, 'train.data_loader.batch_size') == 8
    assert get_path(config, 'logger.level') == 'debug'
    assert get_path(config, 'train.checkpoint.resume') is None
    assert get_path(config, 'validation.visualize') is True


def test_override_can_set_an_argument_the_class_accepts(tmp_path, monkeypatch):
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
    apply_overrides(config, ['validation.exempt=3'])     # not in the file, but an argument of the class
    experiment = Experiment.build(config, ['structure', 'validation'])
    assert isinstance(experiment.validation, ValidationSettings)
    assert experiment.validation.exempt == 3
    with pytest.raises(ConfigError, match="no key 'exemptt'"):
        apply_overrides(config, ['validation.exemptt=3'])


def test_dump_round_trips(in_fixture):
    config = load_config(ORIGINAL_EXPERIMENT)
    assert yaml.safe_load(dump_config(config)) == {'Experiment': config.tree}


# ----------------------------------------------------------------------------------------------
# Errors name the file, the define and the key


def test_unknown_class_names_file_define_and_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', """\
        package: [experiment]
        define:
          - name: Experiment
            class: Experiment
            structure:
              class: Structure
              builder: null
              representer: {class: NoSuchRepresenter}
    """)
    with pytest.raises(ConfigError) as error:
        Experiment.build(load_config('exp.yaml'), ['structure'])
    message = str(error.value)
    assert 'exp.yaml' in message and "define 'Experiment'" in message
    assert "structure.representer.class" in message and 'NoSuchRepresenter' in message


def test_wrong_key_names_file_define_and_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'base.yaml', """\
        package: [experiment]
        define:
          - name: loaders
            class: ValidationSettings
            data_loaders: {a: 1}
            intervall: 5
    """)
    write(tmp_path, 'exp.yaml', """\
        import: [base.yaml]
        define:
          - name: Experiment
            class: Experiment
            structure: {class: Structure, builder: null}
            validation: ^loaders
    """)
    with pytest.raises(ConfigError) as error:
        Experiment.build(load_config('exp.yaml'), ['structure', 'validation'])
    message = str(error.value)
    # The error points at the define the key was written in, in the file it was written in.
    assert "base.yaml: define 'loaders', key 'validation.intervall'" in message
    assert "unknown argument 'intervall' for class ValidationSettings" in message


def test_missing_required_argument(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', """\
        define:
          - name: Experiment
            class: Experiment
            structure: {class: Structure}
    """)
    with pytest.raises(ConfigError, match=r"exp.yaml: define 'Experiment', key 'structure'.*needs argument.*builder"):
        Experiment.build(load_config('exp.yaml'), ['structure'])


def test_missing_import_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', "import: ['experiments/not_there.yaml']\ndefine: []\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: key 'import': file not found: 'experiments/not_there.yaml'"):
        load_experiment_file('exp.yaml')


def test_dangling_reference(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', """\
        define:
          - name: Experiment
            class: Experiment
            structure: {class: Structure, builder: null}
            train: {class: TrainSettings, data_loader: {dataset: ^train_dataa}}
    """)
    with pytest.raises(ConfigError) as error:
        load_config('exp.yaml')
    message = str(error.value)
    assert "exp.yaml: define 'Experiment', key 'train.data_loader.dataset'" in message
    assert "'^train_dataa' names no define" in message


def test_reference_cycle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', """\
        define:
          - name: a
            x: ^b
          - name: b
            y: ^a
          - name: Experiment
            structure: ^a
    """)
    with pytest.raises(ConfigError, match='reference cycle'):
        load_config('exp.yaml')


def test_import_cycle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'a.yaml', 'import: [b.yaml]\n')
    write(tmp_path, 'b.yaml', 'import: [a.yaml]\n')
    with pytest.raises(ConfigError, match='import cycle'):
        load_experiment_file('a.yaml')


@pytest.mark.parametrize('package', ['os', 'subprocess', 'torch.nn'])
def test_packages_outside_the_project_are_refused(tmp_path, monkeypatch, package):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', f'package: [{package}]\ndefine: []\n')
    with pytest.raises(ConfigError,
                       match=rf"exp.yaml: key 'package': package '{package}' is not a module of this project"):
        load_experiment_file('exp.yaml')


def test_dotted_class_outside_the_project_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', """\
        define:
          - name: Experiment
            class: Experiment
            structure: {class: Structure, builder: {class: os.system, command: 'true'}}
    """)
    with pytest.raises(ConfigError, match="package 'os' is not a module of this project"):
        Experiment.build(load_config('exp.yaml'), ['structure'])


def test_non_class_attributes_of_project_modules_are_refused(tmp_path, monkeypatch):
    # experiment.py imports names (functions, typing helpers); only project classes may be built.
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', """\
        package: [experiment]
        define:
          - name: Experiment
            class: Experiment
            structure: {class: Structure, builder: {class: ObjectBuilder, config: null}}
    """)
    experiment = Experiment.build(load_config('exp.yaml'), ['structure'])  # concern.config.ObjectBuilder is ours
    assert isinstance(experiment.structure.builder, ObjectBuilder)
    write(tmp_path, 'exp2.yaml', """\
        package: [experiment]
        define:
          - name: Experiment
            class: Experiment
            structure: {class: Structure, builder: {class: Optional}}
    """)
    with pytest.raises(ConfigError, match="unknown class 'Optional'"):
        Experiment.build(load_config('exp2.yaml'), ['structure'])


def test_unsafe_yaml_tags_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', "define:\n  - name: x\n    v: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match='not valid YAML'):
        load_experiment_file('exp.yaml')


def test_define_without_name_and_bad_top_level(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', "define:\n  - class: Experiment\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: key 'define\[0\]' needs a string 'name:'"):
        load_experiment_file('exp.yaml')
    write(tmp_path, 'exp2.yaml', "defines: []\n")
    with pytest.raises(ConfigError, match=r"exp2.yaml: unknown top-level key\(s\) \['defines'\]"):
        load_experiment_file('exp2.yaml')


def test_missing_experiment_define(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', "define:\n  - name: train_data\n    x: 1\n")
    with pytest.raises(ConfigError, match="exp.yaml: no define named 'Experiment'"):
        load_config('exp.yaml')


def test_only_requested_parts_are_built(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'exp.yaml', """\
        package: [experiment]
        define:
          - name: Experiment
            class: Experiment
            structure: {class: Structure, builder: null}
            train: {class: NotBuiltUnlessAsked}
    """)
    experiment = Experiment.build(load_config('exp.yaml'), ['structure'])
    assert isinstance(experiment.structure, Structure) and experiment.train is None
    with pytest.raises(ConfigError, match='NotBuiltUnlessAsked'):
        Experiment.build(load_config('exp.yaml'), ['structure', 'train'])
