"""The durable memory of finished requests, so Status answers across restarts (pure codecs).

The live server remembers the final :class:`RequestView` of its last
``finished_capacity`` finished requests (Status and Cancel answer from it).
The submit and done records in ``requests`` cannot carry that memory over a
restart: the log is trimmed below the restart point at every commit, and
holding it back for up to 100,000 finished requests would pin the log. So
each final view is also written to a journal of its own, the server-private
queue ``finished`` (the empty namespace), as one small *entry* record in the
same store write as the request's done record (before it: a torn write that
kept the done record kept the entry too; no extra fsync). The view is the
entry's body, not a property: a reason the end mark and the done record carry
(64 KiB a property value) must never make the entry, and with it the write
and the runtime, fail.

A journal only appended to would pin the log as well, so now and then the
runtime *compacts* it: the store folds everything below the journal's end
``E`` into one *snapshot* (the last ``finished_capacity`` views,
zlib-compressed JSON) that says it ``covers`` ``E``, makes it durable, and
trims the journal below ``E``. A snapshot is written as one or more *part*
records in one store write, each at most the store's part size (its largest
inline message), so that no message limit can refuse it and no part takes
long to decode; a snapshot counts once all its parts are read (a crash may
tear the last ones off, before the trim: the one before it still counts).
Reading the journal back (a restart, or the next compaction) takes the last
snapshot and then every entry at or above what it covers, in log order: an
entry written while the snapshot was being made sits between ``E`` and the
snapshot and is not in it, and entries left below ``E`` by a crash before the
trim are in it already. A request that appears twice (finished again after a
torn write) counts where it finished last. :class:`FinishedFold` is that rule,
shared by both stores.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from scheduler.runtime.values import RequestView, State

__all__ = [
    "ENTRY_PROPERTIES",
    "FINISHED_TOPIC",
    "Body",
    "FinishedFold",
    "entry_body",
    "snapshot_parts",
    "snapshot_properties",
]

FINISHED_TOPIC = "finished"  # namespace "": entries and snapshots of final views

_ENTRY = "finished"
_SNAPSHOT = "finished-snapshot"

ENTRY_PROPERTIES: Mapping[str, str] = MappingProxyType({"kind": _ENTRY})


def _row(view: RequestView) -> list[object]:
    return [
        view.request_id,
        view.tenant,
        view.state,
        view.priority,
        view.reply_topic,
        view.reply_lite_topic,
        view.reply_offset,
        view.chunks,
        view.attempts,
        view.worker_id,
        view.input_tokens,
        view.output_tokens,
        view.reason,
        view.admitted_at,
    ]


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"not an integer: {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not a string: {value!r}")
    return value


def _view(row: Any) -> RequestView:
    """The view a row encodes; ValueError or TypeError if it is damaged."""
    if not isinstance(row, list) or len(row) != 14:
        raise ValueError(f"not a finished-view row: {row!r}")
    state = _str(row[2])
    at = row[13]
    if state not in State.FINAL or not isinstance(at, int | float) or not math.isfinite(at):
        raise ValueError(f"not a final state or admission time: {row!r}")
    return RequestView(
        request_id=_str(row[0]),
        tenant=_str(row[1]),
        state=state,
        priority=_int(row[3]),
        reply_topic=_str(row[4]),
        reply_lite_topic=_str(row[5]),
        reply_offset=_int(row[6]),
        chunks=_int(row[7]),
        attempts=_int(row[8]),
        worker_id=_str(row[9]),
        input_tokens=_int(row[10]),
        output_tokens=_int(row[11]),
        reason=_str(row[12]),
        admitted_at=float(at),
    )


def _encoded(view: RequestView) -> bytes:
    # UTF-8 as it is (no \\u escapes): a row is about as long as what it holds.
    return json.dumps(_row(view), ensure_ascii=False, separators=(",", ":")).encode()


def entry_body(view: RequestView) -> bytes:
    """The body of one journal entry (its properties are :data:`ENTRY_PROPERTIES`)."""
    return _encoded(view)


def snapshot_properties(covers: int, part: int = 0, parts: int = 1) -> dict[str, str]:
    return {"kind": _SNAPSHOT, "covers": str(covers), "part": str(part), "parts": str(parts)}


def snapshot_parts(views: Iterable[RequestView], part_bytes: int) -> list[bytes]:
    """The bodies of a snapshot of ``views``, in order, each at most ``part_bytes``
    (at least one). Rows are encoded one by one and each part compressed on its
    own, so no single call holds the GIL for long. A view that cannot fit a part
    even alone (a reason of many KiB under a tiny ``part_bytes``) is left out."""
    parts: list[bytes] = []
    rows: list[bytes] = []
    size = 2
    for view in views:
        row = _encoded(view)
        if rows and size + len(row) + 1 > part_bytes:
            parts += _packed(rows, part_bytes)
            rows, size = [], 2
        rows.append(row)
        size += len(row) + 1
    if rows:
        parts += _packed(rows, part_bytes)
    return parts or [zlib.compress(b"[]", 6)]


def _packed(rows: list[bytes], part_bytes: int) -> list[bytes]:
    body = zlib.compress(b"[" + b",".join(rows) + b"]", 6)
    if len(body) <= part_bytes:
        return [body]
    if len(rows) == 1:
        return []  # over the limit alone: left out (see snapshot_parts)
    half = len(rows) // 2  # incompressible: rows that fit raw may not compressed
    return _packed(rows[:half], part_bytes) + _packed(rows[half:], part_bytes)


Body = bytes | Callable[[], bytes]  # a record's body, or how to read it


class FinishedFold:
    """Folds the journal's records, fed in offset order, into the last ``limit``
    final views (see the module docstring). Only the last whole snapshot's
    bodies are read (``body`` may be a callable, called then); a damaged record
    is skipped, and so is a snapshot whose parts did not all arrive."""

    __slots__ = ("_building", "_entries", "_snapshot", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: list[tuple[int, RequestView]] = []
        self._snapshot: tuple[int, list[Body]] | None = None  # covers, its parts
        self._building: tuple[int, int, list[Body]] | None = None  # covers, parts, so far

    def add(self, offset: int, properties: Mapping[str, str], body: Body) -> None:
        kind = properties.get("kind")
        try:
            if kind == _ENTRY:
                # An entry written before views moved to the body has it as a property.
                raw = properties.get("view")
                if raw is None:
                    raw = (body if isinstance(body, bytes) else body()).decode()
                self._entries.append((offset, _view(json.loads(raw))))
            elif kind == _SNAPSHOT:
                self._add_part(properties, body)
        except (KeyError, ValueError, TypeError):
            return  # damaged: as if it were not there (json's errors are ValueErrors)

    def _add_part(self, properties: Mapping[str, str], body: Body) -> None:
        covers = int(properties["covers"])
        part = int(properties.get("part", "0"))
        parts = int(properties.get("parts", "1"))
        if not 0 <= part < parts:
            raise ValueError(f"part {part} of {parts}")
        if part == 0:
            self._building = (covers, parts, [])
        building = self._building
        if building is None or building[:2] != (covers, parts) or len(building[2]) != part:
            self._building = None  # a part missing before this one: not a whole snapshot
            return
        building[2].append(body)
        if len(building[2]) == parts:
            self._snapshot = (covers, building[2])
            self._building = None

    def entries_after_snapshot(self) -> int:
        """Entries the last snapshot does not hold (what a compaction would fold in)."""
        covers = 0 if self._snapshot is None else self._snapshot[0]
        return sum(1 for offset, _ in self._entries if offset >= covers)

    def views(self) -> list[RequestView]:
        """The last ``limit`` final views, the oldest-finished first."""
        folded: OrderedDict[str, RequestView] = OrderedDict()
        covers = 0
        if self._snapshot is not None:
            covers, bodies = self._snapshot
            for body in bodies:
                for view in _snapshot_views(body if isinstance(body, bytes) else body()):
                    folded[view.request_id] = view
        for offset, view in self._entries:
            if offset >= covers:
                folded.pop(view.request_id, None)  # finished again: it counts from here
                folded[view.request_id] = view
        while len(folded) > self.limit:
            folded.popitem(last=False)
        return list(folded.values())


def _snapshot_views(body: bytes) -> Sequence[RequestView]:
    try:
        rows = json.loads(zlib.decompress(body))
        if not isinstance(rows, list):
            return ()
        return [_view(row) for row in rows]
    except (ValueError, TypeError, zlib.error):
        return ()  # damaged: what this part held is forgotten, the rest is not
