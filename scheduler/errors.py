"""Errors raised by the scheduler.

Hierarchy::

    SchedulerError
    ├── ConfigError           a setting broke a rule (names the key and the rule)
    ├── UnknownPolicyError    a policy name outside POLICY_NAMES          (also ValueError)
    ├── InvalidRequestError   a request value broke a rule, e.g. tokens < 0 (also ValueError)
    ├── UnknownRequestError   a report about a request that is not running (also LookupError)
    ├── UnknownWorkerError    a worker never added, or removed            (also LookupError)
    └── WorkerExistsError     add_worker() twice for one worker id        (also ValueError)

Refusals of requests are not errors: admission returns a ``Refusal`` value
(reason + retry-after), because a full queue is an expected outcome.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InvalidRequestError",
    "SchedulerError",
    "UnknownPolicyError",
    "UnknownRequestError",
    "UnknownWorkerError",
    "WorkerExistsError",
]


class SchedulerError(Exception):
    """Root of every error the scheduler raises on purpose."""


class ConfigError(SchedulerError):
    """A configuration value broke a rule; the message names the key and the rule."""


class UnknownPolicyError(SchedulerError, ValueError):
    """A policy name outside the closed set; the message lists the choices."""


class InvalidRequestError(SchedulerError, ValueError):
    """A request value broke a rule (the message names the field and the value)."""


class UnknownRequestError(SchedulerError, LookupError):
    """A request id that is not queued or running where the call needs it to be."""


class UnknownWorkerError(SchedulerError, LookupError):
    """A worker id the policy does not know."""


class WorkerExistsError(SchedulerError, ValueError):
    """A worker id added twice."""
