"""Proof that the dashboards work: every panel's PromQL, from the committed JSON,
returns data from a real Prometheus scraping a real server under load; and
every panel renders to a PNG that shows it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from broker import metric_names as bn
from tests.integration.observability.conftest import KEYS, LiveServer, Prometheus
from tests.integration.observability.load import LoadThread
from tidegate.cli import main
from tidegate.errors import UsageError
from tidegate.panels import expand, load_dashboards
from tidegate.prometheus import PrometheusApi

JSON_DIR = Path(__file__).resolve().parents[3] / "dashboards" / "json"
LOAD_S = 16.0

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _scraped_since(api: PrometheusApi, since: float) -> bool:
    found = api.query(f"timestamp({bn.BROKER_LOG_BYTES.name})")
    return any(v >= since for s in found for _, v in s.points)


def test_every_panel_query_returns_data_and_renders(
    live_server: LiveServer,
    prometheus_factory: Callable[[str], Prometheus],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prometheus = prometheus_factory(f"127.0.0.1:{live_server.metrics_port}")
    api = prometheus.api

    load = LoadThread(live_server.address, KEYS).start()
    try:
        _under_load(load, api, prometheus, tmp_path, capsys)
    finally:
        report = load.stop()
    assert report.worker_completed > 0, report
    assert sum(report.refused.values()) > 0, report  # bronze outran its rate limit
    assert report.received > 0, report


def _under_load(
    load: LoadThread,
    api: PrometheusApi,
    prometheus: Prometheus,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.time()
    while time.time() < started + LOAD_S:
        assert load.failed is None, load.failed
        time.sleep(0.5)
    deadline = time.monotonic() + 15
    while not _scraped_since(api, started + LOAD_S):  # the latest figures are in
        assert time.monotonic() < deadline, prometheus.log()
        time.sleep(0.2)

    failures = []
    checked = 0
    panels = 0
    for dashboard in load_dashboards(JSON_DIR):
        for panel in dashboard.panels:
            panels += 1
            if not panel.queries:
                failures.append(f"{dashboard.title} / {panel.title}: no query")
            for query in panel.queries:
                expr = expand(query.expr, rate_interval="1m")
                where = f"{dashboard.title} / {panel.title} [{query.ref_id}] {expr}"
                checked += 1
                try:
                    found = api.query(expr)
                except UsageError as exc:
                    failures.append(f"{where}: error: {exc}")
                    continue
                if not any(s.finite for s in found):
                    failures.append(f"{where}: no data ({len(found)} series, none finite)")
    assert not failures, f"{len(failures)} of {checked} queries failed:\n" + "\n".join(failures)
    assert checked >= 40

    out = tmp_path / "png"
    code = main(
        [
            "dashboards",
            "render",
            "--prometheus",
            prometheus.url,
            "--out",
            str(out),
            "--dashboards",
            str(JSON_DIR),
            "--minutes",
            "1",
            "--step",
            "1",
        ]
    )
    assert code == 0
    written = [Path(line) for line in capsys.readouterr().out.split()]
    assert len(written) == panels
    no_data = _no_data_card_bytes(tmp_path / "no-data.png")
    for path in written:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), path
        # A plot (axes, ticks, lines, legend) takes far more bytes than the
        # "no data" card of the longest title: 15-40 KB here against under 7.
        assert len(data) > 1.5 * no_data, f"{path}: {len(data)} bytes, like a 'no data' card"
    _assert_plotted(out / "tidegate-fairness")


def _no_data_card_bytes(path: Path) -> int:
    """Bytes of the "no data" card the renderer draws for the longest panel title."""
    from tidegate.panels import Panel
    from tidegate.render import PanelData, render_panel

    titles = [f"{d.title} — {p.title}" for d in load_dashboards(JSON_DIR) for p in d.panels]
    title = max(titles, key=len)
    render_panel(PanelData(Panel(0, title, "timeseries", "percentunit", ()), ()), path, title=title)
    return path.stat().st_size


def _assert_plotted(folder: Path) -> None:
    """The fairness panels hold lines, not a 'no data' card: many distinct colours."""
    from matplotlib.image import imread

    for path in sorted(folder.glob("*.png")):
        pixels = imread(str(path))
        colours = {tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::7].tolist()}
        assert len(colours) > 50, f"{path}: {len(colours)} colours; it looks empty"
