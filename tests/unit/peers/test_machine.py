"""The machine description's parsers and its one-line summary."""

from __future__ import annotations

import pytest

from benchmarks.peers.machine import mount_of, parse_meminfo_total, summary

_MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid 0 0
tmpfs /tmp/fast tmpfs rw 0 0
/dev/vdb /data xfs rw 0 0
"""


def test_parse_meminfo_total() -> None:
    assert parse_meminfo_total("MemFree: 5 kB\nMemTotal:  24576000 kB\n") == 24576000 * 1024
    with pytest.raises(ValueError, match="MemTotal"):
        parse_meminfo_total("MemFree: 5 kB\n")


def test_mount_of_takes_the_longest_mount_point_holding_the_path() -> None:
    assert mount_of(_MOUNTS, "/tmp") == ("/dev/vda", "/", "ext4")
    assert mount_of(_MOUNTS, "/tmp/fast/x") == ("tmpfs", "/tmp/fast", "tmpfs")
    assert mount_of(_MOUNTS, "/data") == ("/dev/vdb", "/data", "xfs")
    assert mount_of(_MOUNTS, "/database") == ("/dev/vda", "/", "ext4")


def test_summary_names_cores_memory_disk_and_fsync_cost() -> None:
    line = summary(
        {
            "nproc": 2,
            "cpu": "AMD EPYC",
            "memory_bytes": 24 * 2**30,
            "disk": {
                "device": "/dev/vda",
                "fs": "ext4",
                "size_bytes": 252 * 2**30,
                "fsync_4k_p50_ms": 0.126,
            },
        }
    )
    assert line == (
        "2 cores (AMD EPYC), 24 GiB RAM, disk /dev/vda ext4 252 GiB, 4 KiB write+fsync p50 0.126 ms"
    )
