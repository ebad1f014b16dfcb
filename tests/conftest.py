"""Test set-up shared by every test module: the repository root on sys.path, fixed thread count."""
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tmp_dirs import module_tmp  # noqa: E402,F401  (a fixture: importing it here registers it for every module)
