"""The autoscaler's runtime (reading, acting) against an in-memory fleet, and the
queue depth read from a real Prometheus endpoint on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from scheduler.metric_names import TENANT_QUEUED
from workers.autoscale import AutoscaleConfig, QueueDepthAutoscaler
from workers.queue_depth import (
    QUEUED_METRIC,
    FixedQueueDepth,
    PrometheusQueueDepth,
    metrics_url,
    sum_series,
)
from workers.scaling import Autoscaler


class MemoryFleet:
    """A fleet in memory: drains end when the test says so."""

    def __init__(self, replicas: int, room: int | None = None) -> None:
        self.members = set(range(replicas))
        self.draining: set[int] = set()
        self.finished: set[int] = set()
        self.room = room

    @property
    def replicas(self) -> int:
        return len(self.members)

    def headroom(self) -> int | None:
        return self.room

    def add_replica(self) -> int:
        taken = self.members | self.draining
        index = next(i for i in range(len(taken) + 1) if i not in taken)
        self.members.add(index)
        return index

    def drain_replica(self, timeout_s: float = 600.0) -> int | None:
        index = max(self.members)
        self.members.remove(index)
        self.draining.add(index)
        return index

    def reap(self, timeout_s: float = 0.0) -> list[tuple[int, dict[str, Any] | None]]:
        done = self.draining & self.finished
        self.draining -= done
        return [(i, {"drained": True}) for i in sorted(done)]


def test_the_runner_grows_drains_reaps_and_reuses_the_freed_index() -> None:
    clock = [0.0]
    source = FixedQueueDepth(20.0)
    fleet = MemoryFleet(1)
    said: list[str] = []
    config = AutoscaleConfig(1, 2, up_after_s=1.0, down_after_s=1.0, cooldown_s=2.0)
    scaler = Autoscaler(
        fleet, source, QueueDepthAutoscaler(config), announce=said.append, now=lambda: clock[0]
    )

    def step_for(seconds: float) -> None:
        end = clock[0] + seconds
        while clock[0] < end:
            scaler.step()
            clock[0] += 0.5

    step_for(2.0)
    assert fleet.members == {0, 1}
    source.set(0.0)
    step_for(4.0)
    assert (fleet.members, fleet.draining) == ({0}, {1})
    source.set(None)  # the server's metrics go away: nothing moves
    step_for(10.0)
    assert fleet.members == {0}
    fleet.finished.add(1)
    source.set(20.0)
    step_for(2.0)
    assert fleet.members == {0, 1}
    assert [d.action for d in scaler.decisions] == ["add", "remove", "add"]
    assert said[0].startswith("scaled up to 2 (worker 1): queued 20 > 4 x 1")
    assert said[1].startswith("scaling down to 1 (draining worker 1)")
    assert "worker 1 drained and gone; 1 serving" in said


def test_no_room_in_ray_means_no_new_actor() -> None:
    fleet = MemoryFleet(1, room=0)
    config = AutoscaleConfig(1, 4, up_after_s=0.0, cooldown_s=0.0)
    scaler = Autoscaler(fleet, FixedQueueDepth(100.0), QueueDepthAutoscaler(config))
    for _ in range(5):
        scaler.step()
    assert fleet.replicas == 1
    fleet.room = 1
    scaler.step()
    assert fleet.replicas == 2


def test_a_failing_step_is_logged_and_the_loop_keeps_going() -> None:
    class BrokenRay(MemoryFleet):
        calls = 0

        def add_replica(self) -> int:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("the control store is out of reach")
            return super().add_replica()

    fleet = BrokenRay(1)
    config = AutoscaleConfig(1, 4, up_after_s=0.0, cooldown_s=0.0)
    scaler = Autoscaler(
        fleet, FixedQueueDepth(100.0), QueueDepthAutoscaler(config), interval_s=0.01
    )
    stop = threading.Event()
    runner = threading.Thread(target=scaler.run, args=(stop,))
    runner.start()
    try:
        for _ in range(500):
            if fleet.replicas >= 2:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        runner.join(5)
    assert scaler.failed_steps >= 1
    assert fleet.replicas >= 2  # the next steps still scaled


# ------------------------------------------------------------ queue depth


def test_the_metric_is_the_schedulers_queued_gauge() -> None:
    assert TENANT_QUEUED.name == QUEUED_METRIC


def test_sum_series_adds_every_label_set_and_ignores_lookalikes() -> None:
    text = (
        "# HELP tidegate_scheduler_queued Requests waiting\n"
        "# TYPE tidegate_scheduler_queued gauge\n"
        'tidegate_scheduler_queued{tenant="a"} 3.0\n'
        'tidegate_scheduler_queued{tenant="b,c}"} 4\n'
        "tidegate_scheduler_queued_total 100\n"
        'tidegate_scheduler_band_queued{band="0"} 50\n'
    )
    assert sum_series(text, QUEUED_METRIC) == 7.0
    assert sum_series("# TYPE tidegate_scheduler_queued gauge\n", QUEUED_METRIC) == 0.0
    with pytest.raises(ValueError, match="no series tidegate_scheduler_queued"):
        sum_series("other 1\n", QUEUED_METRIC)


def test_metrics_url_takes_host_port_or_an_http_url() -> None:
    assert metrics_url("127.0.0.1:9400") == "http://127.0.0.1:9400/metrics"
    assert metrics_url("https://m.example/metrics") == "https://m.example/metrics"
    with pytest.raises(ValueError, match="must be http"):
        metrics_url("file:///etc/passwd")


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, Gauge]]:
    registry = CollectorRegistry()
    gauge = Gauge(QUEUED_METRIC, "Requests waiting", ["tenant"], registry=registry)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", gauge
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_prometheus_source_reads_the_sum_over_tenants(metrics_server: tuple[str, Gauge]) -> None:
    address, gauge = metrics_server
    gauge.labels("acme").set(5)
    gauge.labels("beta").set(2)
    source = PrometheusQueueDepth(address)
    assert source.read() == 7.0
    gauge.labels("acme").set(0)
    assert source.read() == 2.0


def test_an_unreachable_server_is_an_oserror() -> None:
    with pytest.raises(OSError):  # noqa: PT011 - URLError, connection refused
        PrometheusQueueDepth("127.0.0.1:1", timeout_s=0.5).read()
