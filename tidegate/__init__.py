"""tidegate: a durable, session-aware request queue and fair GPU admission controller.

The public API is what ``__all__`` lists; everything else is internal.
"""

from __future__ import annotations

from tidegate.errors import TidegateError, UsageError

__all__ = ["TidegateError", "UsageError", "__version__"]

__version__ = "0.1.0"
