"""concern.threads: the --threads knob and the governor, against a simulated machine whose step time follows a
known law (so the right choice at each moment is known independently of the governor)."""
from __future__ import annotations

import pytest

from concern.threads import ThreadGovernor, parse_threads


class Machine:
    """A step costs ``work`` core-seconds split over the team; a team larger than the free cores waits at every
    barrier for descheduled threads, which the law below prices at ``stall`` times the step (the 20-fold slowdown
    measured on a 2-core machine with one core busy)."""

    def __init__(self, cores: int, work: float = 2.0, stall: float = 20.0):
        self.cores, self.work, self.stall = cores, work, stall
        self.busy = 0  # cores held by another process
        self.threads = cores
        self.clock = 0.0

    def set_threads(self, threads: int) -> None:
        self.threads = threads

    def step(self) -> float:
        free = max(1, self.cores - self.busy)
        seconds = self.work / min(self.threads, free) * 1.05 ** (self.threads - 1)
        if self.threads > free:
            seconds *= self.stall
        self.clock += seconds
        return seconds


def run(machine: Machine, governor: ThreadGovernor, steps: int) -> list:
    counts = []
    for _ in range(steps):
        governor.observe(machine.step())
        counts.append(machine.threads)
    return counts


def test_parse_threads():
    assert parse_threads('auto') is None and parse_threads(None) is None
    assert parse_threads(3) == 3 and parse_threads('2') == 2
    import numpy as np
    assert parse_threads(np.int64(2)) == 2
    for bad in (0, -1, '0', '2.5', 'many', True, 1.5, '\u00b2'):
        with pytest.raises(ValueError, match='threads'):
            parse_threads(bad)


def test_idle_machine_keeps_every_core():
    machine = Machine(cores=2)
    notes = []
    governor = ThreadGovernor(2, set_threads=machine.set_threads, on_change=notes.append)
    counts = run(machine, governor, 200)
    assert counts[-150:] == [2] * 150
    # the one probe at 1 thread: a window of 3 steps, about 3 x (2.0 - 1.05) s extra
    ideal = 200 * machine.work / 2 * 1.05
    assert machine.clock < ideal + 3 * 2.0
    assert any('faster' in note for note in notes)


def test_busy_core_from_the_start_drops_to_one_thread():
    machine = Machine(cores=2)
    machine.busy = 1
    governor = ThreadGovernor(2, set_threads=machine.set_threads)
    run(machine, governor, 300)
    fixed = Machine(cores=2)
    fixed.busy = 1
    for _ in range(300):
        fixed.step()  # two threads throughout: the stall at every step
    assert machine.threads == 1
    assert machine.clock < fixed.clock / 8  # the probes up cost a few stalled steps, never many


def test_contention_mid_run_is_followed_down_and_back_up():
    machine = Machine(cores=2)
    governor = ThreadGovernor(2, set_threads=machine.set_threads, recheck=20)
    run(machine, governor, 50)
    assert machine.threads == 2
    machine.busy = 1
    counts = run(machine, governor, 100)
    assert counts[-1] == 1
    # two slow windows (6 steps) to notice, then only one-step probes, with back-off
    assert sum(1 for c in counts[10:] if c == 2) <= 3
    machine.busy = 0
    counts = run(machine, governor, 200)
    assert counts[-1] == 2 and counts[-100:] == [2] * 100


def test_counts_stay_in_range_and_fixed_one_thread_never_changes():
    calls = []
    governor = ThreadGovernor(1, set_threads=calls.append)
    for seconds in (1.0, 5.0, 50.0, 0.5, 80.0) * 10:
        assert governor.observe(seconds) == 1
    assert set(calls) == {1}
    machine = Machine(cores=4)
    machine.busy = 2
    governor = ThreadGovernor(4, set_threads=machine.set_threads)
    counts = run(machine, governor, 400)
    assert min(counts) >= 1 and max(counts) <= 4
    assert machine.threads == 2  # the free cores


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        ThreadGovernor(0)
    with pytest.raises(ValueError):
        ThreadGovernor(2, min_threads=3)
    with pytest.raises(ValueError):
        ThreadGovernor(2, slow_factor=1.0, set_threads=lambda n: None)


def test_run_options_refuse_a_bad_thread_count():
    from training.run_options import RunOptions
    with pytest.raises(ValueError, match="threads: expected 'auto'"):
        RunOptions(name='x', threads='two')
    assert RunOptions(name='x', threads='3').threads == '3'


def test_training_hook_sets_a_fixed_count_and_governs_auto(monkeypatch):
    import types

    import torch

    from training.hooks import ThreadControl, default_hooks
    import concern.threads
    monkeypatch.setattr(concern.threads, '_ceiling_seen', 0)  # this process's earlier governors do not count here
    before = torch.get_num_threads()
    trainer = types.SimpleNamespace(device=torch.device('cpu'), context=types.SimpleNamespace(world_size=1),
                                    iteration=0, logger=types.SimpleNamespace(info=lambda message: None),
                                    options=types.SimpleNamespace(threads='auto', max_nan_steps=5), validator=None)
    assert isinstance(default_hooks(trainer)[0], ThreadControl)  # first: its timing excludes the checkpoints
    try:
        torch.set_num_threads(2)
        hook = ThreadControl(None)  # the API default: torch's count untouched
        hook.before_train(trainer)
        assert torch.get_num_threads() == 2 and hook.governor is None
        hook = ThreadControl('1')
        hook.before_train(trainer)
        assert torch.get_num_threads() == 1 and hook.governor is None
        hook.close(trainer)
        assert torch.get_num_threads() == 2  # restored at the end of the run
        hook = ThreadControl('auto')
        hook.before_train(trainer)
        assert hook.governor is not None and hook.governor.max_threads == 2
        for _ in range(5):  # the hook times each step and hands it to the governor
            hook.before_step(trainer)
            hook.after_step(trainer)
        assert hook.governor.steps == 5
        hook.close(trainer)
        trainer.context.world_size = 2  # distributed: no governor
        hook = ThreadControl('auto')
        hook.before_train(trainer)
        assert hook.governor is None
    finally:
        torch.set_num_threads(before)


def test_torch_runner_times_each_forward_per_pixel(monkeypatch):
    import numpy as np
    import torch

    import concern.threads
    monkeypatch.setattr(concern.threads, '_ceiling_seen', 0)

    from inference.runners import TorchRunner

    class Half(torch.nn.Module):
        def forward(self, x, training=False):
            return x[:, :1] * 0.5

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        runner = TorchRunner(Half(), 'cpu', threads='auto')
        assert runner.governor is not None
        out = runner(np.ones((1, 3, 32, 64), np.float32))
        assert out.shape == (1, 1, 32, 64) and float(out.max()) == 0.5
        assert runner.governor.steps == 1
        runner.governor.observe(1.0)
        runner(np.ones((1, 3, 64, 64), np.float32))  # another shape: measurements restart
        assert runner.governor.reference == {} and runner.governor._phase == 'warmup'
        runner = TorchRunner(Half(), 'cpu', threads=1)
        assert runner.governor is None and torch.get_num_threads() == 1
        torch.set_num_threads(2)
        assert TorchRunner(Half(), 'cpu').governor is None  # default: torch's count untouched
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_lucky_probe_step_is_verified_before_the_count_is_kept():
    """Another process that pauses for exactly the probe's step must not leave the run at the stalled count."""
    machine = Machine(cores=2)
    machine.busy = 1
    governor = ThreadGovernor(2, set_threads=machine.set_threads, recheck=10)
    run(machine, governor, 30)
    assert machine.threads == 1
    for _ in range(400):
        probing = governor._phase == 'probe'
        machine.busy = 0 if probing else 1
        governor.observe(machine.step())
    assert machine.threads == 1
    assert governor.recheck > 10  # backed off after the failed verification


def test_noisy_steps_on_an_idle_machine_do_not_move_the_count():
    import random
    rng = random.Random(0)
    for window in (1, 3):
        calls = []
        governor = ThreadGovernor(2, window=window, set_threads=calls.append)
        counts = []
        for _ in range(2000):
            threads = governor.threads
            seconds = (1.0 if threads == 2 else 1.9) * rng.uniform(0.7, 1.3)
            counts.append(governor.observe(seconds))
        assert counts[-1900:].count(1) <= 2 * window + 2, window  # the one initial descent, nothing more
        assert governor.changes <= 2


def test_warmup_steps_are_not_judged_and_the_first_window_follows():
    calls = []
    governor = ThreadGovernor(2, window=2, warmup=2, set_threads=calls.append)
    for seconds in (100.0, 100.0):  # warm-up: however slow, not judged
        governor.observe(seconds)
    assert governor.reference == {}
    governor.observe(1.0)
    governor.observe(1.0)  # the first window: its reference, then the descent to 1 thread
    assert governor.reference == {2: 1.0} and governor.threads == 1 and calls[-1] == 1


def test_restart_forgets_times_and_abandons_a_probe():
    machine = Machine(cores=2)
    machine.busy = 1
    governor = ThreadGovernor(2, set_threads=machine.set_threads, recheck=5)
    while governor._phase != 'probe':
        governor.observe(machine.step())
    assert machine.threads == 2 and governor.threads == 2  # the probe's count is reported
    governor.restart()
    assert machine.threads == 1 and governor.reference == {} and governor._phase == 'warmup'


def test_a_count_an_earlier_governor_lowered_does_not_cap_the_next(monkeypatch):
    """make demo's evaluation may end at one thread under contention; the pictures' governor that follows in the
    same process must still be able to use both cores."""
    import torch

    import concern.threads
    from concern.threads import thread_governor
    monkeypatch.setattr(concern.threads, '_ceiling_seen', 0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first = thread_governor('auto')
        assert first is not None and first.max_threads == 2
        torch.set_num_threads(1)  # what the first governor did under contention
        second = thread_governor('auto')
        assert second is not None and second.max_threads == 2
    finally:
        torch.set_num_threads(before)
