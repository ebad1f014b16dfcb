"""The Polygon library (Polygon3: what the official ICDAR 2015 script imports as ``plg``) as a test oracle, run in a
child process.

Polygon3 3.0.9 on Python 3.11 has a reference-count bug on ``True`` / ``False`` (the interpreter aborts with
"bool_dealloc" at exit, and could abort mid-run after enough calls), and GPC crashes on a few degenerate pairs. So the
tests never import it: they send their polygon pairs here and read the areas back, and a crash costs one clear
test failure, never the test run.

Run as a script, it reads ``[[p, q], ...]`` (point lists) as JSON on stdin and writes ``[[area(p), area(q),
area(p & q)], ...]`` on stdout, as the official script computes them (``area()``; ``p & q`` and 0 when it is empty).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import List, Sequence, Tuple

import numpy as np


def polygon_library_areas(pairs: Sequence[Tuple[object, object]]) -> List[List[float]]:
    """Per pair of (N, 2) point arrays: ``[area(p), area(q), area(p & q)]`` computed by Polygon3."""
    payload = json.dumps([[np.asarray(p).tolist(), np.asarray(q).tolist()] for p, q in pairs])
    done = subprocess.run([sys.executable, os.path.abspath(__file__)], input=payload, capture_output=True, text=True,
                          timeout=300)
    if not done.stdout.strip():
        raise RuntimeError(f'the Polygon3 oracle gave no result (exit status {done.returncode}): {done.stderr[-2000:]}')
    areas = json.loads(done.stdout)
    if len(areas) != len(pairs):
        raise RuntimeError(f'the Polygon3 oracle answered {len(areas)} of {len(pairs)} pairs')
    return areas


def _main() -> None:
    import Polygon  # Polygon3 (requirement-dev.txt)
    results = []
    for first, second in json.loads(sys.stdin.read()):
        p, q = Polygon.Polygon(first), Polygon.Polygon(second)
        both = p & q
        results.append([p.area(), q.area(), 0.0 if len(both) == 0 else both.area()])
    sys.stdout.write(json.dumps(results))
    sys.stdout.flush()
    os._exit(0)  # skip the interpreter's finalisation, where Polygon3's reference-count bug aborts


if __name__ == '__main__':
    _main()
