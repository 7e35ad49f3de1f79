"""The GPU check script's smoke run on CPU, so it still works when a GPU session runs it."""

from __future__ import annotations

import re

import pytest

from tests.support import gpu_check

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_gpu_check_runs_the_feedback_loop_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    gpu_check.main(
        [
            "--tiny",
            "--seconds",
            "2",
            "--start-rate",
            "10",
            "--end-rate",
            "30",
            "--output-tokens",
            "20",
            "--prompt-words",
            "20",
        ]
    )
    out = capsys.readouterr().out
    assert "probe: scripted (no GPU)" in out
    rows = [line for line in out.splitlines() if re.match(r"\s+\d+\.\d\s+\d+", line)]
    assert len(rows) >= 3  # a report every 0.5 s
    done = re.search(r"done: (\d+) arrived, (\d+) completed", out)
    assert done is not None
    assert int(done.group(2)) > 0
