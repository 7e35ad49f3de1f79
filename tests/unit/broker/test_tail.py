"""Tails: the newest messages of subscribed queues, as reads see them."""

from __future__ import annotations

from types import MappingProxyType

from broker.tail import MESSAGE_OVERHEAD, Tails
from broker.types import QueueName

NAME = QueueName("acme", "chat", "s-1")
KEY = NAME.key
NO_PROPS: MappingProxyType[str, str] = MappingProxyType({})


def _add(
    tails: Tails,
    first: int,
    bodies: list[bytes],
    *,
    qid: int = 1,
    key: bytes = KEY,
    properties_bytes: int = 2,
) -> None:
    tails.add(
        key,
        qid,
        first,
        positions=[1000 + 100 * (first + i) for i in range(len(bodies))],
        timestamp=5.0,
        properties=NO_PROPS,
        properties_bytes=properties_bytes,
        bodies=bodies,
    )


def _held(*bodies: bytes, properties_bytes: int = 2) -> int:
    """What kept messages count towards the bound."""
    return sum(len(b) + properties_bytes + MESSAGE_OVERHEAD for b in bodies)


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
    three = _held(b"12", b"34", b"56")
    tails = Tails(per_queue=3, max_bytes=three + 10)
    _add(tails, 0, [b"12", b"34", b"56", b"78"])
    assert tails.read(NAME, 1, 0, 1, log_start=0) is None  # the oldest went
    assert tails.read(NAME, 1, 1, 4, log_start=0) is not None
    assert tails.held_bytes == three
    other = QueueName("acme", "chat", "s-2")
    _add(tails, 0, [b"abcdef"], key=other.key)  # over the bound: the least recent queue goes
    assert tails.read(NAME, 1, 1, 2, log_start=0) is None
    assert tails.read(other, 1, 0, 1, log_start=0) is not None
    assert (len(tails), tails.held_bytes) == (1, _held(b"abcdef"))


def test_properties_count_towards_the_bound_and_large_ones_are_not_kept() -> None:
    tails = Tails(max_body_bytes=100)
    _add(tails, 0, [b"a"], properties_bytes=50)
    assert tails.held_bytes == _held(b"a", properties_bytes=50)
    _add(tails, 1, [b"b"], properties_bytes=101)  # not kept: the tail restarts after it
    assert tails.read(NAME, 1, 0, 1, log_start=0) is None
    assert tails.held_bytes == 0
    _add(tails, 2, [b"c"])
    assert tails.read(NAME, 1, 2, 3, log_start=0) is not None


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
    assert tails.held_bytes == _held(b"i")
    # The queue was removed and made again (another qid): its old tail never answers.
    assert tails.read(NAME, 2, 8, 9, log_start=0) is None
    _add(tails, 0, [b"new"], qid=2)
    got = tails.read(NAME, 2, 0, 1, log_start=0)
    assert got is not None
    assert got[0].body == b"new"
    assert tails.held_bytes == _held(b"new")


def test_records_retention_deleted_are_not_served_and_drop_forgets() -> None:
    tails = Tails()
    _add(tails, 0, [b"a", b"b"])
    assert tails.read(NAME, 1, 0, 2, log_start=1001) is None  # the first record is gone
    tails.drop(KEY)
    assert tails.read(NAME, 1, 0, 2, log_start=0) is None
    assert (len(tails), tails.held_bytes) == (0, 0)
