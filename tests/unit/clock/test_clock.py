"""Clocks: the monotonic one and the virtual one the runtime's tests use."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.clock import Clock, MonotonicClock, VirtualClock


def test_both_clocks_satisfy_the_protocol() -> None:
    assert isinstance(MonotonicClock(), Clock)
    assert isinstance(VirtualClock(), Clock)


def test_monotonic_clock_never_goes_back() -> None:
    clock = MonotonicClock()
    first = clock.now()
    assert clock.now() >= first


def test_monotonic_sleep_zero_and_negative_return() -> None:
    async def scenario() -> None:
        clock = MonotonicClock()
        await clock.sleep(0)
        await clock.sleep(-1)

    asyncio.run(scenario())


def test_virtual_clock_moves_only_when_told() -> None:
    clock = VirtualClock(10.0)
    assert clock.now() == 10.0
    clock.advance(2.5)
    assert clock.now() == 12.5
    clock.jump(20.0)
    assert clock.now() == 20.0
    with pytest.raises(ValueError, match="jump target"):
        clock.jump(19.0)
    with pytest.raises(ValueError, match="advance"):
        clock.advance(-1.0)
    with pytest.raises(ValueError, match="finite"):
        VirtualClock(float("inf"))


def test_sleepers_wake_in_deadline_order() -> None:
    async def scenario() -> list[str]:
        clock = VirtualClock()
        woke: list[str] = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append(f"{name}@{clock.now()}")

        tasks = [
            asyncio.create_task(sleeper("late", 3.0)),
            asyncio.create_task(sleeper("early", 1.0)),
            asyncio.create_task(sleeper("tie", 1.0)),
        ]
        await asyncio.sleep(0)
        assert clock.sleepers == 3
        assert clock.next_deadline() == 1.0
        clock.advance(0.5)
        await asyncio.sleep(0)
        assert woke == []
        clock.advance(0.5)
        await asyncio.sleep(0)
        assert woke == ["early@1.0", "tie@1.0"]
        clock.jump(5.0)
        await asyncio.gather(*tasks)
        assert clock.next_deadline() is None
        return woke

    assert asyncio.run(scenario()) == ["early@1.0", "tie@1.0", "late@5.0"]


def test_cancelled_sleeper_is_forgotten() -> None:
    async def scenario() -> None:
        clock = VirtualClock()
        task = asyncio.create_task(clock.sleep(1.0))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert clock.sleepers == 0
        assert clock.next_deadline() is None
        clock.advance(2.0)  # waking a cancelled future must not raise

    asyncio.run(scenario())


def test_zero_sleep_is_a_scheduling_point() -> None:
    async def scenario() -> None:
        clock = VirtualClock()
        await clock.sleep(0)
        assert clock.now() == 0.0

    asyncio.run(scenario())
