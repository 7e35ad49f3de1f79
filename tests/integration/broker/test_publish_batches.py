"""Several batches in one append, and runs of one destination inside a batch."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from broker import InvalidArgument, MessageTooLarge, PublishRequest, QueueName
from tests.integration.broker.conftest import OpenBroker


def test_each_batch_is_all_or_nothing_on_its_own(open_broker: OpenBroker) -> None:
    broker = open_broker()
    told: list[dict[bytes, int]] = []
    broker.add_publish_listener(lambda ends: told.append(dict(ends)))
    lites = ("s-1",)
    good = [PublishRequest("t", f"a{i}".encode(), lites) for i in range(3)]
    bad = [PublishRequest("t", b"x", lites), PublishRequest("t", b"y", ("bad name",))]
    other = [PublishRequest("u", b"b0"), PublishRequest("t", b"a3", lites)]
    first, second, third, empty = broker.publish_batches([good, bad, other, []])
    assert isinstance(second, InvalidArgument)
    assert "bad name" in str(second)
    assert not isinstance(first, BaseException)
    assert not isinstance(third, BaseException)
    assert [r.offsets for r in first] == [(0,), (1,), (2,)]
    assert [r.offsets for r in third] == [(0,), (3,)]
    assert empty == []
    assert len({r.position for r in [*first, *third]}) == 5
    assert [m.body for m in broker.read("t/s-1")] == [b"a0", b"a1", b"a2", b"a3"]
    assert [m.body for m in broker.read("u")] == [b"b0"]
    assert told == [{b"\x00t/s-1": 4, b"\x00u": 1}]  # one append, one notice
    assert broker.stats().published_messages == 5


def test_nothing_valid_writes_nothing(open_broker: OpenBroker) -> None:
    broker = open_broker()
    [outcome] = broker.publish_batches([[PublishRequest("t", b"x", ("no good",))]])
    assert isinstance(outcome, InvalidArgument)
    assert broker.stats().log_end == 0
    assert broker.publish_batches([]) == []


def test_runs_and_other_shapes_interleave_in_order(open_broker: OpenBroker) -> None:
    broker = open_broker(chunk_bytes=4096)
    one, two = ("s-1",), ("s-1", "s-2")
    props: Mapping[str, str] = {"k": "v"}
    requests = [
        *(PublishRequest("t", f"r{i}".encode(), one) for i in range(5)),  # a run
        PublishRequest("t", b"both", two),  # two queues: one record, two offsets
        *(PublishRequest("t", f"p{i}".encode(), one, props) for i in range(3)),  # run, properties
        PublishRequest("t", b"z" * 9000, one),  # chunked
        PublishRequest("t", b"after", one),
        *(PublishRequest("t", f"q{i}".encode()) for i in range(2)),  # the parent queue
        PublishRequest("t", b"s2", ("s-2",)),
    ]
    results = broker.publish_batch(requests)
    assert [r.offsets for r in results] == [
        (0,),
        (1,),
        (2,),
        (3,),
        (4,),
        (5, 0),
        (6,),
        (7,),
        (8,),
        (9,),
        (10,),
        (0,),
        (1,),
        (1,),
    ]
    positions = [r.position for r in results]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    got = broker.read("t/s-1", 0, 100)
    assert [m.offset for m in got] == list(range(11))
    assert [m.body for m in got if not m.chunked] == [
        *(f"r{i}".encode() for i in range(5)),
        b"both",
        *(f"p{i}".encode() for i in range(3)),
        b"after",
    ]
    assert [m.properties for m in got[6:9]] == [props] * 3
    assert got[9].chunked
    assert got[9].size == 9000
    assert b"".join(broker.open_body(got[9])) == b"z" * 9000
    assert [m.body for m in broker.read("t/s-2")] == [b"both", b"s2"]
    assert [m.body for m in broker.read("t")] == [b"q0", b"q1"]
    # The queues' end offsets and first positions survive a reopen (registry staged per run).
    broker.close()
    again = open_broker(chunk_bytes=4096)
    assert again.queue_info(QueueName("", "t", "s-1")).next_offset == 11
    assert again.publish("t", b"next", lite_topics=["s-1"]).offsets == (11,)


def test_a_run_still_checks_every_body(open_broker: OpenBroker) -> None:
    broker = open_broker(max_message_bytes=10)
    lites = ("s-1",)
    with pytest.raises(MessageTooLarge, match="11 bytes"):
        broker.publish_batch(
            [PublishRequest("t", b"ok", lites), PublishRequest("t", b"x" * 11, lites)]
        )
    with pytest.raises(InvalidArgument, match="body is str"):
        broker.publish_batch(
            [PublishRequest("t", b"ok", lites), PublishRequest("t", "text", lites)]  # type: ignore[arg-type]
        )
    assert broker.stats().log_end == 0
