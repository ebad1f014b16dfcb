"""tools/gpu_check.py: its CPU dry run (the stages that need no GPU) passes here, and reports every stage."""
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dry_run_reports_every_stage_and_trains(tmp_path):
    out = tmp_path / 'out'
    done = subprocess.run([sys.executable, 'tools/gpu_check.py', '--cpu', '--out', str(out)], cwd=REPO_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    report = (out / 'report.md').read_text()
    rows = {line.split('|')[1].strip(): line.split('|')[2].strip() for line in report.splitlines()
            if line.startswith('| ') and not line.startswith('| stage')}
    assert rows == {'environment': 'ok', 'wheels': 'ok', 'build': 'ok', 'cuda tests': 'ok', 'training': 'ok',
                    'benchmarks': 'skipped'}
    assert 'need a GPU' in report                                          # nothing skipped silently
    assert 'fp32: ok: loss' in report and 'torchrun -d (Gloo): ok: loss' in report and 'weights finite' in report
    collected = int(report.split('| cuda tests | ok |')[1].split('|')[1].split()[0])
    assert collected >= 20                                                 # the CUDA tests exist and collect
    logs = sorted(os.listdir(out))
    assert len([name for name in logs if name != 'work']) <= 8            # what the device tool brings back
    assert 'training.log' in logs and 'report.md' in logs
    # a passing run leaves no training run behind in the repository's workspace (it used to leave 300 MB)
    workspace = os.path.join(REPO_ROOT, 'workspace')
    assert not [name for name in (os.listdir(workspace) if os.path.isdir(workspace) else [])
                if name.startswith('gpu_check_')]
