"""Entry-point flags act on the compiled experiment, and through it on the built objects."""
import os

import pytest
import yaml

import train
from tools.cli import apply_eval_flags, apply_train_flags, compile_experiment, eval_parser, train_parser
from concern.config import ConfigError, ObjectBuilder, get_path, load_config
from experiment import Experiment

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IC15 = 'experiments/seg_detector/ic15_resnet18_deform_thre.yaml'
PROJECT_EXPERIMENTS = sorted(
    os.path.join(folder, name)
    for folder in ('experiments/seg_detector', 'experiments/ASF')
    for name in os.listdir(os.path.join(REPO_ROOT, folder))
    if name.endswith('.yaml') and not name.startswith('base'))


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)


def compiled(argv, parser=train_parser, flags=apply_train_flags):
    return compile_experiment(parser().parse_args(argv), flags)


def build_part(config, dotted):
    """Build one part of the compiled experiment (the data sets of these experiments are not on disk)."""
    return ObjectBuilder(config).build(get_path(config, dotted), dotted)


def test_lr_flag_sets_the_optimizer_and_every_schedule_lr():
    config = compiled([IC15, '--lr', '0.02'])
    assert get_path(config, 'train.scheduler.optimizer_args.lr') == 0.02
    assert get_path(config, 'train.scheduler.learning_rate.lr') == 0.02
    schedule = build_part(config, 'train.scheduler').learning_rate
    # lr * (1 - epoch / (epochs + 1)) ** 0.9 at epoch 0 is the base rate itself.
    assert schedule.get_learning_rate(0, 0) == pytest.approx(0.02)


def test_lr_flag_reaches_a_wrapped_schedule(tmp_path):
    config = load_config(IC15)
    config.tree['train']['scheduler']['learning_rate'] = {
        'class': 'WarmupLR', 'steps': 10, 'warmup_lr': 0.0,
        'origin_lr': {'class': 'DecayLearningRate', 'lr': 0.007, 'epochs': 1200}}
    args = train_parser().parse_args([IC15, '--lr', '0.05', '--epochs', '30'])
    apply_train_flags(config, args)
    wrapped = get_path(config, 'train.scheduler.learning_rate.origin_lr')
    assert wrapped['lr'] == 0.05 and wrapped['epochs'] == 30


def test_epochs_flag_changes_training_length_and_decay():
    config = compiled([IC15, '--epochs', '10'])
    assert get_path(config, 'train.epochs') == 10
    assert get_path(config, 'train.scheduler.learning_rate.epochs') == 10
    schedule = build_part(config, 'train.scheduler').learning_rate
    # Half-way through the shortened schedule: 0.007 * (1 - 5 / 11) ** 0.9.
    assert schedule.get_learning_rate(5, 0) == pytest.approx(0.007 * (1 - 5 / 11) ** 0.9)


def test_loader_checkpoint_and_representer_flags():
    config = compiled([IC15, '--batch_size', '4', '--num_workers', '0', '--resume', 'x.pth',
                       '--start_epoch', '3', '--start_iter', '70', '--thresh', '0.25', '--box_thresh', '0.55',
                       '--verbose'])
    assert get_path(config, 'train.data_loader.batch_size') == 4
    assert get_path(config, 'train.data_loader.num_workers') == 0
    assert get_path(config, 'validation.data_loaders.icdar2015.num_workers') == 0
    assert get_path(config, 'train.checkpoint.resume') == 'x.pth'
    assert get_path(config, 'train.checkpoint.start_epoch') == 3
    assert get_path(config, 'train.checkpoint.start_iter') == 70
    assert get_path(config, 'structure.representer.thresh') == 0.25
    assert get_path(config, 'structure.representer.box_thresh') == 0.55
    assert get_path(config, 'logger.verbose') is True
    representer = Experiment.build(config, ['structure']).structure.representer
    assert (representer.thresh, representer.box_thresh) == (0.25, 0.55)


def test_sweep_flag_needs_validate_and_turns_on_the_validation_sweep():
    with pytest.raises(ConfigError, match='--sweep .* needs --validate'):
        compiled([IC15, '--sweep'])
    config = compiled([IC15, '--validate', '--sweep'])
    assert get_path(config, 'validation.sweep') is True
    assert compiled([IC15, '--validate']).tree['validation'].get('sweep') is None


def test_flags_win_over_opt_which_reaches_built_objects():
    # precedence: dedicated flag > --opt > file
    config = compiled([IC15, '--batch_size', '4', '--opt', 'train.data_loader.batch_size=2',
                       'structure.representer.unclip_ratio=1.8', 'validation.interval=9'])
    assert get_path(config, 'train.data_loader.batch_size') == 4
    assert get_path(config, 'validation.interval') == 9
    experiment = Experiment.build(config, ['structure'])
    assert experiment.structure.representer.unclip_ratio == 1.8


def test_repeated_opt_flags_add_up_and_the_last_value_of_a_key_wins():
    # argparse's default for nargs='+' keeps only the last --opt flag: the first flag's keys were dropped in
    # silence (an evaluation meant for one data set scored another with the file's data_dir)
    for parser, flags in ((train_parser, apply_train_flags), (eval_parser, apply_eval_flags)):
        config = compiled([IC15] + ['--resume', 'x'] * (parser is eval_parser)
                          + ['--opt', 'validation.interval=9', 'train.data_loader.num_workers=3',
                             '--opt', 'train.data_loader.num_workers=1', 'validation.exempt=5'], parser, flags)
        assert get_path(config, 'validation.interval') == 9 and get_path(config, 'validation.exempt') == 5
        assert get_path(config, 'train.data_loader.num_workers') == 1
    assert train_parser().parse_args([IC15]).opt == [] and train_parser().parse_args([IC15]).opt is not None
    from convert_to_onnx import build_parser as onnx_parser
    onnx_args = onnx_parser().parse_args([IC15, '--resume', 'x', '--output', 'y.onnx', '--opt', 'a=1', '--opt', 'b=2'])
    assert onnx_args.opt == ['a=1', 'b=2']


def test_opt_with_a_path_that_does_not_exist():
    with pytest.raises(ConfigError, match=r"option 'train.data_loader.batch_sizes'.*no key 'batch_sizes'"):
        compiled([IC15, '--opt', 'train.data_loader.batch_sizes=2'])


def test_eval_flags_change_the_evaluation_pipeline():
    config = compiled([IC15, '--resume', 'x', '--batch_size', '2', '--image_short_side', '640',
                       '--box_thresh', '0.5'], eval_parser, apply_eval_flags)
    loader = get_path(config, 'evaluation.data_loaders.icdar2015')
    assert loader['batch_size'] == 2
    process = loader['dataset']['processes'][0]
    assert process['short_side'] == 640 and process['max_long_side'] == 2560  # demo.py's rule
    from data.processes import AugmentDetectionData
    resize = AugmentDetectionData(**{key: value for key, value in process.items() if key != 'class'})
    assert resize.resize_shape(720, 1280) == (640, 1152)  # 1280 * 640 / 720 = 1137.8 -> 1152
    assert get_path(config, 'structure.representer.box_thresh') == 0.5
    with pytest.raises(ConfigError, match='--image_short_side 700: must be a positive multiple of 32'):
        compiled([IC15, '--resume', 'x', '--image_short_side', '700'], eval_parser, apply_eval_flags)


def test_print_config_only_prints_the_compiled_experiment(capsys):
    assert train.main([IC15, '--print-config-only', '--lr', '0.003', '--opt', 'logger.level=debug']) == 0
    printed = yaml.safe_load(capsys.readouterr().out)['Experiment']
    assert printed['train']['scheduler']['optimizer_args']['lr'] == 0.003
    assert printed['logger']['level'] == 'debug'
    assert printed['train']['data_loader']['dataset']['class'] == 'ImageDataset'   # ^train_data resolved


def test_config_errors_exit_with_a_message(capsys):
    assert train.main([IC15, '--opt', 'nope=1']) == 2
    assert "no key 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize('path', PROJECT_EXPERIMENTS)
def test_every_project_experiment_builds_its_model_and_post_processing(path):
    experiment = Experiment.build(load_config(path), ['structure', 'logger'])
    structure = experiment.structure
    assert structure.representer is not None and structure.measurer is not None
    model = structure.builder.build()
    names = [name for name, _ in model.state_dict().items()]
    assert names and all(name.startswith('model.module.') for name in names)


def test_flags_act_on_components_the_experiment_leaves_to_their_defaults(tmp_path):
    short = tmp_path / 'short.yaml'
    short.write_text(
        'import: [experiments/seg_detector/base_ic15.yaml]\n'
        'define:\n'
        '  - name: Experiment\n'
        '    class: Experiment\n'
        '    structure: {class: Structure, builder: {class: Builder, model: SegDetectorModel,\n'
        '                model_args: {backbone: resnet18, decoder: SegDetector}}}\n'
        '    train: {class: TrainSettings, data_loader: {class: DataLoader, dataset: ^train_data}}\n')
    config = compiled([str(short), '--resume', 'x.pth', '--lr', '0.01', '--verbose'])
    assert get_path(config, 'train.checkpoint') == {'class': 'Checkpoint', 'resume': 'x.pth'}
    assert get_path(config, 'train.scheduler') == {
        'class': 'OptimizerScheduler', 'optimizer_args': {'lr': 0.01, 'momentum': 0.9, 'weight_decay': 0.0001}}
    assert get_path(config, 'logger') == {'class': 'Logger', 'verbose': True}
    checkpoint = build_part(config, 'train.checkpoint')
    assert checkpoint.resume == 'x.pth'
