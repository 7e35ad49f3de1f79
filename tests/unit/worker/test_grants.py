"""From a grant to a backend request: prompt, budget, sampling and resume."""

from __future__ import annotations

import json

import pytest

from workers.backends.base import ChatMessage
from workers.grants import GrantError, plan_run

from .fakes import grant


def test_text_prompt_budget_and_sampling_from_properties() -> None:
    plan = plan_run(
        grant(output_tokens=40, properties={"temperature": "0", "top_p": "0.5", "seed": "3"}),
        256,
    )
    request = plan.request
    assert request is not None
    assert (request.prompt, request.max_tokens, request.tenant) == ("prompt", 40, "acme")
    assert (request.sampling.temperature, request.sampling.top_p, request.sampling.seed) == (
        0.0,
        0.5,
        3,
    )
    assert plan_run(grant(output_tokens=0), 256).max_tokens == 256
    assert plan_run(grant(properties={"max_tokens": "12"}), 256).max_tokens == 12


def test_a_chat_payload_becomes_messages() -> None:
    payload = json.dumps([{"role": "user", "content": "hi"}]).encode()
    plan = plan_run(grant(payload=payload, properties={"prompt_format": "chat"}), 8)
    assert plan.request is not None
    assert plan.request.prompt == (ChatMessage("user", "hi"),)


@pytest.mark.parametrize(
    ("properties", "payload", "names"),
    [
        ({"prompt_format": "chat"}, b"not json", "prompt_format chat"),
        ({"prompt_format": "chat"}, b"[]", "no message"),
        ({"prompt_format": "xml"}, b"x", "prompt_format"),
        ({"max_tokens": "0"}, b"x", "max_tokens"),
        ({"top_p": "2"}, b"x", "top_p"),
        ({"seed": "x"}, b"x", "seed"),
    ],
)
def test_a_bad_property_is_named(properties: dict[str, str], payload: bytes, names: str) -> None:
    with pytest.raises(GrantError, match=names):
        plan_run(grant(payload=payload, properties=properties), 8)


def test_resume_takes_the_larger_of_reported_tokens_and_stored_chunks() -> None:
    preempted = plan_run(grant(next_chunk=2, done_output_tokens=5, resume_output=b"ab"), 8)
    assert (preempted.resume_tokens, preempted.request and preempted.request.resume_text) == (
        5,
        "ab",
    )
    lost = plan_run(grant(next_chunk=3, done_output_tokens=0, resume_output=b"abc"), 8)
    assert lost.resume_tokens == 3


def test_nothing_left_to_make_plans_no_request() -> None:
    plan = plan_run(
        grant(output_tokens=4, next_chunk=4, done_output_tokens=4, resume_output=b"x"), 8
    )
    assert (plan.request, plan.resume_tokens, plan.max_tokens) == (None, 4, 4)
