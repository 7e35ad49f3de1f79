"""Keep large buffers in the heap: the C allocator setting a broker server runs with.

A server turns every Subscribe frame (up to a few MiB) and every publish
request into a few large buffers that live for microseconds: protobuf's
encoder, the bytes handed to gRPC, the request gRPC hands back. glibc serves
allocations above its mmap threshold with a fresh mmap, and it trims the
heap top back to the kernel once more than the trim threshold is free; so
each large buffer used to cost page faults and zero-filling of fresh pages,
which made serializing a 1 MiB frame ~8x as dear per byte as a 48 KiB one
(~1 us per delivered 1 KiB message).

:func:`keep_large_buffers` raises both thresholds (``mallopt``), so freed
buffers are reused from the heap. The price is that up to
``trim_bytes`` of freed memory may stay mapped per malloc arena. It does
nothing where the C library is not glibc, and the process keeps working
either way: this only changes where memory comes from.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

__all__ = ["MMAP_THRESHOLD_MAX", "keep_large_buffers"]

log = logging.getLogger("tidegate.broker")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit


def keep_large_buffers(
    mmap_bytes: int = MMAP_THRESHOLD_MAX, trim_bytes: int = 64 * 1024 * 1024
) -> bool:
    """Serve allocations up to ``mmap_bytes`` from the heap and keep up to
    ``trim_bytes`` free at its top; True if the C library took both settings."""
    if not 0 < mmap_bytes <= MMAP_THRESHOLD_MAX:
        raise ValueError(f"mmap_bytes is {mmap_bytes}; it must be in [1, {MMAP_THRESHOLD_MAX}]")
    if trim_bytes < mmap_bytes:
        raise ValueError(f"trim_bytes is {trim_bytes}; it must be >= mmap_bytes ({mmap_bytes})")
    if platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    taken = int(mallopt(_M_MMAP_THRESHOLD, mmap_bytes)) == 1
    taken = int(mallopt(_M_TRIM_THRESHOLD, trim_bytes)) == 1 and taken
    if not taken:
        log.warning("mallopt refused the large-buffer settings; serving with the defaults")
    return taken
