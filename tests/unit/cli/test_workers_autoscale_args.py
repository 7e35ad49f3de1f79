"""``tidegate workers`` autoscaling options: each bad combination is one line, exit 2."""

from __future__ import annotations

import pytest

from tidegate import cli

BASE = ["workers", "--server", "127.0.0.1:1"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--min-replicas", "2"], "--min-replicas needs --max-replicas"),
        (["--max-replicas", "3", "--replicas", "2"], "--replicas is a fixed fleet"),
        (["--max-replicas", "3", "--in-process"], "drop --in-process"),
        (
            ["--min-replicas", "4", "--max-replicas", "3", "--metrics-url", "127.0.0.1:2"],
            "max-replicas is 3; it must be >= min-replicas (4)",
        ),
        (
            ["--max-replicas", "3", "--metrics-url", "127.0.0.1:2", "--scale-up-queued", "0"],
            "up_queued_per_replica is 0.0; it must be above down_queued_per_replica",
        ),
        (["--max-replicas", "3", "--metrics-url", "ftp://x/metrics"], "must be http"),
    ],
)
def test_bad_autoscaling_options_are_usage_errors(
    extra: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TIDEGATE_API_KEY", "k")
    assert cli.main([*BASE, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
