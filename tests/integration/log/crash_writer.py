"""Child process for the crash tests: append under ALWAYS, print every acknowledgement.

    python crash_writer.py DIRECTORY SEED WRITERS

Each writer thread appends small batches of records whose bytes follow from
(writer, seq) alone, so the parent can tell an invented record from a real
one. After ``append`` returns, the thread prints one line per record,
``position writer seq sha256``, and flushes: a printed line is an
acknowledged, fsynced record. The parent SIGKILLs this process at a random
moment; on start it continues each writer's sequence from what the log holds.
"""

from __future__ import annotations

import hashlib
import random
import sys
import threading
from pathlib import Path

from broker.log import CommitLog, FsyncPolicy, LogConfig

CONFIG = LogConfig(segment_bytes=32 * 1024, fsync=FsyncPolicy.ALWAYS)


def make_payload(writer: int, seq: int) -> bytes:
    """The one payload record (writer, seq) may hold; its size varies from 20 to ~1 KiB."""
    head = f"{writer}:{seq}:".encode()
    seed = hashlib.sha256(head).digest()
    return head + seed * (seq * 7 % 31)


def parse_payload(payload: bytes) -> tuple[int, int]:
    writer, seq, _ = payload.split(b":", 2)
    return int(writer), int(seq)


def main(directory: Path, seed: int, writers: int) -> None:
    log = CommitLog.open(directory, CONFIG)
    next_seq: dict[int, int] = {}
    for _, payload in log.scan(log.start_position):
        writer, seq = parse_payload(payload)
        next_seq[writer] = seq + 1
    out_lock = threading.Lock()
    print("ready", flush=True)

    def run(writer: int) -> None:
        rng = random.Random(seed * 1000 + writer)
        seq = next_seq.get(writer, 0)
        while True:
            batch = [make_payload(writer, seq + i) for i in range(rng.randint(1, 4))]
            positions = log.append(batch)
            lines = "".join(
                f"{p} {writer} {seq + i} {hashlib.sha256(b).hexdigest()}\n"
                for i, (p, b) in enumerate(zip(positions, batch, strict=True))
            )
            with out_lock:
                sys.stdout.write(lines)
                sys.stdout.flush()
            seq += len(batch)

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
