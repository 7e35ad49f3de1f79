"""Preemption: who is stopped, when, and how the stopped request comes back."""

from __future__ import annotations

import random

import pytest

from scheduler.errors import InvalidRequestError, UnknownRequestError
from scheduler.policy import create_policy
from scheduler.types import Preempt, WindowConfig, WorkerFeedback

from .support import admit, config, ids, policy, req, tenant


def test_a_waiting_higher_band_stops_the_latest_lower_band_request() -> None:
    p = policy("tidegate", workers=1, window=2)
    admit(p, req("l1", "a", 0), req("l2", "b", 0))
    assert ids(p.dispatch(0.0)) == ["l1", "l2"]
    admit(p, req("h1", "c", 2), now=1.0)
    assert p.dispatch(1.0) == []  # no free window
    # The one dispatched last has done the least work a resume must redo.
    assert p.preemptions(1.0) == [Preempt("l2", "w0")]
    # Until the runtime answers, the same request is not named again.
    assert p.preemptions(1.5) == []
    p.preempted("l2", 3, 2.0)
    [d] = p.dispatch(2.0)
    assert d.request.request_id == "h1"
    assert p.stats().preemptions == 1
    assert p.stats().tenants["b"].preempted == 1


def test_no_preemption_while_any_window_is_free_or_for_the_same_band() -> None:
    p = policy("tidegate", workers=2, window=1)
    admit(p, req("l1", "a", 0))
    p.dispatch(0.0)
    admit(p, req("h1", "b", 2))
    assert p.preemptions(0.0) == []  # w1 is free: dispatch will serve h1
    p.dispatch(0.0)
    admit(p, req("l2", "c", 0))
    assert p.preemptions(0.0) == []  # l2 waits in the same band as running l1


def test_sheddable_requests_go_first_even_if_older() -> None:
    p = policy("tidegate", workers=1, window=3)
    admit(p, req("shed", "a", -1))
    p.dispatch(0.0)
    admit(p, req("n1", "b", 0), req("n2", "c", 0))
    p.dispatch(1.0)
    admit(p, req("top1", "a", 2), req("top2", "b", 1), now=2.0)
    victims = [pre.request_id for pre in p.preemptions(2.0)]
    # Two waiting: the sheddable one first, then the latest of band 0.
    assert victims == ["shed", "n2"]


def test_preempted_request_resumes_with_remaining_tokens_ahead_of_later_arrivals() -> None:
    p = policy("tidegate", workers=1, window=1)
    admit(p, req("a1", "a", 0, input_tokens=100, output_tokens=50))
    [first] = p.dispatch(0.0)
    assert first.done_output_tokens == 0
    admit(p, req("a2", "a", 0), req("h", "b", 2), now=1.0)
    [preempt] = p.preemptions(1.0)
    assert preempt == Preempt("a1", "w0")
    p.preempted("a1", 20, 1.5)
    # Charged for the work done so far: input + 2 x 20 output tokens.
    assert p.stats().tenants["a"].charged == 140.0
    [high] = p.dispatch(1.5)
    assert high.request.request_id == "h"
    p.complete("h", 10, 10, 2.0)
    [resumed] = p.dispatch(2.0)
    # a1 keeps its place ahead of a2, and resumes after its 20 tokens.
    assert resumed.request.request_id == "a1"
    assert resumed.done_output_tokens == 20
    assert resumed.request.output_tokens == 50  # the original estimate travels unchanged
    assert p.stats().tenants["a"].charged == 200.0  # + 2 x the 30 remaining
    p.complete("a1", 100, 55, 3.0)  # the real total, over both runs
    assert p.stats().tenants["a"].charged == 210.0
    [last] = p.dispatch(3.0)
    assert last.request.request_id == "a2"


def test_a_second_preemption_reports_cumulative_tokens() -> None:
    p = policy("tidegate", workers=1, window=1)
    admit(p, req("a1", "a", 0, input_tokens=0, output_tokens=100))
    p.dispatch(0.0)
    for step, done in enumerate((10, 30)):
        admit(p, req(f"h{step}", "b", 2))
        [pre] = p.preemptions(0.0)
        p.preempted(pre.request_id, done, 0.0)
        [h] = p.dispatch(0.0)
        p.complete(h.request.request_id, 10, 10, 0.0)
        [again] = p.dispatch(0.0)
        assert again.done_output_tokens == done
    # A smaller count cannot undo output already streamed.
    admit(p, req("h9", "b", 2))
    [pre] = p.preemptions(0.0)
    p.preempted(pre.request_id, 5, 0.0)
    p.dispatch(0.0)
    p.complete("h9", 1, 1, 0.0)
    [again] = p.dispatch(0.0)
    assert again.done_output_tokens == 30


def test_victims_on_a_worker_over_its_window_free_nothing_and_are_skipped() -> None:
    window = WindowConfig(initial=2, minimum=1, maximum=2, decrease=0.5, adjust_interval_s=0.0)
    p = create_policy("tidegate", config(tenant("a"), tenant("b"), window=window), random.Random(0))
    p.add_worker("w0", 0.0)
    p.add_worker("w1", 0.0)
    admit(p, *(req(f"l{i}", "a", 0) for i in range(4)))
    assert ids(p.dispatch(0.0, "w1")) == ["l0", "l1"]
    assert ids(p.dispatch(0.0, "w0")) == ["l2", "l3"]
    p.feedback("w0", WorkerFeedback(ttft_s=5.0), 1.0)  # w0's window: 2 -> 1, running 2
    assert p.stats().workers["w0"].window == 1
    admit(p, req("h1", "b", 2), req("h2", "b", 2))
    victims = p.preemptions(1.0)
    assert [(v.request_id, v.worker_id) for v in victims] == [("l1", "w1"), ("l0", "w1")]


def test_answered_preemptions_free_slots_for_the_highest_waiting() -> None:
    p = policy("tidegate", workers=1, window=2)
    admit(p, req("l1", "a", 0), req("l2", "a", 0))
    p.dispatch(0.0)
    admit(p, req("h1", "b", 2))
    [first] = p.preemptions(0.0)
    admit(p, req("h2", "b", 2))
    # h1 already has a slot coming; only h2 needs a new victim.
    [second] = p.preemptions(0.0)
    assert {first.request_id, second.request_id} == {"l1", "l2"}
    assert p.preemptions(0.0) == []


def test_reports_about_requests_not_running_raise() -> None:
    p = policy("tidegate", workers=1, window=1)
    admit(p, req("q1"), req("q2"))
    p.dispatch(0.0)
    with pytest.raises(UnknownRequestError, match="queued, not running"):
        p.preempted("q2", 0, 0.0)
    with pytest.raises(UnknownRequestError, match="'nope'"):
        p.complete("nope", 1, 1, 0.0)
    with pytest.raises(UnknownRequestError):
        p.lease_expired("nope", 0.0)
    with pytest.raises(UnknownRequestError):
        p.first_token("q2", 0.0)


@pytest.mark.parametrize("name", ["fifo", "round-robin"])
def test_policies_without_bands_never_preempt(name: str) -> None:
    p = policy(name, workers=1, window=1)
    admit(p, req("l1", "a", 0))
    p.dispatch(0.0)
    admit(p, req("h1", "b", 2))
    assert p.preemptions(0.0) == []


def test_strict_priority_preempts_like_tidegate() -> None:
    p = policy("strict-priority", workers=1, window=1)
    admit(p, req("l1", "a", 0))
    p.dispatch(0.0)
    admit(p, req("h1", "b", 2))
    assert p.preemptions(0.0) == [Preempt("l1", "w0")]


def test_with_band_shares_a_band_ahead_of_its_share_does_not_preempt() -> None:
    p = policy("tidegate", workers=1, window=1, band_shares=(1.0, 1.0))
    # Band 2 is served first and runs ahead of band 0 in share-normalised service.
    admit(p, req("h0", "a", 2), req("l0", "b", 0))
    [h0] = p.dispatch(0.0)
    assert h0.request.request_id == "h0"
    p.complete("h0", 10, 10, 0.0)
    [l0] = p.dispatch(0.0)
    assert l0.request.request_id == "l0"
    admit(p, req("h1", "a", 2))
    # Both bands have had one equal request: band 2 is not behind, so l0 runs on.
    assert p.preemptions(0.0) == []
    p.complete("l0", 10, 10, 0.0)
    [h1] = p.dispatch(0.0)
    admit(p, req("l1", "b", 0))
    assert p.preemptions(0.0) == []  # never upward
    p.complete(h1.request.request_id, 10, 10, 0.0)
    [l1] = p.dispatch(0.0)
    # l1 turns out a hundred times bigger than estimated: band 0 is now far ahead ...
    p.complete(l1.request.request_id, 1000, 1000, 0.0)
    admit(p, req("l2", "b", 0))
    [l2] = p.dispatch(0.0)
    assert l2.request.request_id == "l2"
    admit(p, req("h2", "a", 2))
    # ... and then the waiting band 2 is behind and may stop it.
    assert p.preemptions(0.0) == [Preempt("l2", "w0")]


def test_when_every_worker_just_cut_its_window_a_top_band_request_still_gets_a_swap() -> None:
    window = WindowConfig(initial=4, minimum=1, maximum=4, decrease=0.5, adjust_interval_s=0.0)
    p = create_policy("tidegate", config(tenant("a"), tenant("b"), window=window), random.Random(0))
    p.add_worker("w0", 0.0)
    p.add_worker("w1", 0.0)
    admit(p, *(req(f"l{i}", "a", 0) for i in range(10)))
    low = p.dispatch(0.0)
    assert len(low) == 8
    for worker in ("w0", "w1"):
        p.feedback(worker, WorkerFeedback(ttft_s=5.0), 1.0)  # window 4 -> 2, holding 4
    admit(p, req("h1", "b", 2), now=1.0)
    assert p.dispatch(1.0) == []
    # Both workers drain; stopping a request there frees no slot in the window,
    # but it may still be swapped for the top-band request.
    [victim] = p.preemptions(1.0)
    assert victim.request_id == low[-1].request.request_id  # dispatched last
    p.preempted(victim.request_id, 0, 1.5)
    [swapped_in] = p.dispatch(1.5)
    assert (swapped_in.request.request_id, swapped_in.worker_id) == ("h1", victim.worker_id)
    # One for one: the worker holds what it held, no more; nothing else goes in.
    assert p.stats().workers[victim.worker_id].in_flight == 4
    assert p.dispatch(1.5) == []


def test_a_swap_lapses_once_the_window_has_room_of_its_own() -> None:
    window = WindowConfig(initial=2, minimum=1, maximum=2, decrease=0.5, adjust_interval_s=0.0)
    p = create_policy("tidegate", config(tenant("a"), tenant("b"), window=window), random.Random(0))
    p.add_worker("w0", 0.0)
    admit(p, req("l0", "a", 0), req("l1", "a", 0))
    p.dispatch(0.0)
    p.feedback("w0", WorkerFeedback(ttft_s=5.0), 1.0)  # window 1, holding 2
    admit(p, req("h1", "b", 2), now=1.0)
    [victim] = p.preemptions(1.0)
    assert victim.request_id == "l1"
    p.preempted("l1", 0, 1.0)
    p.complete("l0", 10, 10, 1.0)  # before the swap is used, the window frees itself
    assert ids(p.dispatch(1.0)) == ["h1"]
    assert p.stats().workers["w0"].in_flight == 1  # the window's slot, not window + swap


def test_preempted_before_its_prompt_ran_is_charged_only_the_prompt_processed() -> None:
    p = policy("tidegate", workers=1, window=1)
    admit(p, req("a1", "a", 0, input_tokens=100, output_tokens=50))
    p.dispatch(0.0)
    admit(p, req("h", "b", 2))
    [pre] = p.preemptions(0.0)
    # Stopped in the middle of its prefill: 40 prompt tokens processed, no output.
    p.preempted(pre.request_id, 0, 1.0, input_processed=40)
    assert p.stats().tenants["a"].charged == 40.0
    p.dispatch(1.0)
    p.complete("h", 10, 10, 1.5)
    [resumed] = p.dispatch(1.5)
    assert resumed.request.request_id == "a1"
    # The resume books the rest of the prompt and all of the output.
    assert p.stats().tenants["a"].charged == 40.0 + 60.0 + 2 * 50.0
    # Stopped again, before the engine even reached it this time: a smaller
    # report cannot undo the prompt tokens already processed.
    admit(p, req("h2", "b", 2))
    [again] = p.preemptions(1.5)
    p.preempted(again.request_id, 0, 2.0, input_processed=0)
    assert p.stats().tenants["a"].charged == 40.0


def test_preempted_with_no_prompt_processed_charges_nothing() -> None:
    p = policy("tidegate", workers=1, window=1)
    admit(p, req("a1", "a", 0, input_tokens=100, output_tokens=50))
    p.dispatch(0.0)
    admit(p, req("h", "b", 2))
    [pre] = p.preemptions(0.0)
    p.preempted(pre.request_id, 0, 0.5, input_processed=0)
    assert p.stats().tenants["a"].charged == 0.0
    with pytest.raises(InvalidRequestError, match="input_processed -1"):
        p.preempted("h", 0, 0.5, input_processed=-1)
