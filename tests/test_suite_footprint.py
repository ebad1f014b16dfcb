"""The suite's scratch files go as soon as they are no longer needed (pytest.ini, tests/tmp_dirs.py).

A CI run once died with ``No space left on device`` after 4 minutes: the passing tests' folders
(checkpoints, ONNX exports) stayed on disk until the session ended, 3.4 GB per run, and pytest kept
the last three runs. These tests run small child sessions under the project's own pytest.ini and check,
from a later module of the same session, that a passing test's ``tmp_path`` and a finished module's
``module_tmp`` folder are gone, that a module's folder lives until its last test, that a failing test's
folders are kept for inspection, and that only the last session's failures are kept.
"""
import json
import os
import subprocess
import sys
import textwrap

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

RECORD = '''
import json, os

def remember(key, path):
    record = os.environ['FOOTPRINT_RECORD']
    seen = json.load(open(record)) if os.path.exists(record) else {}
    seen[key] = str(path)
    json.dump(seen, open(record, 'w'))
'''

PASSING = RECORD + '''
import pytest

@pytest.fixture(scope='module')
def shared(module_tmp):
    folder = module_tmp('shared')
    (folder / 'weights.bin').write_bytes(b'0' * 4096)
    remember('module', folder)
    return folder

def test_passes(tmp_path, shared):
    (tmp_path / 'checkpoint.bin').write_bytes(b'0' * 4096)
    remember('passed', tmp_path)

def test_the_module_folder_lives_until_the_last_test(shared):
    assert (shared / 'weights.bin').read_bytes() == b'0' * 4096
'''

FAILING = RECORD + '''
def test_fails(tmp_path, module_tmp):
    (tmp_path / 'evidence.txt').write_text('kept')
    remember('failed', tmp_path)
    remember('failed module', module_tmp('kept'))
    assert False, 'this failure is expected'
'''

CHECK = '''
import json, os

def test_earlier_folders_are_gone_or_kept():
    seen = json.load(open(os.environ['FOOTPRINT_RECORD']))
    assert not os.path.exists(seen['passed']), 'a passing test left its tmp_path'
    assert not os.path.exists(seen['module']), 'a finished module left its module_tmp folder'
    assert os.path.exists(seen['failed']), 'a failing test lost its tmp_path'
    assert os.path.exists(seen['failed module']), 'a module with a failure lost its module_tmp folder'
'''


def _child_session(folder, *options, temproot=None):
    """pytest on the three modules above in ``folder``, with the project's pytest.ini and nothing from outside
    (``temproot``: where pytest makes its numbered base folders, instead of the system's temporary folder)."""
    for name, text in (('test_a_passing.py', PASSING), ('test_b_failing.py', FAILING), ('test_c_check.py', CHECK)):
        (folder / name).write_text(textwrap.dedent(text))
    env = {key: value for key, value in os.environ.items() if not key.startswith('PYTEST_')}
    env.update(FOOTPRINT_RECORD=str(folder / 'record.json'), PYTHONPATH=TESTS, PYTEST_DISABLE_PLUGIN_AUTOLOAD='1')
    if temproot is not None:
        env['PYTEST_DEBUG_TEMPROOT'] = str(temproot)
    done = subprocess.run(
        [sys.executable, '-m', 'pytest', '-c', os.path.join(REPO, 'pytest.ini'), '--rootdir', str(folder),
         '--confcutdir', str(folder), '-p', 'tmp_dirs', '-p', 'no:cacheprovider', '-q', *options,
         str(folder / 'test_a_passing.py'), str(folder / 'test_b_failing.py'), str(folder / 'test_c_check.py')],
        capture_output=True, text=True, cwd=str(folder), env=env, timeout=300)
    return done.stdout + done.stderr


def test_scratch_folders_go_when_their_test_or_module_ends(tmp_path):
    summary = _child_session(tmp_path, '--basetemp', str(tmp_path / 'base'))
    assert '1 failed, 3 passed' in summary, summary
    seen = json.loads((tmp_path / 'record.json').read_text())
    assert os.path.exists(seen['failed']) and os.path.exists(seen['failed module'])


def test_only_the_last_sessions_failures_are_kept(tmp_path):
    root = tmp_path / 'root'
    root.mkdir()
    for _ in range(3):   # three failing sessions, each keeping its base folder pytest-<n>
        summary = _child_session(tmp_path, temproot=root)
        assert '1 failed, 3 passed' in summary, summary
    (user_folder,) = list(root.iterdir())
    kept = sorted(path.name for path in user_folder.iterdir() if not path.is_symlink())
    assert kept == ['pytest-2'], kept
