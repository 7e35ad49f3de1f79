"""A Hypothesis state machine: the commit log against a plain dict of records.

Random appends, reads, scans, reclaims and close/reopen cycles; after every
step the log must hold exactly the model's records, in order, at the same
positions.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from broker.errors import NotFound
from broker.log import CommitLog, LogConfig
from broker.log.record import HEADER_SIZE

CONFIG = LogConfig(segment_bytes=4096, max_record_bytes=3000)


def _no_fsync(fd: int) -> None:
    """Durability is the crash tests' business; here only the logic counts."""


class CommitLogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="commitlog-model-"))
        self.log = CommitLog.open(self.directory, CONFIG, fsync=_no_fsync)
        self.records: dict[int, bytes] = {}
        self.end = 0

    @rule(batch=st.lists(st.binary(max_size=3000), min_size=1, max_size=6))
    def append(self, batch: list[bytes]) -> None:
        positions = self.log.append(batch)
        for position, payload in zip(positions, batch, strict=True):
            assert position == self.end  # contiguous, across rotations too
            self.records[position] = payload
            self.end = position + HEADER_SIZE + len(payload)

    @precondition(lambda self: self.records)
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        position = data.draw(st.sampled_from(sorted(self.records)))
        assert self.log.read(position) == self.records[position]

    @precondition(lambda self: self.records)
    @rule(data=st.data())
    def scan_from(self, data: st.DataObject) -> None:
        start = data.draw(st.sampled_from(sorted(self.records)))
        expected = [(p, self.records[p]) for p in sorted(self.records) if p >= start]
        assert list(self.log.scan(start)) == expected

    @precondition(lambda self: self.records)
    @rule(data=st.data())
    def reclaim_below(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from(sorted(self.records)))
        self.log.delete_segments_below(target)
        start = self.log.start_position
        assert start <= max(target, self.log.segments()[-1].base)
        dropped = [p for p in self.records if p < start]
        for position in dropped:
            del self.records[position]
            try:
                self.log.read(position)
            except NotFound:
                continue
            raise AssertionError(f"reclaimed position {position} is still readable")

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = CommitLog.open(self.directory, CONFIG, fsync=_no_fsync)
        assert self.log.recovery.clean

    @invariant()
    def log_matches_model(self) -> None:
        assert self.log.end_position == self.end
        if self.records:
            assert self.log.start_position == min(self.records)
        assert [p for p, _ in self.log.scan(self.log.start_position)] == sorted(self.records)

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


CommitLogMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None
)
TestCommitLogModel = CommitLogMachine.TestCase
