"""The producer journal entry: what it names of a batch, and the outcomes it gives back."""

from __future__ import annotations

import json

from broker.producers import JOURNALED, Journaled, ProducerState, decode_journal, journal_request
from broker.types import PublishRequest, QueueName


def _req(topic: str, *lites: str, tenant: str = "acme") -> PublishRequest:
    return PublishRequest(topic, b"x", lites, {}, tenant)


def _entry(requests: list[PublishRequest], last: int) -> ProducerState:
    journal = journal_request("acme", "p", last, requests)
    assert journal.namespace == ""
    assert journal.lite_topics == ("acme:p",)
    assert isinstance(journal.body, bytes)
    return decode_journal(journal.body, 1234, 99.5)


def test_an_entry_names_each_message_of_the_batch_in_sequence_order() -> None:
    requests = [_req("t", "a"), _req("t", "a"), _req("t", "b", "a"), _req("p"), _req("t", "a")]
    state = _entry(requests, last=14)
    assert state.last == 14
    journaled = state.journaled
    assert journaled is not None
    assert (journaled.first, journaled.position, journaled.timestamp) == (10, 1234, 99.5)
    assert journaled.destinations == tuple(("acme", r.topic, r.lite_topics) for r in requests)
    a, b, p = QueueName("acme", "t", "a"), QueueName("acme", "t", "b"), QueueName("acme", "p", "")
    assert journaled.counts() == {a: 4, b: 1, p: 1}


def test_outcomes_walk_back_from_each_queue_end() -> None:
    requests = [_req("t", "a"), _req("t", "a"), _req("t", "b", "a"), _req("p"), _req("t", "a")]
    journaled = _entry(requests, last=14).journaled
    assert journaled is not None
    a, b, p = QueueName("acme", "t", "a"), QueueName("acme", "t", "b"), QueueName("acme", "p", "")
    assert journaled.outcomes({a: 20, b: 7, p: 0}) == {
        10: ((17,), 99.5, 0),
        11: ((18,), 99.5, 0),
        12: ((7, 19), 99.5, 0),
        13: ((0,), 99.5, 0),
        14: ((20,), 99.5, 0),
    }
    # A queue that could not be read leaves the messages that went there unknown.
    assert set(journaled.outcomes({a: 20, b: None, p: 0})) == {10, 11, 13, 14}


def test_an_entry_names_at_most_the_last_journaled_messages() -> None:
    requests = [_req("t", f"l-{i % 3}") for i in range(JOURNALED + 50)]
    journaled = _entry(requests, last=999).journaled
    assert journaled is not None
    assert len(journaled.destinations) == JOURNALED
    assert journaled.first == 999 - JOURNALED + 1
    assert journaled.destinations[-1] == ("acme", "t", (f"l-{(JOURNALED + 49) % 3}",))


def test_long_names_shorten_the_tail_and_keep_the_entry_small() -> None:
    requests = [_req("t", *(f"{i}-{j}-" + "n" * 120 for j in range(8))) for i in range(200)]
    journal = journal_request("acme", "p", 199, requests)
    assert isinstance(journal.body, bytes)
    assert len(journal.body) < 20_000
    journaled = decode_journal(journal.body, 0, 0.0).journaled
    assert journaled is not None
    assert 1 <= len(journaled.destinations) < 200
    assert journaled.destinations[-1] == ("acme", "t", requests[-1].lite_topics)


def test_damaged_and_sequence_only_entries() -> None:
    assert decode_journal(b"not json", 0, 0.0) == ProducerState()
    assert decode_journal(b'{"first": 1}', 0, 0.0) == ProducerState()
    # As servers before destinations were journaled wrote it: the sequence only.
    assert decode_journal(b'{"last": 7}', 0, 0.0) == ProducerState(last=7)
    broken = json.dumps({"last": 7, "first": 6, "to": [["acme", "t", ["a"]]], "runs": [[3, 2]]})
    assert decode_journal(broken.encode(), 0, 0.0) == ProducerState(last=7)


def test_looked_up_outcomes_join_those_recorded_since() -> None:
    state = ProducerState(last=14, journaled=Journaled(13, (("acme", "t", ()),) * 2, 0, 1.0))
    state.record(15, [((5,), 2.0, 0)])
    state.remember({13: ((3,), 1.0, 0), 14: ((4,), 1.0, 0)})
    assert state.known(13) == ((3,), 1.0, 0)
    assert state.known(15) == ((5,), 2.0, 0)
    assert state.last == 15
