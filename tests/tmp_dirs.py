"""Scratch folders for module-scoped fixtures that are removed when their module ends.

pytest keeps ``tmp_path_factory`` folders until the whole session ends (and, by
default, the last three sessions' folders after that). Several modules build
ResNet checkpoints and ONNX files of 50-400 MB there, so a full run used to
leave about 3.4 GB behind and needed it all at once; on a machine with little
free disk the suite then failed with ``No space left on device``. With
``tmp_path_retention_policy = failed`` (pytest.ini) a passing test's
``tmp_path`` goes as soon as the test ends; this fixture does the same for the
module-scoped ones, so the suite needs at most what one module writes.
"""
import shutil
from pathlib import Path
from typing import Callable, Iterator

import pytest


@pytest.fixture(scope='module')
def module_tmp(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """``module_tmp(name)`` makes a fresh folder that is deleted after the module's last test, unless a test
    failed meanwhile (then it is kept for inspection, like a failing test's ``tmp_path``)."""
    made: list[Path] = []
    failed_before = request.session.testsfailed

    def make(name: str) -> Path:
        folder = tmp_path_factory.mktemp(name)
        made.append(folder)
        return folder

    yield make
    if request.session.testsfailed == failed_before:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
