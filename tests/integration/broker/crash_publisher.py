"""Child process for the broker crash tests: publish under ALWAYS, print acknowledgements.

    python crash_publisher.py DIRECTORY ROUND WRITERS

Each writer thread publishes batches of messages whose bytes follow from
(round, writer, seq) alone, to one to three lite-topics of a small set (and
now and then a body large enough to be chunked). When ``publish_batch``
returns, the thread prints one line per (queue, offset):
``queue offset position sha256``, and flushes: a printed line is an
acknowledged, fsynced message. The parent SIGKILLs this process at a random
moment and checks the reopened store against what was printed.
"""

from __future__ import annotations

import hashlib
import random
import sys
import threading
from pathlib import Path

from broker import Broker, BrokerSettings, FsyncPolicy, PublishRequest

SETTINGS = BrokerSettings(
    fsync=FsyncPolicy.ALWAYS,
    segment_bytes=64 * 1024,
    chunk_bytes=4096,
    default_ttl_s=None,
)
TOPIC = "chatbot"
LITES = [f"s-{i}" for i in range(6)]


def make_body(round_: int, writer: int, seq: int) -> bytes:
    """The one body message (round, writer, seq) may have; now and then above a chunk."""
    head = f"{round_}:{writer}:{seq}:".encode()
    filler = hashlib.sha256(head).digest()
    repeat = 300 if seq % 17 == 5 else seq % 23  # ~9.6 KiB: three chunks
    return head + filler * repeat


def parse_body(body: bytes) -> tuple[int, int, int]:
    round_, writer, seq, _ = body.split(b":", 3)
    return int(round_), int(writer), int(seq)


def main(directory: Path, round_: int, writers: int) -> None:
    broker = Broker.open(directory, SETTINGS)
    out = threading.Lock()
    print("ready", flush=True)

    def run(writer: int) -> None:
        rng = random.Random(round_ * 1000 + writer)
        seq = 0
        while True:
            batch = []
            for _ in range(rng.randint(1, 4)):
                lites = tuple(rng.sample(LITES, rng.randint(1, 3)))
                batch.append(PublishRequest(TOPIC, make_body(round_, writer, seq), lites))
                seq += 1
            results = broker.publish_batch(batch)
            lines = []
            for request, result in zip(batch, results, strict=True):
                digest = hashlib.sha256(bytes(request.body)).hexdigest()  # type: ignore[arg-type]
                for lite, offset in zip(request.lite_topics, result.offsets, strict=True):
                    lines.append(f"{TOPIC}/{lite} {offset} {result.position} {digest}\n")
            with out:
                sys.stdout.write("".join(lines))
                sys.stdout.flush()

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
