"""The commit log: segmented, checksummed, append-only storage with group commit.

Everything the rest of the broker needs is exported here::

    from broker.log import CommitLog, LogConfig, FsyncPolicy
"""

from broker.log.commitlog import CommitLog
from broker.log.values import (
    FsyncPolicy,
    LogConfig,
    LogLocation,
    LogStats,
    RecoveryReport,
    SegmentInfo,
    Skipped,
)

__all__ = [
    "CommitLog",
    "FsyncPolicy",
    "LogConfig",
    "LogLocation",
    "LogStats",
    "RecoveryReport",
    "SegmentInfo",
    "Skipped",
]
