"""concern.files.atomic_write: whole or nothing, the mode of a new file or of the file replaced."""
import os
import stat

import pytest

from concern.files import atomic_write


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_gets_the_umask_mode_and_content(tmp_path):
    old = os.umask(0o022)
    try:
        path = str(tmp_path / 'list.txt')
        atomic_write(path, 'a\nb\n')
        assert open(path).read() == 'a\nb\n' and _mode(path) == 0o644  # not mkstemp's 0o600
        atomic_write(path, b'\x00\xff')
        assert open(path, 'rb').read() == b'\x00\xff'
    finally:
        os.umask(old)


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = str(tmp_path / 'model.onnx')
    with open(path, 'w') as stream:
        stream.write('old')
    os.chmod(path, 0o640)
    atomic_write(path, lambda stream: stream.write(b'new'))
    assert open(path).read() == 'new' and _mode(path) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = str(tmp_path / 'metrics.jsonl')
    with open(path, 'w') as stream:
        stream.write('kept')

    def fail(stream):
        stream.write(b'partial')
        raise OSError('disk full')
    with pytest.raises(OSError, match='disk full'):
        atomic_write(path, fail)
    assert open(path).read() == 'kept'
    assert os.listdir(tmp_path) == ['metrics.jsonl']


def test_ends_torn(tmp_path):
    from concern.files import ends_torn
    path = tmp_path / 'log.jsonl'
    assert not ends_torn(str(path))  # missing
    path.write_bytes(b'')
    assert not ends_torn(str(path))  # empty
    path.write_bytes(b'{"a": 1}\n')
    assert not ends_torn(str(path))
    path.write_bytes(b'{"a": 1}\n{"b": ')
    assert ends_torn(str(path))
