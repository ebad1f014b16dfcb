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

        import json
        figures = json.loads((tmp_path / 'results' / 'figures.json').read_text())
        assert not figures['model_reused'] and not figures['data_reused'] and figures['precision'] in ('fp32', 'bf16')
        assert figures['stages_seconds']['training'] > 0 and set(figures['results']) == {'box', 'polygon'}

        assert main_demo.main(args) == 0
        second = capsys.readouterr().out
        assert 'reusing the synthetic data set' in second and 'reusing the trained model' in second
        figures = json.loads((tmp_path / 'results' / 'figures.json').read_text())
        assert figures['model_reused'] and figures['data_reused']
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


def test_trained_precision_names_what_amp_resolves_to(monkeypatch):
    import torch
    assert main_demo.trained_precision([]) == 'fp32'
    assert main_demo.trained_precision(['--amp', 'fp16']) == 'fp16'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert main_demo.trained_precision(['--amp']) == 'bf16'  # CPU autocast is bf16
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: False)
    assert main_demo.trained_precision(['--amp']) == 'fp16'


def test_record_refuses_quick_runs_and_bad_threads(capsys):
    with pytest.raises(SystemExit):
        main_demo.main(['--quick', '--record', 'unused'])
    assert '--record keeps full-size runs only' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main_demo.main(['--threads', 'many'])
    assert "threads: expected 'auto'" in capsys.readouterr().err


def test_the_demo_trains_in_bf16_only_where_the_cpu_runs_it_natively(monkeypatch, capsys):
    # On an AVX2-only CPU bf16 autocast is emulated (27 s against 3.0 s per step, measured): fp32 there.
    import concern.device
    monkeypatch.setattr(concern.device, 'cpu_bf16_is_native', lambda: True)
    assert main_demo.precision_flags() == ['--amp']
    monkeypatch.setattr(concern.device, 'cpu_bf16_is_native', lambda: False)
    assert main_demo.precision_flags() == []
    assert 'no native bf16: training in fp32' in capsys.readouterr().out



def _record(cpu='AMD EPYC', isa='AVX2', precision='fp32', seed=0, box=(0.9, 0.8), polygon=(0.7, 0.6)):
    def metrics(pr):
        p, r = pr
        return {'precision': p, 'recall': r, 'fmeasure': 2 * p * r / (p + r)}
    return {'date': '2026-12-06T16:00:00+00:00', 'machine': {'cpu': cpu, 'cpus': 2, 'isa': isa, 'isa_caps': {}},
            'precision': precision, 'seed': seed,
            'stages_seconds': {'setup': 120.0, 'data': 12.0, 'training': 840.0, 'evaluation': 30.0, 'pictures': 6.0},
            'results': {'box': metrics(box), 'polygon': metrics(polygon)}}


def test_demo_table_is_rendered_from_the_records(tmp_path):
    import json
    from tools import demo_figures
    records = tmp_path / 'runs'
    records.mkdir()
    (records / 'a.json').write_text(json.dumps(_record(seed=0)))
    (records / 'b.json').write_text(json.dumps(_record(seed=1, box=(0.8, 0.8))))
    table = demo_figures.render(demo_figures.load_records(str(records)))
    rows = [line for line in table.splitlines() if line.startswith('| synthetic_resnet18_deform_thre.yaml | AMD')]
    assert len(rows) == 2
    # 120 + 12 + 840 + 30 + 6 s = 16.8 min; F of P 0.9, R 0.8 = 2*0.72/1.7 = 0.847
    assert '| 16.8 |' in rows[0] and '**0.847**' in rows[0] and '| 14.0 |' in rows[0]
    # box F 0.847 and 0.800: the spread line
    assert 'box F 0.800-0.847 (spread 0.047)' in table
    readme = tmp_path / 'README.md'
    readme.write_text(f'head\n{demo_figures.BEGIN}\nold, typed by hand\n{demo_figures.END}\ntail\n')
    args = ['--records', str(records), '--readme', str(readme)]
    assert demo_figures.main(args + ['--check']) == 1
    assert demo_figures.main(args) == 0
    text = readme.read_text()
    assert 'typed by hand' not in text and text.startswith('head\n') and text.endswith('tail\n')
    assert demo_figures.main(args + ['--check']) == 0
    reused = dict(_record(seed=2), model_reused=True)
    (records / 'c.json').write_text(json.dumps(reused))
    assert '(model reused)' in demo_figures.render(demo_figures.load_records(str(records)))
    (records / 'd.json').write_text(json.dumps(dict(_record(seed=3), quick=True)))
    with pytest.raises(ValueError, match='d.json.*quick'):
        demo_figures.load_records(str(records))
    (records / 'd.json').unlink()
    broken = _record()
    del broken['results']['polygon']['recall']
    (records / 'e.json').write_text(json.dumps(broken))
    with pytest.raises(ValueError, match='e.json.*results.polygon.recall'):
        demo_figures.load_records(str(records))


def test_readme_demo_table_matches_the_recorded_runs(monkeypatch):
    """The README's table is what tools.demo_figures renders from docs/demo_runs: nobody types its numbers."""
    monkeypatch.chdir(REPO_ROOT)
    from tools import demo_figures
    assert demo_figures.main(['--check']) == 0


def test_figures_file_names_machine_precision_and_seed(tmp_path):
    import json
    record = _record(isa='AVX512', precision='bf16', seed=2)
    main_demo.write_figures(str(tmp_path / 'out' / 'figures.json'), record, str(tmp_path / 'runs'))
    kept = tmp_path / 'runs' / '202612061600_amd-epyc_avx512_bf16_seed2.json'
    assert json.loads(kept.read_text()) == record
    assert json.loads((tmp_path / 'out' / 'figures.json').read_text()) == record
    assert not list((tmp_path / 'runs').glob('*.tmp'))


def test_records_of_another_experiment_get_their_own_rows_spread_and_file_name(tmp_path):
    """Runs of the 2-core budget recipe (--experiment) are told apart from the demo's and never pooled into its
    spread; their record files say which experiment they trained."""
    from tools import demo_figures
    budget = 'experiments/seg_detector/synthetic_resnet18_deform_thre_budget.yaml'
    records = tmp_path / 'runs'
    main_demo.write_figures(str(tmp_path / 'a' / 'figures.json'), _record(seed=0), str(records))
    main_demo.write_figures(str(tmp_path / 'b' / 'figures.json'),
                            dict(_record(seed=0, box=(0.8, 0.8)), experiment=budget), str(records))
    names = sorted(path.name for path in records.iterdir())
    assert names == ['202612061600_amd-epyc_avx2_fp32_seed0.json',
                     '202612061600_amd-epyc_avx2_resnet18_deform_thre_budget_fp32_seed0.json']
    table = demo_figures.render(demo_figures.load_records(str(records)))
    budget_rows = [line for line in table.splitlines()
                   if line.startswith('| synthetic_resnet18_deform_thre_budget.yaml | AMD')]
    assert len(budget_rows) == 1 and '**0.800**' in budget_rows[0]
    # one spread line per experiment: 0.847 and 0.800 each alone, spread 0
    assert 'synthetic_resnet18_deform_thre.yaml on AMD EPYC, 2 CPUs, AVX2, fp32: 1 run(s), box F 0.847-0.847' in table
    assert 'synthetic_resnet18_deform_thre_budget.yaml on AMD EPYC, 2 CPUs, AVX2, fp32: 1 run(s), box F 0.800-0.800' \
        in table


def test_experiment_suffix_and_the_evaluation_size_the_pictures_use(monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    assert main_demo.experiment_suffix(main_demo.EXPERIMENT) == ''
    assert main_demo.experiment_suffix('./' + main_demo.EXPERIMENT) == ''
    assert main_demo.experiment_suffix('experiments/x/other.yaml') == '_other'
    # the demo evaluates at height 384, the budget recipe at 288 (their files' validate_data), an override wins
    assert main_demo.evaluation_short_side(main_demo.build_evaluation(main_demo.EXPERIMENT, [])) == 384
    budget = 'experiments/seg_detector/synthetic_resnet18_deform_thre_budget.yaml'
    assert main_demo.evaluation_short_side(main_demo.build_evaluation(budget, [])) == 288
    opt = 'evaluation.data_loaders.synthetic.dataset.processes.0.augmenter_args=[[Resize, {width: 320, height: 320}]]'
    assert main_demo.evaluation_short_side(main_demo.build_evaluation(budget, [opt])) == 320
    with pytest.raises(SystemExit):
        main_demo.main(['--experiment', 'experiments/no_such_file.yaml'])
    assert '--experiment experiments/no_such_file.yaml: no such file' in capsys.readouterr().err
