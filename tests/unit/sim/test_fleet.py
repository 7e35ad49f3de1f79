"""The continuous-batching worker model: timing, batching, KV, preemption, feedback."""

from __future__ import annotations

import pytest

from scheduler.sim.fleet import FleetConfig, FleetModel, SeqEvent, Worker


class Sink:
    def __init__(self) -> None:
        self.input: dict[str, int] = {}
        self.output: dict[str, int] = {}
        self.busy_spans: list[tuple[float, float]] = []

    def service(
        self, tenant: str, start_s: float, end_s: float, input_tokens: int, output_tokens: int
    ) -> None:
        assert end_s >= start_s
        self.input[tenant] = self.input.get(tenant, 0) + input_tokens
        self.output[tenant] = self.output.get(tenant, 0) + output_tokens

    def busy(self, worker_id: str, start_s: float, end_s: float) -> None:
        self.busy_spans.append((start_s, end_s))


# Round numbers: prefill 1000 tokens/s, a decode step of 0.01 s + 0.001 s per sequence.
MODEL = FleetModel(
    prefill_tokens_per_s=1000.0,
    decode_step_s=0.01,
    decode_step_per_seq_s=0.001,
    max_batch=4,
    kv_capacity_tokens=10_000,
    prefill_chunk_tokens=10_000,
)


def run_all(worker: Worker, until: float = 1e9) -> list[SeqEvent]:
    events: list[SeqEvent] = []
    while (t := worker.next_event_s()) is not None and t <= until:
        events.extend(worker.advance(t))
    return events


def test_model_validates_its_fields() -> None:
    with pytest.raises(ValueError, match=r"fleet\.model\.max_batch: must be >= 1 \(got 0\)"):
        FleetModel(max_batch=0)
    with pytest.raises(ValueError, match=r"fleet\.workers: must be >= 1"):
        FleetConfig(workers=0)


def test_step_grows_with_batch() -> None:
    assert MODEL.step_s(1) == pytest.approx(0.011)
    assert MODEL.step_s(4) == pytest.approx(0.014)


def test_one_sequence_prefill_then_decode_steps() -> None:
    sink = Sink()
    worker = Worker("w0", MODEL, sink)
    worker.add("r1", "a", input_tokens=100, output_tokens=5, now=2.0)
    assert worker.next_event_s() is not None
    events = run_all(worker)
    # Prefill 100 tokens = 0.1 s gives the first token; 4 more decode steps of 0.011 s.
    assert [e.kind for e in events] == ["first_token", "finish"]
    assert events[0].at_s == pytest.approx(2.1)
    assert events[1].at_s == pytest.approx(2.1 + 4 * 0.011)
    assert events[1].output_tokens == 5
    assert not worker.busy
    assert worker.in_flight == 0
    assert sink.input == {"a": 100}
    assert sink.output == {"a": 5}
    assert sum(e - s for s, e in sink.busy_spans) == pytest.approx(0.1 + 4 * 0.011)


def test_single_output_token_finishes_at_first_token() -> None:
    worker = Worker("w0", MODEL)
    worker.add("r1", "a", 50, 1, now=0.0)
    events = run_all(worker)
    assert [e.kind for e in events] == ["first_token", "finish"]
    assert [e.at_s for e in events] == pytest.approx([0.05, 0.05])


def test_sequences_added_together_share_iterations() -> None:
    worker = Worker("w0", MODEL)
    worker.add("r1", "a", 100, 3, now=0.0)
    worker.add("r2", "b", 100, 3, now=0.0)
    events = run_all(worker)
    firsts = {e.request_id: e.at_s for e in events if e.kind == "first_token"}
    finishes = {e.request_id: e.at_s for e in events if e.kind == "finish"}
    # One prefill iteration of 200 tokens, then two decode steps for a batch of 2.
    assert firsts == {"r1": pytest.approx(0.2), "r2": pytest.approx(0.2)}
    assert finishes["r1"] == pytest.approx(0.2 + 2 * 0.012)
    assert finishes["r2"] == finishes["r1"]


def test_late_arrival_joins_at_the_next_iteration_boundary() -> None:
    worker = Worker("w0", MODEL)
    worker.add("r1", "a", 10, 100, now=0.0)  # first token at 0.01, then steps of 0.011
    worker.advance(0.5)
    worker.add("r2", "b", 10, 2, now=0.5)
    events = run_all(worker)
    first_r2 = next(e.at_s for e in events if e.request_id == "r2" and e.kind == "first_token")
    # The decode run is cut at the first boundary >= 0.5: 0.01 + k * 0.011.
    boundary = 0.01 + 45 * 0.011
    assert boundary >= 0.5 > boundary - 0.011
    # That iteration prefills r2 (10 tokens = 0.01 s) and decodes r1 (batch of 1).
    assert first_r2 == pytest.approx(boundary + 0.01 + 0.011)
    finish_r1 = next(e for e in events if e.request_id == "r1" and e.kind == "finish")
    assert finish_r1.output_tokens == 100


def test_max_batch_queues_in_the_engine() -> None:
    worker = Worker("w0", MODEL)
    for i in range(6):
        worker.add(f"r{i}", "a", 10, 10, now=0.0)
    assert worker.batch == 4
    assert worker.queue_depth == 2
    assert worker.feedback(0.0).queue_depth == 2
    events = run_all(worker)
    finished = [e.request_id for e in events if e.kind == "finish"]
    assert sorted(finished) == [f"r{i}" for i in range(6)]
    first = {e.request_id: e.at_s for e in events if e.kind == "first_token"}
    assert first["r4"] > first["r3"]  # waited for a slot


def test_kv_capacity_limits_the_batch_but_a_big_sequence_runs_alone() -> None:
    model = FleetModel(
        prefill_tokens_per_s=1000.0,
        decode_step_s=0.01,
        decode_step_per_seq_s=0.0,
        max_batch=8,
        kv_capacity_tokens=1000,
    )
    worker = Worker("w0", model)
    worker.add("a", "t", 400, 100, now=0.0)  # 500 tokens of KV
    worker.add("b", "t", 400, 100, now=0.0)  # 1000: full
    worker.add("c", "t", 10, 10, now=0.0)  # does not fit
    assert worker.batch == 2
    assert worker.queue_depth == 1
    assert worker.kv_usage == pytest.approx(1.0)
    run_all(worker)
    huge = Worker("w1", model)
    huge.add("big", "t", 5000, 10, now=0.0)  # larger than the whole cache
    assert huge.batch == 1
    assert [e.kind for e in run_all(huge)] == ["first_token", "finish"]


def test_chunked_prefill_splits_a_long_prompt() -> None:
    model = FleetModel(
        prefill_tokens_per_s=1000.0,
        decode_step_s=0.01,
        decode_step_per_seq_s=0.0,
        max_batch=8,
        kv_capacity_tokens=100_000,
        prefill_chunk_tokens=100,
    )
    worker = Worker("w0", model)
    worker.add("short", "a", 10, 50, now=0.0)
    worker.add("long", "b", 1000, 2, now=0.0)
    events = run_all(worker)
    first = {e.request_id: e.at_s for e in events if e.kind == "first_token"}
    # The short prompt finishes in the first chunk; the long one needs 10+ chunks,
    # during which "short" keeps decoding (its tokens are not starved).
    assert first["short"] == pytest.approx(0.1)
    assert first["long"] > 1.0
    finish_short = next(e.at_s for e in events if e.request_id == "short" and e.kind == "finish")
    assert finish_short < first["long"] + 1.0


def test_preempt_returns_tokens_made_and_resume_finishes_the_rest() -> None:
    sink = Sink()
    worker = Worker("w0", MODEL, sink)
    worker.add("r1", "a", 100, 50, now=0.0)  # first token at 0.1, then 0.011 per token
    worker.advance(0.1 + 10 * 0.011 + 0.005)  # 10 full steps after the first token
    made, served_input = worker.preempt("r1", 0.1 + 10 * 0.011 + 0.005)
    assert made == 11  # first token + 10 steps; the step in progress is lost
    assert served_input == 100
    assert worker.in_flight == 0
    assert not worker.busy
    assert sink.output == {"a": 11}
    resumed = Worker("w1", MODEL, sink)
    resumed.add("r1", "a", 100, 50, now=1.0, done_output_tokens=made, served_input_tokens=100)
    events = run_all(resumed)
    assert events[-1].kind == "finish"
    assert events[-1].output_tokens == 50
    # Prefill recomputes prompt + made tokens (111 tokens), then 38 more steps.
    assert events[-1].at_s == pytest.approx(1.0 + 0.111 + 38 * 0.011)
    # The recomputed prompt is not service again; every output token counted once.
    assert sink.input == {"a": 100}
    assert sink.output == {"a": 50}


def test_preempt_of_a_waiting_sequence_made_nothing() -> None:
    worker = Worker("w0", MODEL)
    for i in range(5):
        worker.add(f"r{i}", "a", 10, 10, now=0.0)
    assert worker.preempt("r4", 0.0) == (0, 0)
    assert worker.queue_depth == 0
    with pytest.raises(KeyError):
        worker.preempt("r4", 0.0)


def test_preempt_keeps_the_rest_of_the_batch_on_time() -> None:
    worker = Worker("w0", MODEL)
    worker.add("a", "t", 10, 20, now=0.0)
    worker.add("b", "t", 10, 20, now=0.0)
    worker.advance(0.1)
    worker.preempt("b", 0.1)
    events = run_all(worker)
    finish_a = next(e for e in events if e.request_id == "a" and e.kind == "finish")
    assert finish_a.output_tokens == 20
    assert all(e.request_id == "a" for e in events)


def test_adding_twice_is_an_error() -> None:
    worker = Worker("w0", MODEL)
    worker.add("r1", "a", 10, 10, now=0.0)
    with pytest.raises(ValueError, match="already on worker"):
        worker.add("r1", "a", 10, 10, now=0.0)


def test_feedback_reports_ttft_tpot_and_utilisation() -> None:
    worker = Worker("w0", MODEL)
    idle = worker.feedback(1.0)
    assert idle.ttft_s is None
    assert idle.tpot_s is None
    assert idle.gpu_util == 0.0
    worker.add("r1", "a", 100, 1000, now=1.0)
    worker.advance(1.5)
    fb = worker.feedback(1.5)
    assert fb.ttft_s == pytest.approx(0.1)
    assert fb.tpot_s == pytest.approx(MODEL.step_s(1))
    assert fb.queue_depth == 0
    assert fb.gpu_util == pytest.approx(1.0)
    assert fb.kv_usage == pytest.approx(1100 / 10_000)
    # The next report covers only what happened since.
    assert worker.feedback(1.6).ttft_s is None


def test_service_accounting_matches_tokens_over_many_sequences() -> None:
    sink = Sink()
    worker = Worker("w0", MODEL, sink)
    total_in = total_out = 0
    events: list[SeqEvent] = []
    for i in range(20):
        now = i * 0.05
        events.extend(worker.advance(now))
        worker.add(f"r{i}", "a" if i % 2 else "b", 30 + i, 5 + i, now=now)
        total_in += 30 + i
        total_out += 5 + i
    events.extend(run_all(worker))
    assert sum(1 for e in events if e.kind == "finish") == 20
    assert sum(sink.input.values()) == total_in
    assert sum(sink.output.values()) == total_out
