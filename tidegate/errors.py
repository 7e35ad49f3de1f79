"""Errors of the tidegate SDK and command line.

Hierarchy::

    TidegateError
    └── UsageError        a command-line argument or file broke a rule

Each package keeps its own tree (``broker.errors``, ``scheduler.errors``); the
command line translates all of them into one line on stderr and an exit code.
"""

from __future__ import annotations

__all__ = ["TidegateError", "UsageError"]


class TidegateError(Exception):
    """Root of every error the SDK and the command line raise on purpose."""


class UsageError(TidegateError):
    """A command-line argument, or a file it names, is not acceptable."""
