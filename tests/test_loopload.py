"""The event loop's load: its thread's CPU time over wall time, window by window."""

from __future__ import annotations

import pytest

from mirrord.core.clock import FakeClock
from mirrord.fetch.loopload import LOAD_WINDOW, STALE_AFTER, LoopLoad


class ThreadCPU:
    """The loop thread's CPU clock, moved by the test."""

    def __init__(self) -> None:
        self.used = 0.0

    def __call__(self) -> float:
        return self.used


def test_busy_is_the_threads_cpu_over_the_wall_time_of_each_whole_window() -> None:
    clock, cpu = FakeClock(), ThreadCPU()
    load = LoopLoad(clock, cpu)
    assert load.observe() is None  # opens the first window
    clock.advance(0.1)
    cpu.used += 0.1
    assert load.observe() is None  # not a whole window yet: nothing judged
    clock.advance(0.2)
    cpu.used += 0.15
    assert load.observe() == pytest.approx(0.25 / 0.3)
    clock.advance(0.1)
    cpu.used += 0.1
    assert load.observe() == pytest.approx(0.25 / 0.3)  # the last whole window's, still
    clock.advance(0.2)
    assert load.observe() == pytest.approx(0.1 / 0.3)  # the next one, from where it closed
    assert load.busy == pytest.approx(0.1 / 0.3)


def test_a_window_left_open_across_an_idle_spell_starts_again_and_forgets() -> None:
    """Between two passes the loop waits for minutes: a window spanning that would
    read as idle, and a busy one before it says nothing of the next pass."""
    clock, cpu = FakeClock(), ThreadCPU()
    load = LoopLoad(clock, cpu)
    load.observe()
    clock.advance(LOAD_WINDOW)
    cpu.used += LOAD_WINDOW
    assert load.observe() == 1.0
    clock.advance(STALE_AFTER * LOAD_WINDOW + 0.01)
    assert load.observe() is None
    clock.advance(LOAD_WINDOW)
    cpu.used += LOAD_WINDOW / 2
    assert load.observe() == pytest.approx(0.5)


def test_busy_stays_a_fraction() -> None:
    clock, cpu = FakeClock(), ThreadCPU()
    load = LoopLoad(clock, cpu)
    load.observe()
    clock.advance(LOAD_WINDOW)
    cpu.used += 2 * LOAD_WINDOW  # the two clocks tick in their own steps: never above 1
    assert load.observe() == 1.0
