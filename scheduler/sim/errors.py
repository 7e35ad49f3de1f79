"""Errors raised by the simulator and the trace tools.

Hierarchy::

    SchedulerError                 (scheduler.errors)
    └── SimError                   the simulator or a trace tool cannot go on
        ├── TraceError             a trace row broke the format (file, line, column)
        └── SimulationStalledError work is queued but nothing can ever run it

The command line prints the message of any of these as one line.
"""

from __future__ import annotations

from pathlib import Path

from scheduler.errors import SchedulerError

__all__ = ["SimError", "SimulationStalledError", "TraceError"]


class SimError(SchedulerError):
    """Root of the simulator's errors."""


class TraceError(SimError):
    """A malformed trace: names the file, the 1-based line (0: the whole file) and the column."""

    def __init__(self, path: Path | str, line: int, column: str | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.column = column
        self.problem = problem
        where = f"{self.path}:{line}" if line > 0 else self.path  # 0: the file as a whole
        if column is not None:
            where += f": column {column}"
        super().__init__(f"{where}: {problem}")


class SimulationStalledError(SimError):
    """Requests are queued but no event can ever dispatch them (a policy bug)."""
