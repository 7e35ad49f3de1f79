"""SIGKILL a writer at random moments; every acknowledged record must survive.

The child (``crash_writer.py``) appends under ``fsync=always`` from several
threads and prints each acknowledged record. After each kill the parent
reopens the log and checks: every acknowledged record is at its position
with its bytes; every record in the log is one the child really wrote
(nothing invented); each writer's records are in order with no gaps.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from broker.log import CommitLog, LogConfig
from tests.integration.log.crash_writer import CONFIG, make_payload, parse_payload

pytestmark = [pytest.mark.crash, pytest.mark.slow]

WRITER = Path(__file__).with_name("crash_writer.py")
REPO = Path(__file__).resolve().parents[3]
ROUNDS = 6
WRITERS = 3


def _run_and_kill(directory: Path, seed: int, delay_s: float) -> list[str]:
    """Start the writer, SIGKILL it ``delay_s`` after it is ready; return its full lines."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, str(WRITER), str(directory), str(seed), str(WRITERS)],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    lines: list[bytes] = []
    ready = threading.Event()

    def drain() -> None:
        assert child.stdout is not None
        for line in child.stdout:  # a line cut by the kill has no newline: dropped below
            if line == b"ready\n":
                ready.set()
            else:
                lines.append(line)
        ready.set()

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        assert ready.wait(30), "the writer did not start"
        time.sleep(delay_s)  # the "random moment"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
        reader.join(30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return [line.decode() for line in lines if line.endswith(b"\n")]


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
