"""Errors of the workers package.

Hierarchy::

    WorkerError                       root of every error raised here on purpose
    ├── WorkerConfigError             a setting broke a rule (names the setting and value)
    ├── BackendError                  an inference backend could not serve a request
    │   ├── BackendUnavailableError   the engine cannot be reached (down, refusing, overloaded)
    │   ├── BackendRejectedError      the engine refused the request (HTTP 4xx): fix the request
    │   ├── BackendFailedError        the engine failed while serving (HTTP 5xx, broken stream)
    │   ├── BackendNotInstalledError  an optional package the backend needs is missing
    │   └── DuplicateRequestError     a request id is already running on this backend
    └── ProbeError                    a GPU probe could not read its device
        └── ProbeUnavailableError     no GPU (or no NVML) here: use a scripted probe

Foreign errors (httpx, pynvml, torch) are translated where they are caught,
in the one module that talks to that library, so callers only ever handle
these classes.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendFailedError",
    "BackendNotInstalledError",
    "BackendRejectedError",
    "BackendUnavailableError",
    "DuplicateRequestError",
    "ProbeError",
    "ProbeUnavailableError",
    "WorkerConfigError",
    "WorkerError",
]


class WorkerError(Exception):
    """Root of every error the workers package raises on purpose."""


class WorkerConfigError(WorkerError, ValueError):
    """A worker or backend setting is not acceptable."""


class BackendError(WorkerError):
    """An inference backend could not serve a request."""


class BackendUnavailableError(BackendError):
    """The engine cannot be reached; the request may be retried elsewhere."""


class BackendRejectedError(BackendError):
    """The engine refused the request as malformed or unsupported.

    ``status`` is the HTTP status where there is one. Retrying the same
    request will fail the same way.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BackendFailedError(BackendError):
    """The engine failed while serving (server error, stream cut, bad data)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BackendNotInstalledError(BackendError):
    """A package the backend needs is not installed; the message names it."""


class DuplicateRequestError(BackendError):
    """A request id is already running on this backend."""


class ProbeError(WorkerError):
    """A GPU probe could not read its device."""


class ProbeUnavailableError(ProbeError):
    """There is no GPU (or no NVML library) to probe on this machine."""
