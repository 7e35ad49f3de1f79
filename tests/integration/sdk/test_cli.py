"""`tidegate pub` and `tidegate sub` as subprocesses against a real server
(CONTRACTS.md section 6): exact JSON lines, exit codes, stdin, --idle-exit, and
the key never shown."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.sdk.conftest import KEYS, Server, make_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = KEYS["acme"]
PUB_KEYS = ["topic", "lite_topic", "offset", "sha256"]
SUB_KEYS = ["topic", "lite_topic", "offset", "sha256", "attempt"]


def tidegate(
    *args: str, key: str | None = KEY, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TIDEGATE_API_KEY"}
    if key is not None:
        env["TIDEGATE_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "tidegate", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def lines(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


def no_secret(proc: subprocess.CompletedProcess[str], secret: str = KEY) -> None:
    assert secret not in proc.stdout
    assert secret not in proc.stderr


def test_pub_count_prints_one_exact_line_per_acknowledged_message(server: Server) -> None:
    proc = tidegate(
        "pub",
        "--server",
        server.address,
        "--topic",
        "chatbot",
        "--lite",
        "s-1",
        "--count",
        "5",
        "--size",
        "100",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    got = lines(proc.stdout)
    assert [list(line) for line in got] == [PUB_KEYS] * 5
    with make_client(server) as client:
        stored = client.read("chatbot", "s-1").messages
    assert len(stored) == 5
    assert got == [
        {"topic": "chatbot", "lite_topic": "s-1", "offset": m.offset, "sha256": sha(m.body)}
        for m in stored
    ]
    assert all(len(m.body) == 100 for m in stored)
    no_secret(proc)


def test_pub_reads_one_message_per_line_of_stdin(server: Server) -> None:
    proc = tidegate(
        "pub",
        "--server",
        server.address,
        "--topic",
        "chatbot",
        "--lite",
        "in",
        "--json",
        stdin="first\nsecond line\n\nlast",
    )
    assert proc.returncode == 0, proc.stderr
    bodies = [b"first", b"second line", b"", b"last"]
    assert lines(proc.stdout) == [
        {"topic": "chatbot", "lite_topic": "in", "offset": i, "sha256": sha(body)}
        for i, body in enumerate(bodies)
    ]
    with make_client(server) as client:
        assert [m.body for m in client.read("chatbot", "in").messages] == bodies


def test_pub_without_a_lite_topic_uses_the_topic_queue(server: Server) -> None:
    proc = tidegate(
        "pub",
        "--server",
        server.address,
        "--topic",
        "plain",
        "--count",
        "1",
        "--size",
        "3",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = lines(proc.stdout)
    assert (line["topic"], line["lite_topic"], line["offset"]) == ("plain", None, 0)


def test_sub_prints_each_message_then_exits_when_idle(server: Server) -> None:
    with make_client(server) as client:
        for i in range(3):
            client.publish("chatbot", b"a%d" % i, lite="s-1")
        client.publish("chatbot", b"b0", lite="s-2")
        client.publish("chatbot", b"other", lite="s-3")
    started = time.monotonic()
    proc = tidegate(
        "sub",
        "--server",
        server.address,
        "--topic",
        "chatbot",
        "--lite",
        "s-1",
        "--lite",
        "s-2",
        "--from",
        "earliest",
        "--idle-exit",
        "1",
        "--json",
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    got = lines(proc.stdout)
    assert all(list(line) == SUB_KEYS for line in got)
    by_lite = sorted((str(x["lite_topic"]), int(str(x["offset"]))) for x in got)
    assert by_lite == [("s-1", 0), ("s-1", 1), ("s-1", 2), ("s-2", 0)]
    assert {
        "topic": "chatbot",
        "lite_topic": "s-2",
        "offset": 0,
        "sha256": sha(b"b0"),
        "attempt": 0,
    } in got
    assert took >= 1.0
    no_secret(proc)


def test_sub_in_a_group_acks_what_it_printed(server: Server) -> None:
    with make_client(server) as client:
        client.publish("jobs", b"j0", lite="q")
        client.publish("jobs", b"j1", lite="q")
    args = (
        "sub",
        "--server",
        server.address,
        "--topic",
        "jobs",
        "--lite",
        "q",
        "--group",
        "cli",
        "--idle-exit",
        "0.5",
        "--json",
    )
    first = tidegate(*args)
    assert first.returncode == 0, first.stderr
    assert [(x["offset"], x["attempt"]) for x in lines(first.stdout)] == [(0, 1), (1, 1)]
    again = tidegate(*args)  # everything was acknowledged: nothing comes back
    assert (again.returncode, again.stdout) == (0, "")


def test_sub_from_an_offset_and_from_latest(server: Server) -> None:
    with make_client(server) as client:
        for i in range(4):
            client.publish("off", b"%d" % i, lite="x")
    proc = tidegate(
        "sub",
        "--server",
        server.address,
        "--topic",
        "off",
        "--lite",
        "x",
        "--from",
        "2",
        "--idle-exit",
        "0.5",
        "--json",
    )
    assert [x["offset"] for x in lines(proc.stdout)] == [2, 3]
    proc = tidegate(
        "sub",
        "--server",
        server.address,
        "--topic",
        "off",
        "--lite",
        "x",
        "--from",
        "latest",
        "--idle-exit",
        "0.5",
        "--json",
    )
    assert (proc.returncode, proc.stdout) == (0, "")


def test_the_key_can_come_from_a_file(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    proc = tidegate(
        "pub",
        "--server",
        server.address,
        "--topic",
        "t",
        "--count",
        "1",
        "--json",
        "--api-key-file",
        str(path),
        key=None,
    )
    assert proc.returncode == 0, proc.stderr
    no_secret(proc)


@pytest.mark.parametrize(
    ("key", "words"),
    [
        (None, "TIDEGATE_API_KEY"),
        ("wrong-key-value", "UNAUTHENTICATED"),
    ],
)
def test_key_problems_are_one_line_without_the_key(
    server: Server, key: str | None, words: str
) -> None:
    for command in (["pub", "--count", "1"], ["sub", "--lite", "x", "--idle-exit", "1"]):
        proc = tidegate(
            command[0], "--server", server.address, "--topic", "t", *command[1:], key=key
        )
        assert proc.returncode == 2
        assert proc.stdout == ""
        assert words in proc.stderr
        assert proc.stderr.count("\n") == 1
        assert "Traceback" not in proc.stderr
        if key is not None:
            no_secret(proc, key)


def test_an_unreachable_server_is_one_line_and_non_zero() -> None:
    for command in (["pub", "--count", "1"], ["sub", "--lite", "x"]):
        proc = tidegate(
            command[0], "--server", "127.0.0.1:1", "--topic", "t", *command[1:], "--retry-s", "0.3"
        )
        assert proc.returncode != 0
        assert "unavailable" in proc.stderr
        assert "127.0.0.1:1" in proc.stderr
        assert proc.stderr.count("\n") == 1
        assert "Traceback" not in proc.stderr


def test_bad_arguments_are_one_line(server: Server) -> None:
    proc = tidegate("pub", "--server", server.address, "--topic", "t", "--size", "5")
    assert proc.returncode == 2
    assert "--size needs --count" in proc.stderr
    proc = tidegate("sub", "--server", server.address, "--topic", "t", "--lite", "bad name")
    assert proc.returncode == 2
    assert "lite-topic name rule" in proc.stderr
    proc = tidegate(
        "sub", "--server", server.address, "--topic", "t", "--lite", "x", "--from", "soon"
    )
    assert proc.returncode == 2
    assert "--from" in proc.stderr


def test_pub_flushes_what_was_acknowledged_and_fails_when_the_server_goes(
    server: Server,
) -> None:
    env = {**os.environ, "TIDEGATE_API_KEY": KEY}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidegate",
            "pub",
            "--server",
            server.address,
            "--topic",
            "t",
            "--lite",
            "live",
            "--json",
            "--retry-s",
            "1",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        for i in range(3):
            proc.stdin.write(f"m{i}\n")
            proc.stdin.flush()
            # Each line is acknowledged and printed while the command is still running.
            line = json.loads(proc.stdout.readline())
            assert (line["offset"], line["sha256"]) == (i, sha(b"m%d" % i))
        server.stop(signal.SIGKILL)
        proc.stdin.write("lost\n")
        proc.stdin.flush()
        code = proc.wait(timeout=30)
        _, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code != 0
    assert "unavailable" in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_sub_follows_new_messages_until_idle(server: Server) -> None:
    env = {**os.environ, "TIDEGATE_API_KEY": KEY}
    with make_client(server) as client:
        client.publish("follow", b"old", lite="x")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tidegate",
                "sub",
                "--server",
                server.address,
                "--topic",
                "follow",
                "--lite",
                "x",
                "--idle-exit",
                "3",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        try:
            # Default start without a group: latest. Wait until it is subscribed.
            deadline = time.monotonic() + 20
            while client.queue_info("follow", "x").subscribers == 0:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            client.publish("follow", b"new", lite="x")
            line = json.loads(proc.stdout.readline())
            assert (line["offset"], line["sha256"]) == (1, sha(b"new"))
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
