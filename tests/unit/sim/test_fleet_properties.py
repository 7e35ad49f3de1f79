"""Properties of the worker model under random adds, preemptions and resumes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.sim.fleet import FleetModel, SeqEvent, Worker

MODEL = FleetModel(
    prefill_tokens_per_s=2000.0,
    decode_step_s=0.01,
    decode_step_per_seq_s=0.001,
    max_batch=3,
    kv_capacity_tokens=600,
    prefill_chunk_tokens=64,
)


class Sink:
    def __init__(self) -> None:
        self.input = 0
        self.output = 0

    def service(
        self, tenant: str, start_s: float, end_s: float, input_tokens: int, output_tokens: int
    ) -> None:
        assert end_s >= start_s
        assert input_tokens >= 0
        assert output_tokens >= 0
        self.input += input_tokens
        self.output += output_tokens

    def busy(self, worker_id: str, start_s: float, end_s: float) -> None:
        assert end_s > start_s


op = st.one_of(
    st.tuples(
        st.just("add"),
        st.floats(0.0, 0.3),
        st.integers(1, 300),
        st.integers(0, 80),
    ),
    st.tuples(st.just("preempt"), st.floats(0.0, 0.3), st.integers(0, 50), st.just(0)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=40))
def test_every_token_is_made_once_and_every_request_finishes(
    ops: list[tuple[str, float, int, int]],
) -> None:
    sink = Sink()
    worker = Worker("w0", MODEL, sink)
    now = 0.0
    sizes: dict[str, tuple[int, int]] = {}
    done: dict[str, tuple[int, int]] = {}  # request -> (output made, prompt served) when stopped
    finished: dict[str, SeqEvent] = {}
    stopped: list[str] = []
    events: list[SeqEvent] = []

    def collect(batch: list[SeqEvent]) -> None:
        for event in batch:
            assert event.at_s <= now + 1e-9
            if event.kind == "finish":
                assert event.request_id not in finished
                finished[event.request_id] = event
        events.extend(batch)

    for kind, gap, a, b in ops:
        now += gap
        collect(worker.advance(now))
        if kind == "add":
            rid = f"r{len(sizes)}"
            sizes[rid] = (a, b)
            worker.add(rid, "t", a, b, now)
        else:
            running = sorted(set(sizes) - set(finished) - set(stopped))
            if running:
                rid = running[a % len(running)]
                made, served = worker.preempt(rid, now)
                assert 0 <= made <= sizes[rid][1]
                assert 0 <= served <= sizes[rid][0]
                done[rid] = (made, served)
                stopped.append(rid)
        collect(worker.advance(now))
    # Resume everything that was stopped, then run to the end.
    for rid in stopped:
        made, served = done[rid]
        worker.add(rid, "t", *sizes[rid], now, done_output_tokens=made, served_input_tokens=served)
    while (t := worker.next_event_s()) is not None:
        now = max(now, t)
        collect(worker.advance(t))
    assert set(finished) == set(sizes)
    assert worker.in_flight == 0
    assert worker.kv_usage == 0.0
    for rid, (_, output) in sizes.items():
        assert finished[rid].output_tokens == output
    assert sink.output == sum(output for _, output in sizes.values())
    assert sink.input == sum(prompt for prompt, _ in sizes.values())
    firsts = {e.request_id: e.at_s for e in events if e.kind == "first_token"}
    for rid, event in finished.items():
        assert firsts[rid] <= event.at_s
