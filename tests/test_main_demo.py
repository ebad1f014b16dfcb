"""`make demo`'s pipeline at a reduced size: data, training, evaluation and pictures (slow)."""
import os
import shutil

import pytest

from tools import main_demo

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quick_demo_pipeline_runs_end_to_end_and_reuses_its_outputs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    name = f'demo_quick_test_{os.getpid()}'
    args = ['--quick', '--data_dir', str(tmp_path / 'synthetic'), '--result_dir', str(tmp_path / 'results'),
            '--name', name]
    try:
        assert main_demo.main(args) == 0
        first = capsys.readouterr().out
        assert 'generating the synthetic data set' in first and 'training:' in first
        assert 'box     mode: precision' in first and 'polygon mode: precision' in first
        pictures = sorted(p for p in os.listdir(tmp_path / 'results') if p.endswith('.jpg'))
        assert len(pictures) == 2
        assert os.path.isfile(os.path.join('workspace', name, 'model', 'final'))

        assert main_demo.main(args) == 0
        second = capsys.readouterr().out
        assert 'reusing the synthetic data set' in second and 'reusing the trained model' in second
    finally:
        shutil.rmtree(os.path.join('workspace', name), ignore_errors=True)


def test_training_stamp_follows_the_compiled_experiment(monkeypatch):
    """A changed experiment (here through --opt, as an edited file would) must not reuse the old model."""
    monkeypatch.chdir(REPO_ROOT)
    args = [main_demo.EXPERIMENT, '--name', 'x', '--seed', '0']
    stamp = main_demo.training_stamp(args)
    assert stamp == main_demo.training_stamp(list(args))
    assert stamp['train_args'] == args
    changed = main_demo.training_stamp(args + ['--opt', 'train.scheduler.optimizer_args.lr=0.003'])
    assert changed['experiment_sha256'] != stamp['experiment_sha256']
    # a flag that writes the same value the file holds compiles to the same experiment
    assert main_demo.training_stamp(args + ['--epochs', '8'])['experiment_sha256'] == stamp['experiment_sha256']


def test_the_demo_trains_in_bf16_only_where_the_cpu_runs_it_natively(monkeypatch, capsys):
    # On an AVX2-only CPU bf16 autocast is emulated (27 s against 3.0 s per step, measured): fp32 there.
    import concern.device
    monkeypatch.setattr(concern.device, 'cpu_bf16_is_native', lambda: True)
    assert main_demo.precision_flags() == ['--amp']
    monkeypatch.setattr(concern.device, 'cpu_bf16_is_native', lambda: False)
    assert main_demo.precision_flags() == []
    assert 'no native bf16: training in fp32' in capsys.readouterr().out

