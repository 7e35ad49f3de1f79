"""The finished journal's codecs and fold: parts that fit the store's limit, and
a snapshot that counts only when whole."""

from __future__ import annotations

import random
from dataclasses import replace

from scheduler.runtime.finished import (
    ENTRY_PROPERTIES,
    FinishedFold,
    entry_body,
    snapshot_parts,
    snapshot_properties,
)
from scheduler.runtime.values import RequestView
from tests.support.views import finished_view


def noisy(count: int, size: int) -> list[RequestView]:
    noise = random.Random(3)
    return [finished_view(f"r{i}", reason=noise.randbytes(size).hex()) for i in range(count)]


def test_a_snapshot_is_cut_into_parts_within_the_limit_and_read_back_whole() -> None:
    views = noisy(50, 3_000)  # ~300 KB of rows that compress about by half
    parts = snapshot_parts(views, 64 * 1024)
    assert len(parts) > 2
    assert all(len(part) <= 64 * 1024 for part in parts)
    fold = FinishedFold(100)
    for at, part in enumerate(parts):
        fold.add(at, snapshot_properties(10, at, len(parts)), part)
    assert fold.views() == views
    assert fold.entries_after_snapshot() == 0


def test_a_snapshot_torn_before_its_last_part_does_not_count() -> None:
    old, new = noisy(4, 2_000), noisy(8, 2_000)
    fold = FinishedFold(100)
    # The old snapshot (covers 3) at 3, two entries after it, then the new
    # compaction's parts (covers 6) of which a crash kept only the first ones.
    fold.add(3, snapshot_properties(3), snapshot_parts(old, 1 << 20)[0])
    late = [finished_view("late-1"), finished_view("late-2")]
    fold.add(4, ENTRY_PROPERTIES, entry_body(late[0]))
    fold.add(5, ENTRY_PROPERTIES, entry_body(late[1]))
    parts = snapshot_parts(new, 8 * 1024)
    assert len(parts) > 1
    for at, part in enumerate(parts[:-1]):
        fold.add(6 + at, snapshot_properties(6, at, len(parts)), part)
    assert fold.views() == [*old, *late]
    assert fold.entries_after_snapshot() == 2
    # A part that does not follow its predecessor (one lost between) is no better.
    fold.add(20, snapshot_properties(20, 0, 3), parts[0])
    fold.add(21, snapshot_properties(20, 2, 3), parts[2])
    assert fold.views() == [*old, *late]


def test_a_view_too_large_for_a_part_alone_is_left_out() -> None:
    small, huge = (
        finished_view("small"),
        finished_view("huge", reason=random.Random(5).randbytes(9_000).hex()),
    )
    parts = snapshot_parts([small, huge, replace(small, request_id="after")], 4096)
    fold = FinishedFold(10)
    for at, part in enumerate(parts):
        fold.add(at, snapshot_properties(1, at, len(parts)), part)
    assert [v.request_id for v in fold.views()] == ["small", "after"]
    # No view at all is still a snapshot: it says what it covers.
    (empty,) = snapshot_parts([], 4096)
    fold.add(9, snapshot_properties(9), empty)
    assert (fold.views(), fold.entries_after_snapshot()) == ([], 0)


def test_an_entry_written_with_its_view_as_a_property_is_still_read() -> None:
    # The journal's first entries carried the view in a "view" property.
    view = finished_view("old")
    legacy = {"kind": "finished", "view": entry_body(view).decode()}
    fold = FinishedFold(10)
    fold.add(0, legacy, b"")
    assert fold.views() == [view]
