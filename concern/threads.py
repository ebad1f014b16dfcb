"""How many threads torch computes with: a fixed count, or one chosen from measured step times.

Why: torch's CPU kernels split each operation over its OpenMP team and wait at the end for the slowest thread.
When another process holds one of the cores, every operation waits for a thread that is not running, and a
training step on two cores went from about 1.1 s to 20-30 s (issue 24). One thread fewer than the cores that are
actually free is then many times faster than the full team. Which count is fastest depends on what else runs on
the machine, and that changes during a run, so ``ThreadGovernor`` measures it: it times the steps at the current
count, tries one thread fewer when the steps slow down (and once after warm-up), and goes back up when a probe
at the larger count is faster again.

The knob (``--threads`` of train.py, eval.py and demo.py; ``threads`` of ``TextDetector``): ``auto`` (the
default: governed, at most torch's default count, the machine's physical cores) or a whole number (fixed, no
governor: what a timing or a bit-for-bit comparison wants). The governor changes only ``torch.set_num_threads``;
changing the thread count does not change what a step computes, only how long it takes (though a reduction
split differently may round differently in the last bit).
"""
from __future__ import annotations

import statistics
from typing import Callable, Dict, List, Optional, Tuple, Union

ThreadSpec = Union[int, str, None]


def parse_threads(value: ThreadSpec) -> Optional[int]:
    """``'auto'`` / None -> None (governed); a whole number >= 1 (int or decimal string) -> that count.

    Raises ``ValueError`` naming the value for anything else (0, negatives, '2.5', 'many')."""
    if value is None or value == 'auto':
        return None
    if isinstance(value, bool):
        raise ValueError(f"threads: expected 'auto' or a whole number >= 1, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit():
            raise ValueError(f"threads: expected 'auto' or a whole number >= 1, got {value!r}")
        value = int(text)
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"threads: expected 'auto' or a whole number >= 1, got {value!r}")
    return value


class ThreadGovernor:
    """Picks torch's intra-op thread count from the measured time of repeated, similar steps.

    Call ``observe(seconds, work)`` after each step (``work``: any size measure, e.g. pixels, so that steps of
    different sizes compare; 1 for equal steps). The governor keeps, for each count it has run, the best median
    over ``window`` steps of seconds per unit of work, and:

    - after ``warmup`` steps and one window at ``max_threads`` it descends: one window at one thread fewer, and
      again while each count is faster than the one above; it keeps the fastest (on an idle machine the full
      count, after one window at one thread fewer; with busy cores, about the free ones);
    - when the median of the last window is more than ``slow_factor`` times the best seen at the current count,
      it descends the same way (another process has taken a core); when fewer threads are not faster, the
      current speed becomes the count's new reference (the work itself grew, or the whole machine slowed);
    - below ``max_threads`` it probes one thread more after ``recheck`` steps, for a single step; it stays there
      when that step is faster than the current window's median by the margin ``1 / 1.05``, else it goes back
      and doubles ``recheck`` (up to ``max_recheck``), so that a machine that stays busy costs few slow probes.

    ``set_threads`` is the action (``torch.set_num_threads`` by default; tests pass a recorder). ``on_change``
    (optional) is called with a one-line reason at every decision. Costs on an idle 2-core machine: one window at
    one thread (about ``window`` x 0.9 extra step times, once). The counts seen are never below
    ``min_threads`` or above ``max_threads``.
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
        self.best: Dict[int, float] = {}  # thread count -> best window median (seconds per unit of work)
        self.recent: List[float] = []
        self.steps = 0
        self.steps_at_count = 0
        self.changes = 0
        self._phase = 'warmup'  # 'warmup', 'steady', 'descend', 'probe_up'
        self._descended = False  # the first window at max_threads starts a descent (once)
        self._upper: Tuple[int, float] = (self.max_threads, 0.0)  # during a descent: the count above, its median
        self._before_probe: Optional[float] = None
        self._set(self.threads)

    # ---------------------------------------------------------------------------------------------
    def observe(self, seconds: float, work: float = 1.0) -> int:
        """Records one step; returns the thread count for the next step (already set)."""
        self.steps += 1
        if not (seconds >= 0 and work > 0):  # a clock jump or an empty step: nothing to learn
            return self.threads
        rate = seconds / work
        if self._phase == 'warmup':
            if self.steps > self.warmup:
                self._phase = 'steady'
            return self.threads
        if self._phase == 'probe_up':
            return self._finish_probe(rate)
        self.recent.append(rate)
        self.steps_at_count += 1
        if len(self.recent) < self.window:
            return self.threads
        median = statistics.median(self.recent[-self.window:])
        best = self.best.get(self.threads)
        self.best[self.threads] = median if best is None else min(best, median)
        if self._phase == 'descend':
            return self._descend(median)
        if self.threads > self.min_threads and (
                not self._descended or (best is not None and median > self.slow_factor * best)):
            if self._descended:
                self._note(f'steps slowed from {best:.3g} to {median:.3g} s at {self.threads} threads (another '
                           'process may be using a core): trying fewer')
            self._descended = True
            self._start_descent(median)
            return self.threads
        self._descended = True
        if self.threads < self.max_threads and self.steps_at_count >= self.recheck:
            self._before_probe = median
            self._phase = 'probe_up'
            self._set(self.threads + 1)
        return self.threads

    def _start_descent(self, median: float) -> None:
        self._upper = (self.threads, median)
        self._phase = 'descend'
        self._change(self.threads - 1)

    def _descend(self, median: float) -> int:
        upper, upper_median = self._upper
        if median < upper_median:
            if self.threads > self.min_threads:
                self._start_descent(median)  # faster with fewer: try fewer still
            else:
                self._settle(f'{self.threads} thread(s) faster than {upper} ({median:.3g} against '
                             f'{upper_median:.3g} s per step)')
            return self.threads
        # slower with fewer: the count above was right; its current speed is the new reference
        self._change(upper)
        self.best[upper] = upper_median
        self._settle(f'{upper} threads faster than {upper - 1} ({upper_median:.3g} against {median:.3g} s per step)')
        return self.threads

    def _settle(self, reason: str) -> None:
        self._phase = 'steady'
        self._note(reason)

    def _finish_probe(self, rate: float) -> int:
        assert self._before_probe is not None
        self._phase = 'steady'
        if rate * 1.05 < self._before_probe:
            self.recheck = self.first_recheck
            self._change(self.threads + 1)
            self._note(f'a step at {self.threads} threads took {rate:.3g} s against {self._before_probe:.3g} s at '
                       f'{self.threads - 1}: back to {self.threads} threads')
        else:
            self._set(self.threads)
            self.recheck = min(2 * self.recheck, self.max_recheck)
            self.steps_at_count = 0
        return self.threads

    def _change(self, threads: int) -> None:
        self.threads = threads
        self.changes += 1
        self.recent = []
        self.steps_at_count = 0
        self._set(threads)

    def _note(self, reason: str) -> None:
        if self.on_change is not None:
            self.on_change(reason)


def _torch_set_threads(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def thread_governor(spec: ThreadSpec, on_change: Optional[Callable[[str], None]] = None
                    ) -> Optional[ThreadGovernor]:
    """Applies the ``--threads`` choice: a number is set at once (and None is returned); ``auto`` returns a
    governor over 1..torch's current count (None when that count is already 1: nothing to choose)."""
    import torch
    fixed = parse_threads(spec)
    if fixed is not None:
        torch.set_num_threads(fixed)
        return None
    available = torch.get_num_threads()
    if available <= 1:
        return None
    return ThreadGovernor(available, on_change=on_change)
