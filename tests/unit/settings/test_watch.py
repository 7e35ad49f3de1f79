"""Hot reload: the watcher re-reads on change or SIGHUP and keeps the old config on errors."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import pytest

from scheduler.clock import VirtualClock
from scheduler.errors import ConfigError
from scheduler.policy import create_policy
from scheduler.settings import Settings, SettingsWatcher, load_settings, to_scheduler_config
from scheduler.types import Admitted, Request

V1 = "tenants:\n  a: {weight: 1}\n  b: {weight: 1}\n"
V2 = "tenants:\n  a: {weight: 5}\n  b: {weight: 1}\n"


class Calls:
    def __init__(self) -> None:
        self.settings: list[Settings] = []
        self.errors: list[ConfigError] = []

    def change(self, settings: Settings) -> None:
        self.settings.append(settings)

    def error(self, error: ConfigError) -> None:
        self.errors.append(error)


def rewrite(path: Path, text: str, mtime_ns: int) -> None:
    """Write and set an explicit mtime, so the test does not hang on timestamp granularity."""
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Calls, SettingsWatcher]:
    path = tmp_path / "tenants.yaml"
    rewrite(path, V1, 1_000_000_000)
    calls = Calls()
    watcher = SettingsWatcher(path, calls.change, on_error=calls.error, environ={})
    return path, calls, watcher


def test_nothing_happens_while_the_file_is_unchanged(
    setup: tuple[Path, Calls, SettingsWatcher],
) -> None:
    _, calls, watcher = setup
    assert watcher.poll() is False
    assert calls.settings == []
    assert calls.errors == []


def test_a_change_calls_back_with_the_new_settings(
    setup: tuple[Path, Calls, SettingsWatcher],
) -> None:
    path, calls, watcher = setup
    rewrite(path, V2, 2_000_000_000)
    assert watcher.poll() is True
    assert calls.settings[-1].tenants["a"].weight == 5
    assert watcher.poll() is False  # seen already


def test_touching_without_changing_the_content_does_nothing(
    setup: tuple[Path, Calls, SettingsWatcher],
) -> None:
    path, calls, watcher = setup
    rewrite(path, V1, 3_000_000_000)
    assert watcher.poll() is False
    assert calls.settings == []


def test_a_bad_file_is_reported_once_and_the_old_config_stays(
    setup: tuple[Path, Calls, SettingsWatcher],
) -> None:
    path, calls, watcher = setup
    rewrite(path, "tenants:\n  a: {weight: -1}\n", 2_000_000_000)
    assert watcher.poll() is False
    assert len(calls.errors) == 1
    assert "tenants.a.weight: must be > 0 (got -1)" in str(calls.errors[0])
    rewrite(path, "tenants:\n  a: {weight: -1}\n", 2_500_000_000)
    assert watcher.poll() is False
    assert len(calls.errors) == 1  # same bytes: not reported again
    rewrite(path, V2, 3_000_000_000)
    assert watcher.poll() is True
    assert watcher.reloads == 1
    assert watcher.errors == 1


def test_a_missing_file_is_an_error_not_a_crash(
    setup: tuple[Path, Calls, SettingsWatcher],
) -> None:
    path, calls, watcher = setup
    path.unlink()
    assert watcher.poll() is False
    assert "cannot read" in str(calls.errors[0])


def test_reload_rereads_even_unchanged(setup: tuple[Path, Calls, SettingsWatcher]) -> None:
    _, calls, watcher = setup
    assert watcher.reload() is True
    assert calls.settings[-1].tenants["a"].weight == 1


def test_callback_config_errors_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    rewrite(path, V1, 1_000_000_000)
    calls = Calls()

    def reject(settings: Settings) -> None:
        raise ConfigError("policy says no")

    watcher = SettingsWatcher(path, reject, on_error=calls.error, environ={})
    assert watcher.reload() is False
    assert str(calls.errors[0]) == "policy says no"


def test_run_polls_on_the_clock(setup: tuple[Path, Calls, SettingsWatcher]) -> None:
    path, calls, watcher = setup

    async def scenario() -> None:
        clock = VirtualClock()
        task = asyncio.create_task(watcher.run(clock, interval_s=1.0))
        await asyncio.sleep(0)
        rewrite(path, V2, 2_000_000_000)
        clock.advance(0.5)
        await asyncio.sleep(0)
        assert calls.settings == []
        clock.advance(0.5)
        for _ in range(3):
            await asyncio.sleep(0)
        assert len(calls.settings) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_sighup_reloads(setup: tuple[Path, Calls, SettingsWatcher]) -> None:
    _, calls, watcher = setup

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        watcher.install_sighup(loop)
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(200):  # the handler runs on a later loop iteration
                if calls.settings:
                    break
                await asyncio.sleep(0.005)
        finally:
            watcher.remove_sighup(loop)
        assert len(calls.settings) == 1

    asyncio.run(scenario())


def test_reload_into_a_policy_keeps_queued_requests(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    rewrite(path, V1, 1_000_000_000)
    policy = create_policy(
        "tidegate", to_scheduler_config(load_settings(path, {})), random.Random(0)
    )
    for i in range(10):
        outcome = policy.submit(Request(f"r{i}", "ab"[i % 2], input_tokens=10), 0.0)
        assert isinstance(outcome, Admitted)
    watcher = SettingsWatcher(
        path, lambda s: policy.update_config(to_scheduler_config(s), 1.0), environ={}
    )
    rewrite(path, V2, 2_000_000_000)
    assert watcher.poll() is True
    assert policy.queued() == 10
    assert policy.stats().tenants["a"].weight == 5
