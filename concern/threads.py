"""How many threads torch computes with: a fixed count, or one chosen from measured step times.

Why: torch's CPU kernels split each operation over its OpenMP team and wait at the end for the slowest thread.
When another process holds one of the cores, every operation waits for a thread that is not running, and a
training step on two cores went from about 1.1 s to 20-30 s (issue 24). One thread fewer than the cores that are
actually free is then many times faster than the full team. Which count is fastest depends on what else runs on
the machine, and that changes during a run, so ``ThreadGovernor`` measures it: it times the steps at the current
count, tries one thread fewer when the steps slow down (and once after warm-up), and goes back up when a probe
at the larger count is faster again.

The knob: ``--threads auto|N`` of train.py, eval.py, demo.py and tools.main_demo (default ``auto``: governed,
at most the largest count torch had when a governor was made in this process, by default the machine's physical
cores), ``N`` a whole number
(fixed, no governor: what a timing or a bit-for-bit comparison wants). In the Python API (``RunOptions.threads``,
``TextDetector(threads=...)``, ``TorchRunner(threads=...)``) the default None leaves torch's count alone. A
training run puts the count back as it found it when it ends. The governor changes only
``torch.set_num_threads``; a count does not change what a step computes, only how long it takes (though a
reduction split differently may round differently in the last bit: a bit-for-bit comparison fixes the count).
"""
from __future__ import annotations

import statistics
from typing import Callable, Dict, List, Optional, Tuple, Union

ThreadSpec = Union[int, str, None]


def parse_threads(value: ThreadSpec) -> Optional[int]:
    """``'auto'`` -> None (governed); a whole number >= 1 (int, NumPy integer or decimal string) -> that count.
    (None is accepted as well and also gives None: callers that let None mean "leave torch alone" test it first.)

    Raises ``ValueError`` naming the value for anything else (0, negatives, '2.5', 'many')."""
    if value is None or value == 'auto':
        return None
    if isinstance(value, bool):
        raise ValueError(f"threads: expected 'auto' or a whole number >= 1, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdecimal()):
            raise ValueError(f"threads: expected 'auto' or a whole number >= 1, got {value!r}")
        value = int(text)
    if hasattr(value, '__index__') and not isinstance(value, int):
        value = value.__index__()  # NumPy integers
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"threads: expected 'auto' or a whole number >= 1, got {value!r}")
    return value


class ThreadGovernor:
    """Picks torch's intra-op thread count from the measured time of repeated, similar steps.

    Call ``observe(seconds, work)`` after each step (``work``: a size measure, 1 for equal steps; the unit of the
    times compared is seconds per unit of work). Steps are judged in consecutive, non-overlapping windows of
    ``window`` steps by their median, against a reference time per thread count:

    - after ``warmup`` steps, the first window at ``max_threads`` sets its reference and starts a descent: one
      window at one thread fewer, and again while each count is faster than the one above; the fastest is kept (on
      an idle machine the full count, after one window at one thread fewer; with busy cores, about the free ones);
    - at the kept count, a window faster than ``slow_factor`` times the reference moves the reference a fifth of the
      way towards it; two windows in a row slower than that start a descent again (another process has taken a
      core); when fewer threads are not faster, the current speed becomes the new reference (the work itself grew,
      or the whole machine slowed);
    - below ``max_threads``, after ``recheck`` steps at a count, one step runs at one thread more; if it is faster
      than the last window's median by the margin 1 / 1.05, the next window is run there too and the larger count
      is kept only if that window is faster as well (one lucky step does not move it); otherwise the count goes back
      and ``recheck`` doubles (up to ``max_recheck``), so that a machine that stays busy costs few slow probes.

    ``set_threads`` is the action (``torch.set_num_threads`` by default; tests pass a recorder). ``on_change``
    (optional) is called with a one-line reason when a descent ends, a probe's count is kept or given up after
    verification. ``threads`` is the count in force for the next step (a probe's included). Counts stay within
    ``min_threads`` .. ``max_threads``. Not thread-safe: one governor per stream of steps.
    Cost on an idle 2-core machine: one window at one thread (about ``window`` x 0.9 extra step times, once).
    """

    def __init__(self, max_threads: int, min_threads: int = 1, window: int = 3, warmup: int = 2,
                 slow_factor: float = 1.6, recheck: int = 50, max_recheck: int = 800,
                 set_threads: Optional[Callable[[int], None]] = None,
                 on_change: Optional[Callable[[str], None]] = None):
        if max_threads < 1 or min_threads < 1 or min_threads > max_threads:
            raise ValueError(f'threads: need 1 <= min_threads <= max_threads, got {min_threads} and {max_threads}')
        if window < 1 or warmup < 0 or recheck < 1 or max_recheck < recheck or not slow_factor > 1:
            raise ValueError('ThreadGovernor: need window >= 1, warmup >= 0, 1 <= recheck <= max_recheck and '
                             f'slow_factor > 1 (got {window}, {warmup}, {recheck}, {max_recheck}, {slow_factor})')
        self.max_threads, self.min_threads = int(max_threads), int(min_threads)
        self.window, self.warmup, self.slow_factor = int(window), int(warmup), float(slow_factor)
        self.first_recheck, self.recheck, self.max_recheck = int(recheck), int(recheck), int(max_recheck)
        self._set = set_threads if set_threads is not None else _torch_set_threads
        self.on_change = on_change
        self.threads = self.max_threads
        self.reference: Dict[int, float] = {}  # thread count -> its settled median time per unit of work
        self.samples: List[float] = []  # the current window
        self.steps = 0
        self.steps_at_count = 0
        self.changes = 0
        self._warm = 0
        self._slow_windows = 0
        self._descended = False  # the first window at max_threads starts a descent (once)
        self._upper: Tuple[int, float] = (self.max_threads, 0.0)  # during a descent: the count above, its median
        self._probe_from = self.max_threads
        self._before_probe = 0.0
        self._phase = 'warmup' if self.warmup else 'measure'  # 'warmup', 'measure', 'descend', 'probe', 'verify'
        self._set(self.threads)

    def restart(self) -> None:
        """Forget the measured times (the steps change kind, e.g. another input size), keep the count; a probe in
        progress is abandoned. The next ``warmup`` steps are not judged."""
        if self._phase in ('probe', 'verify'):
            self._change(self._probe_from)
        self.samples, self.reference, self._slow_windows, self._warm = [], {}, 0, 0
        self._phase = 'warmup' if self.warmup else 'measure'

    def observe(self, seconds: float, work: float = 1.0) -> int:
        """Records one step; returns the thread count for the next step (already set)."""
        self.steps += 1
        if not (seconds >= 0 and work > 0):  # a clock jump or an empty step: nothing to learn
            return self.threads
        rate = seconds / work
        if self._phase == 'warmup':
            self._warm += 1
            if self._warm >= self.warmup:
                self._phase = 'measure'
            return self.threads
        if self._phase == 'probe':
            return self._finish_probe(rate)
        self.samples.append(rate)
        self.steps_at_count += 1
        if len(self.samples) < self.window:
            return self.threads
        median = statistics.median(self.samples)
        self.samples = []
        if self._phase == 'descend':
            return self._descend(median)
        if self._phase == 'verify':
            return self._verify(median)
        reference = self.reference.get(self.threads)
        if not self._descended:
            self._descended = True
            self.reference[self.threads] = median
            if self.threads > self.min_threads:
                self._start_descent(median)
            return self.threads
        if reference is None:
            self.reference[self.threads] = median
            return self.threads
        if median > self.slow_factor * reference:
            self._slow_windows += 1
            if self._slow_windows >= 2 and self.threads > self.min_threads:
                self._note(f'steps slowed from {reference:.3g} to {median:.3g} s at {self.threads} threads '
                           '(another process may be using a core): trying fewer')
                self._start_descent(median)
                return self.threads
        else:
            self._slow_windows = 0
            self.reference[self.threads] = 0.8 * reference + 0.2 * median
        if self.threads < self.max_threads and self.steps_at_count >= self.recheck:
            self._probe_from, self._before_probe = self.threads, median
            self._phase = 'probe'
            self.threads += 1
            self._set(self.threads)
        return self.threads

    def _start_descent(self, median: float) -> None:
        self._upper = (self.threads, median)
        self._phase = 'descend'
        self._change(self.threads - 1)

    def _descend(self, median: float) -> int:
        upper, upper_median = self._upper
        if median < upper_median:
            self.reference[self.threads] = median
            if self.threads > self.min_threads:
                self._start_descent(median)  # faster with fewer: try fewer still
            else:
                self._settle(f'{self.threads} thread(s) faster than {upper} ({median:.3g} against '
                             f'{upper_median:.3g} s)')
            return self.threads
        # slower with fewer: the count above was right; its current speed is the new reference
        self._change(upper)
        self.reference[upper] = upper_median
        self._settle(f'{upper} threads faster than {upper - 1} ({upper_median:.3g} against {median:.3g} s)')
        return self.threads

    def _finish_probe(self, rate: float) -> int:
        if rate * 1.05 < self._before_probe:  # promising: a full window at the larger count decides
            self._phase = 'verify'
            self.samples, self.steps_at_count, self._slow_windows = [], 0, 0
            self.changes += 1
            return self.threads
        self._phase = 'measure'
        self.threads = self._probe_from
        self._set(self.threads)
        self.recheck = min(2 * self.recheck, self.max_recheck)
        self.steps_at_count = 0
        return self.threads

    def _verify(self, median: float) -> int:
        if median < self._before_probe:
            self.reference[self.threads] = median
            self.recheck = self.first_recheck
            self._settle(f'{self.threads} threads faster again ({median:.3g} against {self._before_probe:.3g} s at '
                         f'{self._probe_from})')
            return self.threads
        self._change(self._probe_from)
        self.reference[self.threads] = self._before_probe
        self.recheck = min(2 * self.recheck, self.max_recheck)
        self._settle(f'{self._probe_from + 1} threads not faster over a window ({median:.3g} against '
                     f'{self._before_probe:.3g} s): staying at {self._probe_from}')
        return self.threads

    def _settle(self, reason: str) -> None:
        self._phase = 'measure'
        self._slow_windows = 0
        self._note(reason)

    def _change(self, threads: int) -> None:
        self.threads = threads
        self.changes += 1
        self.samples = []
        self.steps_at_count = 0
        self._set(threads)

    def _note(self, reason: str) -> None:
        if self.on_change is not None:
            self.on_change(reason)


def _torch_set_threads(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


_ceiling_seen = 0  # the largest count torch had when a governor was made in this process


def thread_governor(spec: ThreadSpec, on_change: Optional[Callable[[str], None]] = None
                    ) -> Optional[ThreadGovernor]:
    """Applies a ``threads`` choice: None leaves torch's count alone; a number is set at once; for both None is
    returned. ``auto`` returns a governor over 1 .. the ceiling, or None when that is 1 (nothing to choose). The
    ceiling is the largest count torch had when any governor of this process was made, so that a count an earlier
    governor lowered (evaluation, then pictures, in one process) does not cap the next one."""
    import torch
    global _ceiling_seen
    if spec is None:
        return None
    fixed = parse_threads(spec)
    if fixed is not None:
        torch.set_num_threads(fixed)
        return None
    _ceiling_seen = max(_ceiling_seen, torch.get_num_threads())
    if _ceiling_seen <= 1:
        return None
    return ThreadGovernor(_ceiling_seen, on_change=on_change)
