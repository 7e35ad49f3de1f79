"""The durable memory of finished requests, so Status answers across restarts (pure codecs).

The live server remembers the final :class:`RequestView` of its last
``finished_capacity`` finished requests (Status and Cancel answer from it).
The submit and done records in ``requests`` cannot carry that memory over a
restart: the log is trimmed below the restart point at every commit, and
holding it back for up to 100,000 finished requests would pin the log. So
each final view is also written to a journal of its own, the server-private
queue ``finished`` (the empty namespace), as one small *entry* record in the
same store write as the request's done record (before it: a torn write that
kept the done record kept the entry too; no extra fsync).

A journal only appended to would pin the log as well, so now and then the
runtime *compacts* it: the store folds everything below the journal's end
``E`` into one *snapshot* record (the last ``finished_capacity`` views,
zlib-compressed JSON) that says it ``covers`` ``E``, makes it durable, and
trims the journal below ``E``. Reading the journal back (a restart, or the
next compaction) takes the last snapshot and then every entry at or above
what it covers, in log order: an entry written while the snapshot was being
made sits between ``E`` and the snapshot and is not in it, and entries left
below ``E`` by a crash before the trim are in it already. A request that
appears twice (finished again after a torn write) counts where it finished
last. :class:`FinishedFold` is that rule, shared by both stores.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from scheduler.runtime.values import RequestView, State

__all__ = [
    "FINISHED_TOPIC",
    "FinishedFold",
    "entry_properties",
    "snapshot_body",
    "snapshot_properties",
]

FINISHED_TOPIC = "finished"  # namespace "": entries and snapshots of final views

_ENTRY = "finished"
_SNAPSHOT = "finished-snapshot"


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


def entry_properties(view: RequestView) -> dict[str, str]:
    """The properties of one journal entry (its body is empty)."""
    return {"kind": _ENTRY, "view": json.dumps(_row(view), separators=(",", ":"))}


def snapshot_properties(covers: int) -> dict[str, str]:
    return {"kind": _SNAPSHOT, "covers": str(covers)}


def snapshot_body(views: Iterable[RequestView]) -> bytes:
    rows = [_row(view) for view in views]
    return zlib.compress(json.dumps(rows, separators=(",", ":")).encode(), 6)


class FinishedFold:
    """Folds the journal's records, fed in offset order, into the last ``limit``
    final views (see the module docstring). Only the last snapshot's body is
    read (``body`` may be a callable, called then); a damaged record is skipped."""

    __slots__ = ("_entries", "_snapshot", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: list[tuple[int, RequestView]] = []
        self._snapshot: tuple[int, bytes | Callable[[], bytes]] | None = None  # covers, body

    def add(
        self, offset: int, properties: Mapping[str, str], body: bytes | Callable[[], bytes]
    ) -> None:
        kind = properties.get("kind")
        try:
            if kind == _ENTRY:
                self._entries.append((offset, _view(json.loads(properties["view"]))))
            elif kind == _SNAPSHOT:
                self._snapshot = (int(properties["covers"]), body)
        except (KeyError, ValueError, TypeError):
            return  # damaged: as if it were not there (json's errors are ValueErrors)

    def entries_after_snapshot(self) -> int:
        """Entries the last snapshot does not hold (what a compaction would fold in)."""
        covers = 0 if self._snapshot is None else self._snapshot[0]
        return sum(1 for offset, _ in self._entries if offset >= covers)

    def views(self) -> list[RequestView]:
        """The last ``limit`` final views, the oldest-finished first."""
        folded: OrderedDict[str, RequestView] = OrderedDict()
        covers = 0
        if self._snapshot is not None:
            covers, body = self._snapshot
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
        return ()  # damaged: what it held is forgotten, the entries after it are not
