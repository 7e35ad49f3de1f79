"""Tails: the newest messages of subscribed queues, as reads see them."""

from __future__ import annotations

from types import MappingProxyType

from broker.tail import Tails
from broker.types import QueueName

NAME = QueueName("acme", "chat", "s-1")
KEY = NAME.key
NO_PROPS: MappingProxyType[str, str] = MappingProxyType({})


def _add(tails: Tails, first: int, bodies: list[bytes], *, qid: int = 1, key: bytes = KEY) -> None:
    tails.add(
        key,
        qid,
        first,
        positions=[1000 + 100 * (first + i) for i in range(len(bodies))],
        timestamp=5.0,
        properties=NO_PROPS,
        bodies=bodies,
    )


def test_a_read_inside_the_tail_is_answered_from_it() -> None:
    tails = Tails()
    _add(tails, 0, [b"a", b"b"])
    _add(tails, 2, [b"c"])
    got = tails.read(NAME, 1, 1, 3, log_start=0, attempt=2)
    assert got is not None
    assert [(m.offset, m.body, m.position, m.size, m.attempt) for m in got] == [
        (1, b"b", 1100, 1, 2),
        (2, b"c", 1200, 1, 2),
    ]
    assert all(m.queue == NAME and m.timestamp == 5.0 and not m.chunked for m in got)
    assert tails.hits == 1
    # Starting before the tail, or past its end: not answered.
    assert tails.read(NAME, 1, 0, 4, log_start=0) is None
    assert tails.read(QueueName("acme", "chat", "other"), 1, 0, 1, log_start=0) is None


def test_per_queue_and_total_bounds() -> None:
    tails = Tails(per_queue=3, max_bytes=10)
    _add(tails, 0, [b"12", b"34", b"56", b"78"])
    assert tails.read(NAME, 1, 0, 1, log_start=0) is None  # the oldest went
    assert tails.read(NAME, 1, 1, 4, log_start=0) is not None
    assert tails.held_bytes == 6
    other = QueueName("acme", "chat", "s-2")
    _add(tails, 0, [b"abcdef"], key=other.key)  # 12 bytes in all: the least recent queue goes
    assert tails.read(NAME, 1, 1, 2, log_start=0) is None
    assert tails.read(other, 1, 0, 1, log_start=0) is not None
    assert (len(tails), tails.held_bytes) == (1, 6)


def test_a_gap_a_large_body_or_a_new_incarnation_restart_the_tail() -> None:
    tails = Tails(max_body_bytes=4)
    _add(tails, 0, [b"a", b"b"])
    _add(tails, 5, [b"f"])  # offsets 2..4 were not seen here: keep only what follows
    assert tails.read(NAME, 1, 0, 1, log_start=0) is None
    assert tails.read(NAME, 1, 5, 6, log_start=0) is not None
    _add(tails, 6, [b"g", b"too large", b"i"])
    assert tails.read(NAME, 1, 6, 7, log_start=0) is None
    got = tails.read(NAME, 1, 8, 9, log_start=0)
    assert got is not None
    assert [m.body for m in got] == [b"i"]
    assert tails.held_bytes == 1
    # The queue was removed and made again (another qid): its old tail never answers.
    assert tails.read(NAME, 2, 8, 9, log_start=0) is None
    _add(tails, 0, [b"new"], qid=2)
    got = tails.read(NAME, 2, 0, 1, log_start=0)
    assert got is not None
    assert got[0].body == b"new"
    assert tails.held_bytes == 3


def test_records_retention_deleted_are_not_served_and_drop_forgets() -> None:
    tails = Tails()
    _add(tails, 0, [b"a", b"b"])
    assert tails.read(NAME, 1, 0, 2, log_start=1001) is None  # the first record is gone
    tails.drop(KEY)
    assert tails.read(NAME, 1, 0, 2, log_start=0) is None
    assert (len(tails), tails.held_bytes) == (0, 0)
