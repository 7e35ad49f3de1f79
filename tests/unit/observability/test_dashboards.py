"""The committed dashboards are what the code generates, and query only real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from broker import metric_names as bn
from dashboards.__main__ import main as dashboards_main
from dashboards.build import DASHBOARDS, DATASOURCE_UID, generate
from dashboards.metric_names import by_name
from scheduler import metric_names as sn
from tidegate.panels import load_dashboards

ROOT = Path(__file__).resolve().parents[3]
JSON_DIR = ROOT / "dashboards" / "json"
SERIES = re.compile(r"\btidegate_[a-z0-9_]+")


def test_the_committed_json_is_what_the_code_generates() -> None:
    generated = generate()
    assert sorted(generated) == sorted(p.name for p in JSON_DIR.glob("*.json"))
    for name, text in generated.items():
        assert (JSON_DIR / name).read_text() == text, f"{name} is stale: python -m dashboards"
    assert dashboards_main(["--check"]) == 0


def test_four_dashboards_with_stable_uids() -> None:
    boards = load_dashboards(JSON_DIR)
    assert [b.uid for b in boards] == [
        "tidegate-broker",
        "tidegate-fairness",
        "tidegate-fleet",
        "tidegate-latency",
    ]
    assert len(DASHBOARDS) == 4


def test_every_query_names_exported_series_of_the_right_kind() -> None:
    used: set[str] = set()
    for board in load_dashboards(JSON_DIR):
        ids = [p.panel_id for p in board.panels]
        assert len(ids) == len(set(ids)), f"{board.uid}: panel ids repeat"
        for panel in board.panels:
            assert panel.queries, f"{board.uid} / {panel.title}: no query"
            for query in panel.queries:
                names = SERIES.findall(query.expr)
                assert names, f"{panel.title}: {query.expr} names no tidegate series"
                for series in names:
                    spec = by_name(series)
                    assert spec is not None, f"{panel.title}: {series} is not exported"
                    assert series in spec.series, f"{panel.title}: {series} of a {spec.kind}"
                    used.add(spec.name)
                if "rate(" in query.expr or "increase(" in query.expr:
                    assert "_total" in query.expr or "_bucket" in query.expr or "_sum" in query.expr
    # What issue 6 asks the dashboards to show is there.
    for spec in (
        sn.TENANT_SERVICE_SHARE,
        sn.TENANT_WEIGHT_SHARE,
        sn.FAIRNESS_JAIN,
        sn.TENANT_WAIT,
        sn.BAND_WAIT,
        sn.TENANT_TTFT,
        sn.WORKER_GPU_UTILIZATION,
        sn.WORKER_GPU_MEMORY,
        bn.BROKER_FSYNC_SECONDS,
        bn.BROKER_CONSUMER_LAG,
        bn.BROKER_READY_QUEUES,
        bn.BROKER_QUEUES_EXPIRED,
    ):
        assert spec.name in used, spec.name


def test_every_panel_uses_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (ROOT / "dashboards/provisioning/datasources/tidegate.yaml").read_text()
    )
    (source,) = provisioned["datasources"]
    assert source["uid"] == DATASOURCE_UID
    assert source["type"] == "prometheus"
    for path in JSON_DIR.glob("*.json"):
        data = json.loads(path.read_text())
        for panel in data["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID


def test_provisioning_and_scrape_config_are_well_formed() -> None:
    providers = yaml.safe_load(
        (ROOT / "dashboards/provisioning/dashboards/tidegate.yaml").read_text()
    )
    assert providers["apiVersion"] == 1
    assert providers["providers"][0]["type"] == "file"
    scrape = yaml.safe_load((ROOT / "dashboards/prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"]


def test_a_panel_keeps_every_query_and_refuses_more_than_it_can_name() -> None:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    from dashboards.build import Q, _Board

    board = _Board("t", "t", "t")
    queries = [Q(f"up{i}", f"q{i}") for i in range(9)]
    board.series("nine", "nine queries", *queries)
    panel = json.loads(json.dumps(board.builder.build(), cls=JSONEncoder))["panels"][0]
    assert [t["refId"] for t in panel["targets"]] == list("ABCDEFGHI")
    too_many = [Q(f"up{i}", f"q{i}") for i in range(27)]
    with pytest.raises(ValueError, match="27 queries"):
        board.series("too many", "", *too_many)
