"""The figures a peer run measures, what durability each stands for, and the parsers.

Pure: no I/O, no clock. The runners (``*_runs.py``) build ``Figure`` values;
``report.py`` lines them up. Every figure names the durability tier it was
measured at, because a throughput without its durability is not comparable:

``window``  acknowledged once the write reached the OS; a machine crash can
            lose a bounded window of acknowledged writes (tidegate ``fsync:
            interval``, 0.1 s; Redis ``appendfsync everysec``, about 1 s, up
            to 2 s; JetStream's default, a background sync every 2 minutes).
``fsync``   acknowledged only once on disk (tidegate ``fsync: always``; Redis
            ``appendfsync always``; JetStream ``sync_interval: always``, which
            needs nats-server 2.10 or later; Debian 12 ships 2.9).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "DURABILITY",
    "Figure",
    "Metric",
    "System",
    "Tier",
    "combine",
    "listening_addresses",
    "non_loopback",
    "parse_nats_version",
    "parse_stat_cpu",
    "parse_vm_rss",
    "percentile",
    "supports_sync_always",
]


class System(StrEnum):
    TIDEGATE = "tidegate"
    REDIS = "redis"
    JETSTREAM = "jetstream"


class Tier(StrEnum):
    WINDOW = "window"
    FSYNC = "fsync"


class Metric(StrEnum):
    """One measured quantity; ``unit`` and ``higher_is_better`` drive the ratios."""

    PRODUCE = "produce"
    CONSUME = "consume"
    PUBLISH_ONE = "publish-one"
    TOPIC_CREATE = "topic-create"
    TOPIC_MEMORY = "topic-memory"
    FANIN_P50 = "fanin-p50"
    FANIN_P99 = "fanin-p99"

    @property
    def unit(self) -> str:
        return _UNITS[self]

    @property
    def higher_is_better(self) -> bool:
        return self in _HIGHER_IS_BETTER

    @property
    def label(self) -> str:
        return _LABELS[self]


_UNITS = {
    Metric.PRODUCE: "msg/s",
    Metric.CONSUME: "msg/s",
    Metric.PUBLISH_ONE: "msg/s",
    Metric.TOPIC_CREATE: "topics/s",
    Metric.TOPIC_MEMORY: "B/topic",
    Metric.FANIN_P50: "ms",
    Metric.FANIN_P99: "ms",
}
_HIGHER_IS_BETTER = frozenset(
    {Metric.PRODUCE, Metric.CONSUME, Metric.PUBLISH_ONE, Metric.TOPIC_CREATE}
)
_LABELS = {
    Metric.PRODUCE: "produce, batches",
    Metric.CONSUME: "consume + ack",
    Metric.PUBLISH_ONE: "publish one, acked",
    Metric.TOPIC_CREATE: "session topics/s",
    Metric.TOPIC_MEMORY: "memory per topic",
    Metric.FANIN_P50: "fan-in p50",
    Metric.FANIN_P99: "fan-in p99",
}

# What each system's setting at each tier is, in words, for the table and README.
DURABILITY: Mapping[tuple[System, Tier], str] = MappingProxyType(
    {
        (System.TIDEGATE, Tier.WINDOW): "fsync: interval (0.1 s)",
        (System.TIDEGATE, Tier.FSYNC): "fsync: always (group commit)",
        (System.REDIS, Tier.WINDOW): "appendfsync everysec (~1 s)",
        (System.REDIS, Tier.FSYNC): "appendfsync always",
        (System.JETSTREAM, Tier.WINDOW): "default: sync every 2 min",
        (System.JETSTREAM, Tier.FSYNC): "sync_interval: always",
    }
)


@dataclass(frozen=True, slots=True)
class Figure:
    """One measurement of one metric on one system at one durability tier.

    ``count`` is how many operations the figure covers and ``complete`` is
    False when a time bound stopped the run before its planned count (the
    figure is then over what did complete). ``details`` holds secondary
    numbers (latency percentiles, raw memory deltas) for the JSON output.
    """

    system: System
    metric: Metric
    tier: Tier
    value: float
    count: int
    seconds: float
    complete: bool = True
    details: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not math.isfinite(self.value) or self.value < 0:
            raise ValueError(f"value is {self.value!r}; a figure must be a finite number >= 0")
        if self.count < 0:
            raise ValueError(f"count is {self.count}; it must be >= 0")
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def to_json(self) -> dict[str, object]:
        return {
            "system": self.system.value,
            "metric": self.metric.value,
            "unit": self.metric.unit,
            "tier": self.tier.value,
            "durability": DURABILITY[(self.system, self.tier)],
            "value": self.value,
            "count": self.count,
            "seconds": round(self.seconds, 3),
            "complete": self.complete,
            "details": dict(self.details),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Figure:
        """The inverse of ``to_json`` (for re-rendering a saved run)."""
        details = data.get("details", {})
        if not isinstance(details, Mapping):
            raise TypeError(f"details is {details!r}; it must be an object")
        return cls(
            system=System(str(data["system"])),
            metric=Metric(str(data["metric"])),
            tier=Tier(str(data["tier"])),
            value=float(str(data["value"])),
            count=int(str(data["count"])),
            seconds=float(str(data["seconds"])),
            complete=bool(data.get("complete", True)),
            details={str(k): float(str(v)) for k, v in details.items()},
        )


def combine(figures: Sequence[Figure]) -> list[Figure]:
    """One figure per (system, metric, tier): the median of its repetitions.

    The median run's figure is kept whole (its count, seconds and details)
    and gains ``runs``, ``min`` and ``max`` so the spread stays visible; it
    is complete only if every repetition was. Order follows first appearance.
    """
    groups: dict[tuple[System, Metric, Tier], list[Figure]] = {}
    for figure in figures:
        groups.setdefault((figure.system, figure.metric, figure.tier), []).append(figure)
    out = []
    for runs in groups.values():
        if len(runs) == 1:
            out.append(runs[0])
            continue
        ordered = sorted(runs, key=lambda f: f.value)
        middle = ordered[(len(ordered) - 1) // 2]
        spread = {"runs": float(len(runs)), "min": ordered[0].value, "max": ordered[-1].value}
        out.append(
            Figure(
                middle.system,
                middle.metric,
                middle.tier,
                middle.value,
                middle.count,
                middle.seconds,
                complete=all(f.complete for f in runs),
                details={**middle.details, **spread},
            )
        )
    return out


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no samples."""
    if not 0 <= q <= 100:
        raise ValueError(f"q is {q!r}; a percentile must be in [0, 100]")
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(0, min(len(ordered), rank) - 1)]


_VM_RSS = re.compile(r"^VmRSS:\s+(\d+)\s+kB\s*$", re.MULTILINE)


def parse_vm_rss(status: str) -> int:
    """Resident bytes from the text of ``/proc/PID/status``."""
    match = _VM_RSS.search(status)
    if match is None:
        raise ValueError("no 'VmRSS: N kB' line in the process status text")
    return int(match.group(1)) * 1024


def parse_stat_cpu(stat: str, ticks_per_s: int) -> float:
    """User + system CPU seconds from the text of ``/proc/PID/stat``.

    The command name (field 2) may hold spaces and parentheses, so fields
    are counted from the last ``)``: utime and stime are the 12th and 13th
    after it.
    """
    _, sep, rest = stat.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 13:
        raise ValueError("not the text of /proc/PID/stat: too few fields after the name")
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


_NATS_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def parse_nats_version(text: str) -> tuple[int, int, int]:
    """``nats-server --version`` output (``nats-server: v2.9.10``) as a tuple."""
    match = _NATS_VERSION.search(text)
    if match is None:
        raise ValueError(f"no version number in {text.strip()!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return (major, minor, patch)


def supports_sync_always(version: tuple[int, int, int]) -> bool:
    """Whether this nats-server accepts ``jetstream { sync_interval: always }``."""
    return version >= (2, 10, 0)


def non_loopback(addresses: Sequence[str]) -> list[str]:
    """The listening addresses (IP literals) that are not loopback.

    A server bound to the wildcard (0.0.0.0 or ::) is reachable off the
    machine, so it counts as not loopback; an IPv4-mapped loopback
    (``::ffff:127.0.0.1``, as gRPC reports its socket) is loopback.
    """
    outside = []
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if not (mapped or ip).is_loopback:
            outside.append(address)
    return outside


_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


def _hex_address(text: str) -> str:
    """An address of /proc/net/tcp{,6} (host-order 32-bit words in hex) as an IP literal."""
    raw = bytes.fromhex(text)
    # Each 32-bit word is printed in the host's (little-endian here) byte order.
    ordered = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(ordered))


def listening_addresses(net_tcp: str, inodes: Collection[int]) -> list[str]:
    """IPs that the sockets ``inodes`` listen on, from /proc/net/tcp or tcp6 text."""
    found = []
    for line in net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN or int(fields[9]) not in inodes:
            continue
        found.append(_hex_address(fields[1].rpartition(":")[0]))
    return found
