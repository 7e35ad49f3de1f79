"""Worker text kept in records is bounded (scheduler.runtime.records.bounded_text)."""

from __future__ import annotations

from scheduler.runtime.records import TEXT_BYTES, bounded_text


def test_text_within_the_bound_is_kept_as_it_is() -> None:
    assert bounded_text("") == ""
    assert bounded_text("stop") == "stop"
    exact = "a" * TEXT_BYTES
    assert bounded_text(exact) == exact


def test_longer_text_is_cut_at_a_character_boundary_with_a_note() -> None:
    text = "é" * 3000  # 6,000 bytes of two-byte characters
    cut = bounded_text(text)
    assert len(cut.encode()) <= TEXT_BYTES
    head, _, note = cut.partition(" [... ")
    assert set(head) == {"é"}  # no half character left at the cut
    assert note == "6000 bytes, cut]"


def test_a_tiny_bound_still_holds() -> None:
    cut = bounded_text("x" * 100, limit=30)
    assert len(cut.encode()) <= 30
    assert cut.endswith("bytes, cut]")
