"""The suite's scratch files go as soon as they are no longer needed (pytest.ini, tests/tmp_dirs.py).

A CI run once died with ``No space left on device`` after 4 minutes: the passing tests' folders
(checkpoints, ONNX exports) stayed on disk until the session ended, 3.4 GB per run, and pytest kept
the last three runs. This runs a small child session under the project's own pytest.ini and checks,
from a later module of the same session, that a passing test's ``tmp_path`` and a finished module's
``module_tmp`` folder are gone, and that a failing test's folder is kept for inspection.
"""
import json
import os
import subprocess
import sys
import textwrap

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

FIRST = '''
import json, os
import pytest

RECORD = os.environ['FOOTPRINT_RECORD']

def remember(key, path):
    seen = json.load(open(RECORD)) if os.path.exists(RECORD) else {}
    seen[key] = str(path)
    json.dump(seen, open(RECORD, 'w'))

@pytest.fixture(scope='module')
def shared(module_tmp):
    folder = module_tmp('shared')
    (folder / 'weights.bin').write_bytes(b'0' * 4096)
    remember('module', folder)
    return folder

def test_passes(tmp_path, shared):
    (tmp_path / 'checkpoint.bin').write_bytes(b'0' * 4096)
    remember('passed', tmp_path)

def test_fails(tmp_path):
    (tmp_path / 'evidence.txt').write_text('kept')
    remember('failed', tmp_path)
    assert False, 'this failure is expected'
'''

SECOND = '''
import json, os

def test_earlier_folders_are_gone():
    seen = json.load(open(os.environ['FOOTPRINT_RECORD']))
    assert not os.path.exists(seen['passed']), 'a passing test left its tmp_path'
    assert not os.path.exists(seen['module']), 'a finished module left its module_tmp folder'
    assert os.path.exists(seen['failed']), 'a failing test lost its tmp_path'
'''


def test_scratch_folders_go_when_their_test_or_module_ends(tmp_path):
    (tmp_path / 'test_a_first.py').write_text(textwrap.dedent(FIRST))
    (tmp_path / 'test_b_second.py').write_text(textwrap.dedent(SECOND))
    record = tmp_path / 'record.json'
    env = dict(os.environ, FOOTPRINT_RECORD=str(record), PYTHONPATH=TESTS)
    done = subprocess.run(
        [sys.executable, '-m', 'pytest', '-c', os.path.join(REPO, 'pytest.ini'), '--rootdir', str(tmp_path),
         '-p', 'tmp_dirs', '-p', 'no:cacheprovider', '--basetemp', str(tmp_path / 'base'), '-q',
         str(tmp_path / 'test_a_first.py'), str(tmp_path / 'test_b_second.py')],
        capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=300)
    summary = done.stdout + done.stderr
    assert '1 failed, 2 passed' in summary, summary
    seen = json.loads(record.read_text())
    assert os.path.exists(seen['failed'])
