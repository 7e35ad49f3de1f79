"""``tidegate pub`` and ``tidegate sub``: the SDK for shell scripts (CONTRACTS.md section 6).

Both print one JSON line per message with ``--json`` and flush it at once,
so a script sees each acknowledged (pub) or received (sub) message as it
happens. The API key comes from ``TIDEGATE_API_KEY`` or ``--api-key-file``
and is never printed. When the server stays unreachable past ``--retry-s``
the command flushes what it has, prints one line naming the problem and
exits non-zero (the CLI's error path); ``sub --idle-exit`` ends with 0.

The SDK (and grpc) is imported inside the commands, so ``tidegate --help``
stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import select
import sys
from collections.abc import Iterator, Mapping
from typing import IO, TYPE_CHECKING

from tidegate.errors import InvalidArgument, UsageError
from tidegate.options import ApiKey, Retry, Tls
from tidegate.values import Message, Outgoing, PublishResult, Start

if TYPE_CHECKING:
    from tidegate.client import Client

__all__ = ["API_KEY_ENV", "api_key", "pub", "sub"]

API_KEY_ENV = "TIDEGATE_API_KEY"
_BATCH = 500  # messages per publish call at most (pub)
_BATCH_BYTES = 4 * 1024 * 1024


def api_key(args: argparse.Namespace, environ: Mapping[str, str]) -> ApiKey:
    """The key from ``--api-key-file`` (if given) or the environment; never shown."""
    if args.api_key_file is not None:
        return ApiKey.from_file(args.api_key_file)
    value = environ.get(API_KEY_ENV, "").strip()
    if not value:
        raise UsageError(f"no API key: set {API_KEY_ENV} or pass --api-key-file PATH")
    try:
        return ApiKey(value)
    except InvalidArgument as exc:
        raise UsageError(f"{API_KEY_ENV}: {exc}") from None


def _tls(args: argparse.Namespace) -> Tls | None:
    if not (args.tls or args.ca_file or args.cert_file or args.key_file):
        return None
    if (args.cert_file is None) != (args.key_file is None):
        raise UsageError("--cert-file and --key-file go together (mutual TLS)")
    return Tls.from_files(
        ca=args.ca_file, cert=args.cert_file, key=args.key_file, server_name=args.server_name
    )


def _client(args: argparse.Namespace) -> Client:
    from tidegate.client import Client  # noqa: PLC0415 - grpc loads only when a command runs

    key = api_key(args, os.environ)
    try:
        retry = Retry(give_up_s=args.retry_s)
        return Client(args.server, api_key=key, tls=_tls(args), retry=retry)
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from None


def _emit(out: IO[str], line: str) -> None:
    out.write(line + "\n")
    out.flush()


def _quiet_stdout() -> None:
    """The reader of stdout went away: stop writing there (no error at exit)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError):
        os.dup2(devnull, sys.stdout.fileno())


# ---------------------------------------------------------------------- pub


def _generated(count: int, size: int) -> Iterator[bytes]:
    """``count`` bodies of ``size`` bytes, each starting with its number."""
    for i in range(count):
        head = b"%d:" % i
        yield (head + b"x" * max(0, size - len(head)))[:size]


def _read_some(fd: int, wait: bool) -> bytes | None:
    """Bytes from ``fd``: b"" at its end, None when nothing is there yet and not ``wait``."""
    if not wait:
        ready, _, _ = select.select([fd], [], [], 0)
        if not ready:
            return None
    return os.read(fd, 1 << 16)


def _stdin_batches(fd: int) -> Iterator[list[bytes]]:
    """Lines of the file descriptor in batches: each batch holds what had arrived
    when it was taken, so a slow writer gets each line acknowledged at once and
    a fast one gets batches. Read with os.read in this thread (no reader thread
    left holding stdin's lock at exit)."""
    pending = b""
    ended = False
    while True:
        batch: list[bytes] = []
        size = 0
        while len(batch) < _BATCH and size < _BATCH_BYTES:
            cut = pending.find(b"\n")
            if cut >= 0:
                line, pending = pending[:cut], pending[cut + 1 :]
                batch.append(line[:-1] if line.endswith(b"\r") else line)
                size += len(line)
                continue
            if ended:
                if pending:
                    batch.append(pending)
                    pending = b""
                break
            chunk = _read_some(fd, wait=not batch)
            if chunk is None:
                break  # a batch is ready and nothing more has arrived
            if chunk:
                pending += chunk
            else:
                ended = True
        if batch:
            yield batch
        elif ended:
            return


def _batches(bodies: Iterator[bytes]) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    size = 0
    for body in bodies:
        if batch and (len(batch) >= _BATCH or size + len(body) > _BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(body)
        size += len(body)
    if batch:
        yield batch


def pub_line(result: PublishResult, lite: str | None, body: bytes) -> str:
    return json.dumps(
        {
            "topic": result.topic,
            "lite_topic": lite,
            "offset": result.offset,
            "sha256": hashlib.sha256(body).hexdigest(),
        }
    )


def pub(args: argparse.Namespace) -> int:
    if args.size is not None and args.count is None:
        raise UsageError("--size needs --count (without --count, messages come from stdin)")
    lite: str | None = args.lite
    lites = (lite,) if lite else ()
    try:
        Outgoing(args.topic, b"", lites)  # names checked before connecting
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from None
    if args.count is not None:
        batches = _batches(_generated(args.count, args.size or 1024))
    else:
        batches = _stdin_batches(sys.stdin.fileno())
    out = sys.stdout
    published = 0
    with _client(args) as client:
        for batch in batches:
            results = client.publish_batch([Outgoing(args.topic, body, lites) for body in batch])
            try:
                for body, result in zip(batch, results, strict=True):
                    if args.json:
                        _emit(out, pub_line(result, lite, body))
                    else:
                        where = f"{result.topic}/{lite}" if lite else result.topic
                        _emit(out, f"{where} offset {result.offset} ({len(body)} bytes)")
            except BrokenPipeError:
                _quiet_stdout()
                return 0
            published += len(batch)
    if not args.json:
        print(f"published {published} messages", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------- sub


def sub_line(message: Message) -> str:
    return json.dumps(
        {
            "topic": message.topic,
            "lite_topic": message.lite_topic,
            "offset": message.offset,
            "sha256": hashlib.sha256(message.body).hexdigest(),
            "attempt": message.attempt,
        }
    )


def _text_line(message: Message) -> str:
    text = message.body.decode("utf-8", errors="replace")
    if len(text) > 200:
        text = text[:200] + "..."
    shown = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return f"{message.ref} offset {message.offset} attempt {message.attempt}: {shown}"


def sub(args: argparse.Namespace) -> int:
    try:
        start = Start.parse(args.from_) if args.from_ is not None else None
    except InvalidArgument as exc:
        raise UsageError(f"--from: {exc}") from None
    lites: list[str] = list(dict.fromkeys(args.lite))
    try:
        for name in lites:
            Outgoing(args.topic, b"", (name,))  # names checked before connecting
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from None
    idle: float | None = args.idle_exit
    out = sys.stdout
    with (
        _client(args) as client,
        client.subscribe(args.topic, lites, start=start, group=args.group) as subscription,
    ):
        while True:
            message = subscription.get(timeout=idle)
            if message is None:
                return 0  # --idle-exit: that long without a message
            try:
                _emit(out, sub_line(message) if args.json else _text_line(message))
            except BrokenPipeError:
                _quiet_stdout()
                return 0
            subscription.ack(message)
