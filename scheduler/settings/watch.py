"""Hot reload: re-read the settings file when it changes, or on SIGHUP.

The watcher only reads and validates; what a new config means is the
callback's business. The server's callback hands
``to_scheduler_config(settings)`` to the policy's ``update_config``, which
keeps every queued request. A file that no longer validates is reported
(``on_error``) and the running config stays, so a typo never takes the
server down or empties its queues.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path

from scheduler.clock import Clock
from scheduler.errors import ConfigError
from scheduler.settings.loading import parse_settings
from scheduler.settings.sections import Settings

__all__ = ["SettingsWatcher"]

_log = logging.getLogger(__name__)


def _log_error(error: ConfigError) -> None:
    _log.error("settings not reloaded, the running config stays: %s", error)


class SettingsWatcher:
    """Calls ``on_change(settings)`` with each new valid version of ``path``.

    :meth:`poll` checks the file (cheaply: size and mtime first, then a
    content hash, so touching the file or rewriting the same bytes does
    nothing). :meth:`reload` re-reads unconditionally; SIGHUP calls it once
    :meth:`install_sighup` is done. :meth:`run` polls forever on a clock.
    """

    def __init__(
        self,
        path: Path | str,
        on_change: Callable[[Settings], None],
        *,
        on_error: Callable[[ConfigError], None] = _log_error,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self._on_change = on_change
        self._on_error = on_error
        self._environ = environ
        # What the caller loaded at startup is the baseline: no callback for it.
        self._stat = self._stat_key()
        self._digest = self._digest_of(self._read())
        self.reloads = 0
        self.errors = 0

    def poll(self) -> bool:
        """Reload if the file changed; True when ``on_change`` was called."""
        key = self._stat_key()
        if key == self._stat:
            return False
        self._stat = key
        return self._load(force=False)

    def reload(self) -> bool:
        """Reload now, changed or not (SIGHUP); True when ``on_change`` was called."""
        self._stat = self._stat_key()
        return self._load(force=True)

    def install_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make SIGHUP reload (on the loop's thread, between other callbacks)."""
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def remove_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    async def run(self, clock: Clock, interval_s: float = 1.0) -> None:
        """Poll every ``interval_s`` until cancelled."""
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0 (got {interval_s!r})")
        while True:
            await clock.sleep(interval_s)
            self.poll()

    # ------------------------------------------------------------ internals

    def _stat_key(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    @staticmethod
    def _digest_of(data: bytes | None) -> bytes | None:
        return None if data is None else hashlib.sha256(data).digest()

    def _fail(self, error: ConfigError) -> bool:
        self.errors += 1
        self._on_error(error)
        return False

    def _load(self, *, force: bool) -> bool:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            # Editors replace files by rename: a moment without one is not news
            # worth a reload, but it is worth a line.
            return self._fail(ConfigError(f"{self.path}: cannot read: {exc.strerror or exc}"))
        digest = self._digest_of(data)
        if digest == self._digest and not force:
            return False
        self._digest = digest
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return self._fail(ConfigError(f"{self.path}: not UTF-8 text: {exc.reason}"))
        try:
            settings = parse_settings(text, self._environ_now(), source=self.path)
            self._on_change(settings)
        except ConfigError as exc:
            return self._fail(exc)
        self.reloads += 1
        return True

    def _environ_now(self) -> Mapping[str, str]:
        # The process environment as it is now (read at reload, never at import).
        return self._environ if self._environ is not None else os.environ
