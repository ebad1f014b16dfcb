"""`make demo`'s pipeline at a reduced size: data, training, evaluation and pictures (slow)."""
import os
import shutil
import subprocess
import sys
import time

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
    assert main_demo.training_stamp(args + ['--epochs', '7'])['experiment_sha256'] == stamp['experiment_sha256']


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



DEFAULT_LABEL = os.path.basename(main_demo.EXPERIMENT)  # a record without 'experiment' is the demo's


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
    rows = [line for line in table.splitlines() if line.startswith(f'| {DEFAULT_LABEL} | AMD')]
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
    # the op's stage (its check and build) is part of the set-up column and of the total: 120 + 30 s = 2.5 min,
    # 16.8 + 0.5 = 17.3 min
    (records / 'b.json').write_text(json.dumps(dict(_record(seed=1, box=(0.8, 0.8)), stages_seconds=dict(
        _record()['stages_seconds'], op=30.0))))
    row = [line for line in demo_figures.render(demo_figures.load_records(str(records))).splitlines()
           if line.startswith(f'| {DEFAULT_LABEL} | AMD') and '| 1 |' in line][0]
    assert '| 2.5 |' in row and '| 17.3 |' in row
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
    assert f'{DEFAULT_LABEL} on AMD EPYC, 2 CPUs, AVX2, fp32: 1 run(s), box F 0.847-0.847' in table
    assert 'synthetic_resnet18_deform_thre_budget.yaml on AMD EPYC, 2 CPUs, AVX2, fp32: 1 run(s), box F 0.800-0.800' \
        in table


def test_runs_of_a_changed_experiment_file_are_not_pooled_with_those_before_the_change(tmp_path):
    """The same file name at two versions (its compiled settings' SHA-256 differ): two groups, two spreads."""
    import json
    from tools import demo_figures
    records = tmp_path / 'runs'
    records.mkdir()
    before, after = 'a' * 64, 'b' * 64
    for name, seed, version, box in (('1', 0, before, (0.8, 0.8)), ('2', 1, before, (0.9, 0.9)),
                                     ('3', 0, after, (0.9, 0.8))):
        (records / f'{name}.json').write_text(json.dumps(dict(_record(seed=seed, box=box), experiment_sha256=version)))
    table = demo_figures.render(demo_figures.load_records(str(records)))
    # before: box F 0.800 and 0.900 (spread 0.100); after: 0.847 alone, never pooled with them
    assert f'{DEFAULT_LABEL} @aaaaaaa on AMD EPYC, 2 CPUs, AVX2, fp32: 2 run(s), ' \
           'box F 0.800-0.900 (spread 0.100)' in table
    assert f'{DEFAULT_LABEL} @bbbbbbb on AMD EPYC, 2 CPUs, AVX2, fp32: 1 run(s), ' \
           'box F 0.847-0.847 (spread 0.000)' in table
    assert 'together' not in table  # one machine and precision per version: no pooled line
    # a bf16 run of the second version on another machine: its own row, and a line pooling the version's two
    (records / '4.json').write_text(json.dumps(dict(_record(isa='AVX512', precision='bf16', seed=1, box=(0.8, 0.8)),
                                                    experiment_sha256=after)))
    table = demo_figures.render(demo_figures.load_records(str(records)))
    assert f'{DEFAULT_LABEL} @bbbbbbb, all 2 runs of its 2 machine and precision rows ' \
           'together: box F 0.800-0.847 (spread 0.047)' in table
    assert '@aaaaaaa, all' not in table


def test_runs_measured_on_another_test_split_are_not_pooled(tmp_path):
    """One experiment version measured on 100 test images (records without the field) and on 300: two groups and
    two spreads, never one."""
    import json
    from tools import demo_figures
    records = tmp_path / 'runs'
    records.mkdir()
    version = 'c' * 64
    (records / '1.json').write_text(json.dumps(dict(_record(seed=0, box=(0.8, 0.8)), experiment_sha256=version)))
    (records / '2.json').write_text(json.dumps(dict(_record(seed=1, box=(0.9, 0.9)), experiment_sha256=version,
                                                    test_images=300)))
    (records / '3.json').write_text(json.dumps(dict(_record(seed=2, box=(0.9, 0.8)), experiment_sha256=version,
                                                    test_images=300)))
    table = demo_figures.render(demo_figures.load_records(str(records)))
    # 0.800 alone on 100 images; 0.900 and 0.847 (2*0.72/1.7) on 300
    assert f'{DEFAULT_LABEL} @ccccccc on AMD EPYC, 2 CPUs, AVX2, fp32: 1 run(s), box F 0.800-0.800' in table
    assert f'{DEFAULT_LABEL} @ccccccc, 300 test images on AMD EPYC, 2 CPUs, AVX2, fp32: 2 run(s), ' \
           'box F 0.847-0.900 (spread 0.053)' in table
    assert len([line for line in table.splitlines() if line.startswith(f'| {DEFAULT_LABEL} @ccccccc, 300 test')]) == 2


BUDGET = 'experiments/seg_detector/synthetic_resnet18_deform_thre_budget.yaml'


def _evaluation_list(tmp_path):
    """A data directory with a one-line test list: building an evaluation loader reads the list, not the images."""
    (tmp_path / 'data').mkdir(exist_ok=True)
    (tmp_path / 'data' / 'test_list.txt').write_text('img_1.jpg\n')
    return str(tmp_path / 'data'), [f'evaluation.data_loaders.synthetic.dataset.data_dir=[{tmp_path}/data]',
                                    f'evaluation.data_loaders.synthetic.dataset.data_list=[{tmp_path}/data/test_list.txt]']


def test_experiment_suffix_path_spellings_and_the_evaluation_size_the_pictures_use(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    assert main_demo.experiment_suffix(main_demo.EXPERIMENT) == ''
    assert main_demo.experiment_suffix('./' + main_demo.EXPERIMENT) == ''
    assert main_demo.experiment_suffix('experiments/x/other.yaml') == '_other'
    for spelling in ('./' + BUDGET, os.path.join(REPO_ROOT, BUDGET), 'experiments/../' + BUDGET):
        assert main_demo.normalise_experiment_path(spelling) == BUDGET
    outside = str(tmp_path / 'x.yaml')
    assert main_demo.normalise_experiment_path(outside) == outside
    # the paper's demo model evaluates at height 384, the budget recipes at 320 (the demo's) and 288 (the deformable
    # one's): their files' validate_data; an override wins
    _, opts = _evaluation_list(tmp_path)
    assert main_demo.evaluation_short_side(main_demo.build_evaluation(main_demo.PAPER_EXPERIMENT, opts)) == 384
    assert main_demo.evaluation_short_side(main_demo.build_evaluation(main_demo.EXPERIMENT, opts)) == 320
    assert main_demo.evaluation_short_side(main_demo.build_evaluation(BUDGET, opts, ('evaluation',))) == 288
    resize = 'evaluation.data_loaders.synthetic.dataset.processes.0.augmenter_args'
    assert main_demo.evaluation_short_side(main_demo.build_evaluation(
        BUDGET, opts + [f'{resize}=[[Resize, {{width: 320, height: 320}}]]'], ('evaluation',))) == 320
    # a fixed size (keep_ratio off): its smaller side
    assert main_demo.evaluation_short_side(main_demo.build_evaluation(
        BUDGET, opts + [f'{resize}=[[Resize, {{width: 640, height: 352}}]]',
                        'evaluation.data_loaders.synthetic.dataset.processes.0.keep_ratio=false'],
        ('evaluation',))) == 352
    with pytest.raises(SystemExit):
        main_demo.main(['--experiment', 'experiments/no_such_file.yaml'])
    assert '--experiment experiments/no_such_file.yaml: no such file' in capsys.readouterr().err


def test_main_hands_the_experiment_to_every_stage(tmp_path, monkeypatch):
    """--experiment reaches training (run name, stamp), evaluation, the pictures (at its evaluation size, no README
    picture) and the record, and a deformable model has the op built first, its seconds counted as set-up; the
    stages themselves are replaced by recorders."""
    monkeypatch.chdir(REPO_ROOT)
    data_dir, _ = _evaluation_list(tmp_path)
    calls = {}

    def ensure_op():
        calls['op'] = True
        time.sleep(5.0)
        return 5.0
    monkeypatch.setattr(main_demo, 'ensure_op', ensure_op)
    monkeypatch.setattr(main_demo, 'ensure_dataset', lambda *args, **kwargs: True)
    monkeypatch.setattr(main_demo, 'precision_flags', lambda precision='auto': [])

    def ensure_model(name, train_args, stamp, run_args=()):
        calls['train'] = (name, list(train_args), stamp)
        return 'final.ckpt', True
    monkeypatch.setattr(main_demo, 'ensure_model', ensure_model)
    results = {mode: {'precision': 0.5, 'recall': 0.5, 'fmeasure': 0.5, 'images': 7} for mode in ('box', 'polygon')}

    def evaluate(checkpoint, opts, threads='auto', experiment_path=main_demo.EXPERIMENT):
        calls['evaluate'] = (checkpoint, experiment_path)
        return results
    monkeypatch.setattr(main_demo, 'evaluate', evaluate)

    def draw(checkpoint, data_dir, result_dir, count, opts, readme_picture, threads='auto',
             experiment_path=main_demo.EXPERIMENT, short_side=384):
        calls['draw'] = (checkpoint, readme_picture, experiment_path, short_side)
    monkeypatch.setattr(main_demo, 'draw', draw)
    monkeypatch.setattr(main_demo, 'write_figures', lambda path, figures, record: calls.update(figures=figures))
    assert main_demo.main(['--experiment', './' + BUDGET, '--seed', '1', '--data_dir', data_dir,
                           '--result_dir', str(tmp_path / 'results')]) == 0
    name, train_args, stamp = calls['train']
    assert name == 'synthetic_demo_resnet18_deform_thre_budget_seed1' and train_args[0] == BUDGET
    assert stamp == main_demo.training_stamp(train_args)
    assert calls['evaluate'] == ('final.ckpt', BUDGET)
    assert calls['draw'] == ('final.ckpt', None, BUDGET, 288)
    assert calls['figures']['experiment'] == BUDGET and calls['figures']['results'] == results
    assert calls['figures']['test_images'] == 7  # the split measured, as evaluate counted it
    # the op's stage: the check and the build (here the 5 s the stand-in waited); no make, no set-up figure
    stages = calls['figures']['stages_seconds']
    assert calls['op'] and stages['op'] >= 5.0 and stages['setup'] is None
    calls.clear()
    assert main_demo.main(['--data_dir', data_dir, '--result_dir', str(tmp_path / 'results'),
                           '--setup_seconds', '60']) == 0
    assert calls['train'][0] == 'synthetic_demo' and calls['train'][1][0] == main_demo.EXPERIMENT
    assert calls['draw'] == ('final.ckpt', main_demo.README_PICTURE, main_demo.EXPERIMENT, 320)
    # the default model has no deformable convolution: no build, only the check's seconds; make's set-up as given
    stages = calls['figures']['stages_seconds']
    assert 'op' not in calls and stages['setup'] == 60.0 and stages['op'] >= 0.0


def test_evaluate_reports_how_many_images_it_measured(tmp_path):
    """The record's test_images comes from evaluate's own count: three images of a small split, both modes."""
    from inference_helpers import small_evaluation
    experiment, checkpoint, _ = small_evaluation(str(tmp_path), test=3)
    results = main_demo.evaluate(checkpoint, [], threads='1', experiment_path=experiment)
    assert results['box']['images'] == results['polygon']['images'] == 3


def test_whether_the_op_is_needed_is_decided_without_importing_it_here(tmp_path):
    """needs_deformable_op asks a child process, so that the process that will train has not yet looked for the
    compiled extension (assets/ops/dcn looks once per process) when the demo builds it; an experiment the child
    cannot build gives None and a message, not a crash."""
    bad = tmp_path / 'bad.yaml'
    bad.write_text('import: [no/such/file.yaml]\n')
    code = ('import sys\nfrom tools import main_demo\n'
            f'print(main_demo.needs_deformable_op({main_demo.PAPER_EXPERIMENT!r}), '
            f'main_demo.needs_deformable_op({main_demo.EXPERIMENT!r}), main_demo.needs_deformable_op({str(bad)!r}))\n'
            "print(sorted(name for name in sys.modules if name.startswith(('assets.ops.dcn', 'backbones'))))")
    child = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    lines = child.stdout.strip().splitlines()
    assert lines[-2] == 'True False None' and lines[-1] == '[]', child.stdout
    assert f'could not tell whether {bad} needs the deformable convolution op' in child.stdout


def test_only_a_model_with_deformable_convolutions_needs_the_op(monkeypatch):
    """The demo builds the op for the paper's deformable ResNet-18 (both its files) and not for the default's plain
    one: the modules of the models the files describe decide, not the file names."""
    monkeypatch.chdir(REPO_ROOT)

    def needs(path, *opts):
        return main_demo.uses_deformable_op(main_demo.build_evaluation(path, list(opts), ('structure',)))
    assert not needs(main_demo.EXPERIMENT)
    assert needs(main_demo.PAPER_EXPERIMENT) and needs(BUDGET)
    # the same file with the backbone switched by an override follows the override
    assert needs(main_demo.EXPERIMENT, 'structure.builder.model_args.backbone=deformable_resnet18')
    assert not needs(main_demo.PAPER_EXPERIMENT, 'structure.builder.model_args.backbone=resnet18')


PLAIN_BUDGET = 'experiments/seg_detector/synthetic_resnet18_thre_budget.yaml'


def test_the_plain_budget_experiment_is_the_cheaper_model_its_comment_describes(tmp_path, monkeypatch):
    """synthetic_resnet18_thre_budget.yaml: the deformable budget file's training recipe (crops, rate, schedule,
    prior) with six changes only: backbone, FPN width, epochs, the BatchNorm statistics of the final weights
    (train.precise_bn), the loader's samples made in the training process (num_workers 0, the same batches) and
    Adam's fused implementation (the same update to rounding); two
    in evaluation, the test images at 320 instead of 288 and the post-processing of a short training (binary map at
    0.15; box mode: unclip ratio 0.7, box_thresh 0.35, scored over the contour; polygon mode: unclip ratio 1.8,
    box_thresh 0.35); its model has no deformable convolution and projects each of the four levels to 128 / 4
    channels."""
    import re
    import torch
    from assets.ops.dcn.modules import DeformConv, ModulatedDeformConv
    from tools.cli import load_config
    from training.checkpoint import config_differences  # the dotted keys whose values differ
    monkeypatch.chdir(REPO_ROOT)
    assert sorted(config_differences(load_config(BUDGET).tree, load_config(PLAIN_BUDGET).tree)) == [
        'evaluation.data_loaders.synthetic.dataset.processes.0.augmenter_args.0.1.height',
        'evaluation.data_loaders.synthetic.dataset.processes.0.augmenter_args.0.1.width',
        'structure.builder.model_args.backbone', 'structure.builder.model_args.decoder_args.inner_channels',
        'structure.representer.box_thresh', 'structure.representer.polygon_box_thresh',
        'structure.representer.polygon_unclip_ratio', 'structure.representer.score_mode',
        'structure.representer.thresh', 'structure.representer.unclip_ratio', 'train.data_loader.num_workers',
        'train.epochs', 'train.precise_bn', 'train.scheduler.optimizer_args.fused',
        'validation.data_loaders.synthetic.dataset.processes.0.augmenter_args.0.1.height',
        'validation.data_loaders.synthetic.dataset.processes.0.augmenter_args.0.1.width']
    tree = load_config(PLAIN_BUDGET).tree
    assert tree['structure']['builder']['model_args']['backbone'] == 'resnet18'
    assert (tree['train']['epochs'], tree['train']['data_loader']['batch_size']) == (7, 4)
    assert tree['train']['precise_bn'] == {'class': 'PreciseBatchNorm', 'batches': 100}
    from training.optimizer_scheduler import OptimizerScheduler  # built from the file's keys (no data set needed)
    settings = tree['train']['scheduler']
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer = OptimizerScheduler(settings['optimizer'], settings['optimizer_args']).create_optimizer([parameter])
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]['fused'] is True
    parameter.grad = torch.ones(3)
    optimizer.step()  # torch checks that the fused kernel supports the parameters at the first step
    assert torch.allclose(parameter.detach(), torch.full((3,), -0.001))  # Adam's first step: -lr x sign(grad)
    _, opts = _evaluation_list(tmp_path)
    experiment = main_demo.build_evaluation(PLAIN_BUDGET, opts, ('structure', 'evaluation'))
    assert main_demo.evaluation_short_side(experiment) == 320
    representer = experiment.structure.representer
    assert (representer.box_thresh_for(False), representer.box_thresh_for(True)) == (0.35, 0.35)
    assert (representer.thresh, representer.unclip_ratio, representer.polygon_unclip_ratio) == (0.15, 0.7, 1.8)
    assert representer.score_mode == 'slow'
    model = experiment.structure.builder.build()
    assert not any(isinstance(m, (DeformConv, ModulatedDeformConv)) for m in model.modules())
    out_convs = [m for name, m in model.named_modules() if re.search(r'out[2-5](\.0)?$', name)
                 and isinstance(m, torch.nn.Conv2d)]
    assert len(out_convs) == 4 and all((m.in_channels, m.out_channels) == (128, 32) for m in out_convs)
    # the deformable budget file, for contrast: its layer2-4 blocks carry the deformable convolution
    deformable = main_demo.build_evaluation(BUDGET, opts, ('structure',)).structure.builder.build()
    assert sum(isinstance(m, (DeformConv, ModulatedDeformConv)) for m in deformable.modules()) == 6
