"""What the run ran on: cores, memory, the disk under the data directories, its fsync cost.

The parsers are pure; ``describe`` reads /proc and /sys and times a few
fsyncs in the directory the servers' data goes to (an ``always`` row is
mostly that number).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

from benchmarks.peers.results import percentile

__all__ = ["describe", "mount_of", "parse_meminfo_total", "summary"]


def parse_meminfo_total(meminfo: str) -> int:
    """MemTotal in bytes from the text of /proc/meminfo."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise ValueError("no MemTotal line in /proc/meminfo text")


def mount_of(mounts: str, path: str) -> tuple[str, str, str]:
    """(device, mount point, fs type) of the mount holding ``path``, from /proc/mounts text."""
    best = ("?", "/", "?")
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        device, point, fstype = fields[0], fields[1], fields[2]
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[1]):
            best = (device, point, fstype)
    return best


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _fsync_ms(directory: str, rounds: int = 50) -> tuple[float, float]:
    """p50 and p99 of (write 4 KiB + fsync) in ``directory``, in ms."""
    samples = []
    fd, name = tempfile.mkstemp(dir=directory, prefix="fsync-probe-")
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
            samples.append((time.perf_counter() - t0) * 1e3)
    finally:
        os.close(fd)
        os.unlink(name)
    return percentile(samples, 50), percentile(samples, 99)


def describe() -> dict[str, object]:
    """The machine, as JSON-ready values."""
    tmp = tempfile.gettempdir()
    device, point, fstype = mount_of(_read("/proc/mounts"), os.path.realpath(tmp))
    block = Path(device).name
    rotational = _read(f"/sys/block/{block}/queue/rotational").strip()
    stat = os.statvfs(tmp)
    p50, p99 = _fsync_ms(tmp)
    meminfo = _read("/proc/meminfo")
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_bytes": parse_meminfo_total(meminfo) if meminfo else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "data_dir": tmp,
        "disk": {
            "device": device,
            "mount": point,
            "fs": fstype,
            "size_bytes": stat.f_blocks * stat.f_frsize,
            "rotational": {"0": False, "1": True}.get(rotational),
            "fsync_4k_p50_ms": round(p50, 3),
            "fsync_4k_p99_ms": round(p99, 3),
        },
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }


def summary(machine: dict[str, object]) -> str:
    """One line for the table's title and the README."""
    disk = machine.get("disk")
    disk = disk if isinstance(disk, dict) else {}
    memory = machine.get("memory_bytes")
    mem = f"{int(memory) / 2**30:.0f} GiB RAM" if isinstance(memory, int) else "? RAM"
    size = disk.get("size_bytes")
    return (
        f"{machine.get('nproc')} cores ({machine.get('cpu')}), {mem}, "
        f"disk {disk.get('device')} {disk.get('fs')} "
        f"{int(size) / 2**30 if isinstance(size, int) else 0:.0f} GiB, "
        f"4 KiB write+fsync p50 {disk.get('fsync_4k_p50_ms')} ms"
    )
