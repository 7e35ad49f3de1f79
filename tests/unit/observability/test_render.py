"""Reading dashboard JSON, talking to Prometheus' API, and drawing panels to PNG."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tidegate.cli import main
from tidegate.errors import UsageError
from tidegate.panels import Panel, Query, expand, legend, load_dashboards, parse_dashboard
from tidegate.prometheus import PrometheusApi, Series
from tidegate.render import PanelData, render_dashboards, render_panel

JSON_DIR = Path(__file__).resolve().parents[3] / "dashboards" / "json"


def test_panels_come_from_rows_and_from_the_top_level() -> None:
    data = {
        "uid": "u",
        "title": "T",
        "panels": [
            {
                "type": "row",
                "id": 1,
                "panels": [{"id": 2, "type": "stat", "targets": [{"refId": "A", "expr": "up"}]}],
            },
            {
                "id": 3,
                "type": "timeseries",
                "title": "x",
                "fieldConfig": {"defaults": {"unit": "s", "min": 0, "max": 1}},
                "targets": [
                    {
                        "refId": "A",
                        "expr": "rate(a_total[$__rate_interval])",
                        "legendFormat": "{{t}}",
                    },
                    {"refId": "B", "expr": "hidden", "hide": True},
                ],
            },
        ],
    }
    board = parse_dashboard(data, Path("u.json"))
    assert [p.panel_id for p in board.panels] == [2, 3]
    assert board.panels[1] == Panel(
        3,
        "x",
        "timeseries",
        "s",
        (Query("A", "rate(a_total[$__rate_interval])", "{{t}}"),),
        0.0,
        1.0,
    )
    with pytest.raises(UsageError, match="not a Grafana dashboard"):
        parse_dashboard({"title": "no panels"}, Path("bad.json"))


def test_grafana_variables_and_legends() -> None:
    assert expand(
        "rate(x[$__rate_interval]) + y[$__interval]", rate_interval="2m", interval="5s"
    ) == ("rate(x[2m]) + y[5s]")
    assert legend("{{tenant}} p95", {"tenant": "acme"}) == "acme p95"
    assert legend("", {"__name__": "up", "job": "t", "a": "1"}) == "a=1, job=t"
    assert legend("", {"__name__": "up"}) == "up"


def test_the_committed_dashboards_load() -> None:
    boards = load_dashboards(JSON_DIR)
    assert sum(len(b.panels) for b in boards) >= 30
    with pytest.raises(UsageError, match="no dashboard JSON"):
        load_dashboards(Path("/nonexistent-dir"))


def test_a_panel_renders_lines_or_says_no_data(tmp_path: Path) -> None:
    panel = Panel(1, "Waits", "stat", "percentunit", (Query("A", "x", "{{tenant}}"),), 0.0, 1.0)
    points = tuple((1_700_000_000.0 + i, 0.5 + 0.01 * i) for i in range(30))
    render_panel(
        PanelData(panel, (("acme", Series({"tenant": "acme"}, points)),)),
        tmp_path / "a.png",
        title="t",
    )
    render_panel(PanelData(panel, ()), tmp_path / "empty.png", title="t")
    drawn = (tmp_path / "a.png").read_bytes()
    empty = (tmp_path / "empty.png").read_bytes()
    assert drawn.startswith(b"\x89PNG")
    assert empty.startswith(b"\x89PNG")
    assert len(drawn) > 2 * len(empty)


class _FakePrometheus(BaseHTTPRequestHandler):
    """Answers query_range with one series per query; PromQL with 'bad' is an error."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query).get("query", [""])[0]
        body: dict[str, object]
        if "bad" in query:
            status, body = 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}
        else:
            start = float(parse_qs(url.query).get("start", ["1700000000"])[0])
            values = [[start + i, str(float(i))] for i in range(5)]
            result = [{"metric": {"tenant": "acme"}, "values": values}]
            status, body = (
                200,
                {"status": "success", "data": {"resultType": "matrix", "result": result}},
            )
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_prometheus() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_api_client_reads_results_and_names_errors(fake_prometheus: str) -> None:
    api = PrometheusApi(fake_prometheus)
    (series,) = api.query_range("up", 1_700_000_000.0, 1_700_000_004.0, 1.0)
    assert series.labels == {"tenant": "acme"}
    assert len(series.points) == 5
    assert series.finite
    with pytest.raises(UsageError, match="query 'bad': parse error"):
        api.query("bad")
    with pytest.raises(UsageError, match="cannot be reached"):
        PrometheusApi("http://127.0.0.1:9", timeout_s=1).query("up")
    with pytest.raises(UsageError, match="expected http"):
        PrometheusApi("localhost:9090")
    assert not Series({}, ((0.0, float("nan")),)).finite


@pytest.mark.slow  # draws every panel of every dashboard (a few seconds)
def test_every_committed_panel_renders_from_a_prometheus(
    fake_prometheus: str, tmp_path: Path
) -> None:
    written = render_dashboards(
        fake_prometheus, tmp_path, JSON_DIR, minutes=1, step_s=5, now=lambda: 1_700_000_060.0
    )
    boards = load_dashboards(JSON_DIR)
    assert len(written) == sum(len(b.panels) for b in boards)
    assert {p.parent.name for p in written} == {b.uid for b in boards}
    assert all(p.stat().st_size > 5000 for p in written)


def test_the_command_says_what_is_wrong_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(
        ["dashboards", "render", "--prometheus", "http://127.0.0.1:9", "--out", str(tmp_path)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "tidegate dashboards: error: Prometheus at http://127.0.0.1:9 cannot be reached"
    )
    assert len(err.strip().splitlines()) == 1
