"""Resume across server restarts: a subscriber sees every message exactly once, in
order, and a publisher's retries store nothing twice (SIGTERM, and SIGKILL under
fsync always)."""

from __future__ import annotations

import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import pytest

from tests.integration.sdk.conftest import Server, make_client
from tidegate import Client, Outgoing, Start

pytestmark = [pytest.mark.integration, pytest.mark.crash, pytest.mark.slow]

LITES = [f"s-{i}" for i in range(12)]
ROUNDS = 40
TOTAL = len(LITES) * ROUNDS


def publish_rounds(client: Client, failures: list[BaseException]) -> None:
    try:
        for r in range(ROUNDS):
            client.publish_batch([Outgoing("res", f"{x}:{r}".encode(), (x,)) for x in LITES])
            time.sleep(0.02)  # spread over the restart
    except BaseException as exc:  # handed to the test thread
        failures.append(exc)


def read_all(client: Client, lite: str) -> list[bytes]:
    bodies: list[bytes] = []
    offset = 0
    while True:
        result = client.read("res", lite, from_offset=offset, max_messages=1000)
        if not result.messages:
            return bodies
        bodies += [m.body for m in result.messages]
        offset = result.next_offset


def run_across_restart(server: Server, restart: Callable[[], None]) -> None:
    with make_client(server) as producer, make_client(server) as consumer:
        sub = consumer.subscribe("res", LITES, start=Start.earliest(), buffer=40)
        failures: list[BaseException] = []
        thread = threading.Thread(target=publish_rounds, args=(producer, failures))
        thread.start()
        seen: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
        restarted = False
        try:
            for count in range(TOTAL):
                message = sub.get(timeout=30)
                assert message is not None, f"only {count} of {TOTAL} messages arrived"
                seen[message.lite_topic].append((message.offset, message.body))
                if not restarted and count >= TOTAL // 3:
                    restart()
                    restarted = True
            assert sub.get(timeout=0.3) is None
        finally:
            thread.join(60)
        assert not failures, failures
        assert sub.reconnects >= 1
        assert producer.retries >= 1  # a publish was in flight or refused during the outage
        sub.close()
        for x in LITES:
            assert seen[x] == [(r, f"{x}:{r}".encode()) for r in range(ROUNDS)]
            assert read_all(consumer, x) == [f"{x}:{r}".encode() for r in range(ROUNDS)]


def test_resume_across_a_sigterm_restart(server_factory: Callable[..., Server]) -> None:
    server = server_factory(fsync="interval")

    def restart() -> None:
        assert server.stop(signal.SIGTERM) == 0
        server.start()

    run_across_restart(server, restart)


def test_resume_across_sigkill_under_fsync_always(server_factory: Callable[..., Server]) -> None:
    server = server_factory(fsync="always")

    def restart() -> None:
        server.stop(signal.SIGKILL)
        server.start()

    run_across_restart(server, restart)
