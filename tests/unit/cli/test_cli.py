"""The command line: fast help, one-line errors, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tidegate
from tidegate import cli


def test_public_api_is_declared() -> None:
    assert sorted(tidegate.__all__) == sorted(
        name for name in tidegate.__all__ if hasattr(tidegate, name)
    )
    assert "TidegateError" in tidegate.__all__


def test_help_imports_no_package_internals() -> None:
    code = (
        "import sys, tidegate.cli as c\n"
        "c.build_parser()\n"
        "heavy = [m for m in ('broker', 'scheduler', 'workers', 'rocksdict', 'grpc')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["no-such-command"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_bad_number_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["bench", "produce", "--count", "-5"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--count" in err
    assert "must be > 0" in err


def test_user_error_is_one_line_without_traceback() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tidegate",
            "bench",
            "recovery",
            "--log-bytes",
            "1",
            "--data-dir",
            "/proc/definitely/not/writable",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
