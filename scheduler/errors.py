"""Errors raised by the scheduler.

Hierarchy::

    SchedulerError
    └── ConfigError        a setting broke a rule (names the key and the rule)

(The policy core extends this tree; see the module's classes.)
"""

from __future__ import annotations

__all__ = ["ConfigError", "SchedulerError"]


class SchedulerError(Exception):
    """Root of every error the scheduler raises on purpose."""


class ConfigError(SchedulerError):
    """A configuration value broke a rule; the message names the key and the rule."""
