"""The server's allocator setting: taken on glibc, arguments checked."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from broker.allocator import MMAP_THRESHOLD_MAX, keep_large_buffers


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_setting() -> None:
    # In a child process: the setting is process-wide and this one runs other tests.
    code = "from broker.allocator import keep_large_buffers as k; print(k())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize(
    ("mmap_bytes", "trim_bytes", "rule"),
    [
        (0, 1 << 26, r"mmap_bytes is 0; it must be in \[1, "),
        (MMAP_THRESHOLD_MAX + 1, 1 << 30, "mmap_bytes is"),
        (1 << 20, 1 << 19, r"trim_bytes is 524288; it must be >= mmap_bytes \(1048576\)"),
    ],
)
def test_bad_sizes_are_named(mmap_bytes: int, trim_bytes: int, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        keep_large_buffers(mmap_bytes, trim_bytes)
