"""SIGKILL a writer at random moments; every acknowledged record must survive.

The child (``crash_writer.py``) appends under ``fsync=always`` from several
threads and prints each acknowledged record. After each kill the parent
reopens the log and checks: every acknowledged record is at its position
with its bytes; every record in the log is one the child really wrote
(nothing invented); each writer's records are in order with no gaps.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from broker.log import CommitLog, LogConfig
from tests.integration.log.crash_writer import CONFIG, make_payload, parse_payload
from tests.support import crash

pytestmark = [pytest.mark.crash, pytest.mark.slow]

WRITER = Path(__file__).with_name("crash_writer.py")
ROUNDS = 6
WRITERS = 3


def _run_and_kill(directory: Path, seed: int, delay_s: float) -> list[str]:
    """Start the writer, SIGKILL it ``delay_s`` after it is ready; return its full lines."""
    args = [str(directory), str(seed), str(WRITERS)]
    return crash.run_and_kill(WRITER, args, delay_s, ready_s=30, what="writer")


def _check(directory: Path, acknowledged: dict[int, tuple[int, int, str]]) -> int:
    with CommitLog.open(directory, LogConfig(segment_bytes=CONFIG.segment_bytes)) as log:
        records = dict(log.scan(log.start_position))
    last_seq: dict[int, int] = {}
    for position in sorted(records):
        payload = records[position]
        writer, seq = parse_payload(payload)
        assert payload == make_payload(writer, seq), f"invented record at {position}"
        assert seq == last_seq.get(writer, -1) + 1, f"writer {writer} out of order at {position}"
        last_seq[writer] = seq
    for position, (writer, seq, digest) in acknowledged.items():
        assert position in records, f"acknowledged record {writer}:{seq} at {position} is lost"
        assert parse_payload(records[position]) == (writer, seq)
        assert hashlib.sha256(records[position]).hexdigest() == digest
    return len(records)


def test_acknowledged_records_survive_sigkill(tmp_path: Path) -> None:
    rng = random.Random(20240607)
    directory = tmp_path / "log"
    acknowledged: dict[int, tuple[int, int, str]] = {}
    for round_ in range(ROUNDS):
        lines = _run_and_kill(directory, seed=round_, delay_s=rng.uniform(0.02, 0.4))
        for line in lines:
            position, writer, seq, digest = line.split()
            acknowledged[int(position)] = (int(writer), int(seq), digest)
        held = _check(directory, acknowledged)
        assert held >= len(acknowledged)
    assert acknowledged, "no append was acknowledged before the kills: the test proved nothing"
