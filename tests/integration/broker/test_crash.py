"""SIGKILL a publisher at random moments; every acknowledged message must survive.

The child (``crash_publisher.py``) publishes under ``fsync=always`` from
several threads and prints each acknowledged (queue, offset). After each kill
the parent reopens the broker (the index replays what the log holds beyond
it) and checks: every acknowledged message is at its offset with its bytes;
every message in every queue is one the child really wrote (nothing
invented); each queue's offsets are contiguous and each writer's messages
keep their order in it.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from broker import Broker, NotFound
from tests.integration.broker.crash_publisher import LITES, SETTINGS, TOPIC, make_body, parse_body
from tests.support import crash

pytestmark = [pytest.mark.crash, pytest.mark.slow]

CHILD = Path(__file__).with_name("crash_publisher.py")
WRITERS = 3

Ack = tuple[str, int, int, str]  # queue, offset, position, sha256


def run_and_kill(directory: Path, round_: int, delay_s: float) -> list[Ack]:
    """Start the publisher, SIGKILL it ``delay_s`` after it is ready; return its acks."""
    lines = crash.run_and_kill(
        CHILD, [str(directory), str(round_), str(WRITERS)], delay_s, ready_s=60, what="publisher"
    )
    acks = []
    for line in lines:
        queue, offset, position, digest = line.split()
        acks.append((queue, int(offset), int(position), digest))
    return acks


def check(broker: Broker, acknowledged: list[Ack], lost_from: int | None = None) -> int:
    """Verify the store; ``lost_from``: positions at or past it may be gone (a cut tail)."""
    for queue, offset, position, digest in acknowledged:
        if lost_from is not None and position >= lost_from:
            continue
        got = broker.read(queue, offset, 1)
        assert got, f"acknowledged {queue}@{offset} is lost"
        assert got[0].offset == offset
        assert got[0].position == position
        body = b"".join(broker.open_body(got[0]))
        assert hashlib.sha256(body).hexdigest() == digest, f"{queue}@{offset} changed"
    total = 0
    for lite in LITES:
        try:
            messages = broker.read(f"{TOPIC}/{lite}", 0, 10_000)
        except NotFound:
            continue
        assert [m.offset for m in messages] == list(range(len(messages))), f"gap in {lite}"
        last: dict[tuple[int, int], int] = {}
        for message in messages:
            body = b"".join(broker.open_body(message))
            round_, writer, seq = parse_body(body)
            assert body == make_body(round_, writer, seq), f"invented message in {lite}"
            assert seq > last.get((round_, writer), -1), f"writer {writer} out of order in {lite}"
            last[round_, writer] = seq
        total += len(messages)
    stats = broker.stats()
    assert stats.index_covered == stats.log_end
    return total


def test_acknowledged_messages_survive_sigkill(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    directory = tmp_path / "store"
    acknowledged: list[Ack] = []
    for round_ in range(5):
        acknowledged += run_and_kill(directory, round_, delay_s=rng.uniform(0.05, 0.5))
        with Broker.open(directory, SETTINGS) as broker:
            held = check(broker, acknowledged)
        assert held >= len(acknowledged)
    assert acknowledged, "no publish was acknowledged before the kills: the test proved nothing"


def test_a_torn_log_tail_after_a_kill_is_cut_and_the_index_steps_back(tmp_path: Path) -> None:
    """Cut the last bytes of the log as a torn write would: what stays is consistent."""
    rng = random.Random(7)
    directory = tmp_path / "store"
    acknowledged = run_and_kill(directory, 0, delay_s=0.3)
    assert acknowledged
    with Broker.open(directory, SETTINGS) as broker:
        check(broker, acknowledged)  # the index now covers the whole log
    segment = max((directory / "log").glob("*.log"))
    base = int(segment.name.split(".")[0])
    size = segment.stat().st_size
    cut_at = rng.randint(size // 2, size - 1)
    with segment.open("r+b") as handle:
        handle.truncate(cut_at)
    with Broker.open(directory, SETTINGS) as broker:
        # The record that straddles the cut, and all after it, are gone;
        # everything before it is intact and the index no longer points past it.
        end = broker.stats().log_end
        assert base <= end <= base + cut_at
        check(broker, acknowledged, lost_from=end)
        result = broker.publish(TOPIC, make_body(9, 0, 0), lite_topics=["s-0"])
        assert result.position == end
        assert result.offsets[0] == len(broker.read(f"{TOPIC}/s-0", 0, 10_000)) - 1
