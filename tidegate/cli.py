"""The ``tidegate`` command: the composition root.

This is the one module that wires ``broker``, ``scheduler`` and ``workers``
together and reads settings. It imports them inside each command so that
``tidegate --help`` stays fast and no package cycle forms. Errors that the
packages raise on purpose become one line on stderr and exit code 2; nothing
a user does should show a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from tidegate.errors import TidegateError, UsageError

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], int]


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Root error classes whose message is meant for the user."""
    from broker.errors import BrokerError
    from scheduler.errors import SchedulerError

    return (TidegateError, BrokerError, SchedulerError)


# ----------------------------------------------------------------- commands


def _cmd_bench(args: argparse.Namespace) -> int:
    from tidegate import bench

    return bench.run_cli(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from tidegate import demo

    return demo.run(args)


# ----------------------------------------------------------------- parser


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tidegate.bench_names import BENCH_NAMES

    p = sub.add_parser(
        "bench",
        help="run a benchmark and print its figures",
        description="Run one benchmark (CONTRACTS.md section 4) and print its figures.",
    )
    p.add_argument("name", choices=BENCH_NAMES, help="which benchmark")
    p.add_argument("--count", type=_positive_int, help="messages or lite-topics")
    p.add_argument("--size", type=_positive_int, help="message body size in bytes")
    p.add_argument("--batch", type=_positive_int, help="messages per publish call")
    p.add_argument("--log-bytes", type=_positive_int, help="log size to recover (recovery)")
    p.add_argument("--queued", type=_positive_int, help="queued requests (schedule)")
    p.add_argument("--tenants", type=_positive_int, help="tenants (schedule)")
    p.add_argument("--subscriptions", type=_positive_int, help="subscriptions (fanin)")
    p.add_argument("--rate", type=_positive_int, help="messages per second (fanin)")
    p.add_argument(
        "--fsync", choices=("always", "interval"), default=None, help="the store's fsync policy"
    )
    p.add_argument("--data-dir", help="keep the data here instead of a temporary directory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_cmd_bench)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the embedded demo (what `make demo` runs)")
    p.set_defaults(handler=_cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidegate",
        description="Durable request queue and fair GPU admission controller for LLM serving.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_bench,
    _add_demo,
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`); that is not an error.
        return 0
    except Exception as exc:
        if isinstance(exc, UsageError | _user_error_types()):
            print(f"tidegate {args.command}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise
