"""A refused add becomes the request's SubscriptionsChanged, with the status and the adds."""

from __future__ import annotations

import grpc

from broker.errors import LimitExceeded
from broker.service import _outbound_frame
from broker.session import Changed
from broker.types import QueueName


def test_a_refusal_rides_in_the_confirmation_with_its_code_and_adds() -> None:
    adds = (QueueName("t", "chat", "a"), QueueName("t", "chat", "b"))
    error = LimitExceeded("add refused: ... above its limit max_subscriptions=2")
    frame = _outbound_frame(Changed((), 1, 2, error, adds))
    changed = frame.changed
    assert changed.refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "max_subscriptions=2" in changed.refused.message
    assert [(r.topic, r.lite_topic) for r in changed.refused_adds] == [
        ("chat", "a"),
        ("chat", "b"),
    ]
    assert (list(changed.started), changed.removed, changed.total) == ([], 1, 2)
    assert not frame.HasField("notice")


def test_an_accepted_change_carries_no_refusal() -> None:
    frame = _outbound_frame(Changed(((QueueName("t", "chat", "a"), 4),), 0, 1))
    assert not frame.changed.HasField("refused")
    assert [s.next_offset for s in frame.changed.started] == [4]
