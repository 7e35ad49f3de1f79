"""The broker against a plain reference model: random publish / read / expire / reopen.

The model is a dict of lists: each queue's messages in offset order, plus
when each lite-topic was last used. Time is an injected clock moved in whole
seconds, TTLs are whole seconds and the expiry granularity is one second, so
the model can say exactly which topics a sweep removes. Segments are tiny,
so every sweep also reclaims log segments: reads checking every live message
prove reclamation never takes one that is still needed.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from broker import Broker, BrokerSettings, FsyncPolicy, NotFound, PublishRequest, QueueName

TOPICS = {"chatbot": 5, "a2a": 3}  # parent -> TTL in seconds
LITES = ["s-1", "s-2", "s-3", "t:9"]
CHUNK = 4096


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ModelQueue:
    messages: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    last_active: float = 0.0
    subscribers: int = 0


bodies = st.one_of(
    st.binary(max_size=64),
    st.integers(CHUNK - 2, 3 * CHUNK).map(lambda n: bytes([n % 251]) * n),  # chunked or not
)
properties = st.dictionaries(st.sampled_from(["a", "b"]), st.text(max_size=5), max_size=2)
requests = st.tuples(
    st.sampled_from([*TOPICS, "requests"]),
    st.lists(st.sampled_from(LITES), unique=True, max_size=3),
    bodies,
    properties,
)


class BrokerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="broker-model-"))
        self.clock = Clock()
        self.settings = BrokerSettings(
            fsync=FsyncPolicy.INTERVAL,
            segment_bytes=4096,
            chunk_bytes=CHUNK,
            default_ttl_s=100.0,
            ttl_by_topic=TOPICS,
            hot_topics=3,  # smaller than the number of queues: the cold path runs too
        )
        self.broker = Broker.open(self.directory, self.settings, clock=self.clock)
        self.model: dict[QueueName, ModelQueue] = {}

    def teardown(self) -> None:
        self.broker.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # ------------------------------------------------------------ helpers

    def _targets(self, topic: str, lites: list[str]) -> list[QueueName]:
        if topic == "requests" or not lites:
            return [QueueName("", topic)]
        return [QueueName("", topic, lite) for lite in lites]

    def _record(self, topic: str, lites: list[str], body: bytes, props: dict[str, str]) -> None:
        for name in self._targets(topic, lites):
            queue = self.model.setdefault(name, ModelQueue())
            queue.messages.append((body, props))
            queue.last_active = self.clock.now

    # -------------------------------------------------------------- rules

    @rule(request=requests)
    def publish(self, request: tuple[str, list[str], bytes, dict[str, str]]) -> None:
        topic, lites, body, props = request
        lites = [] if topic == "requests" else lites
        before = {
            n: len(self.model.get(n, ModelQueue()).messages) for n in self._targets(topic, lites)
        }
        result = self.broker.publish(topic, body, lite_topics=lites, properties=props)
        assert list(result.offsets) == list(before.values())
        self._record(topic, lites, body, props)

    @rule(batch=st.lists(requests, min_size=1, max_size=6))
    def publish_batch(self, batch: list[tuple[str, list[str], bytes, dict[str, str]]]) -> None:
        prepared = [
            (t, [] if t == "requests" else lites, body, props) for t, lites, body, props in batch
        ]
        results = self.broker.publish_batch(
            [PublishRequest(t, body, tuple(lites), props) for t, lites, body, props in prepared]
        )
        for (topic, lites, body, props), result in zip(prepared, results, strict=True):
            expected = [
                len(self.model.get(n, ModelQueue()).messages) for n in self._targets(topic, lites)
            ]
            assert list(result.offsets) == expected
            self._record(topic, lites, body, props)

    # A run of one queue's messages lies side by side in the log, so a long read
    # of it walks the log (reading.Reader._walk) instead of the index.
    @rule(
        topic=st.sampled_from([*TOPICS, "requests"]),
        lite=st.sampled_from(LITES),
        body=st.sampled_from([b"", b"x", b"y" * 300, b"z" * (2 * CHUNK)]),
        count=st.integers(16, 40),
        props=properties,
    )
    def publish_run(
        self, topic: str, lite: str, body: bytes, count: int, props: dict[str, str]
    ) -> None:
        lites = [] if topic == "requests" else [lite]
        self.broker.publish_batch([PublishRequest(topic, body, tuple(lites), props)] * count)
        for _ in range(count):
            self._record(topic, lites, body, props)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.model, key=str)))
        queue = self.model[name]
        start = data.draw(st.integers(0, len(queue.messages) + 1))
        count = data.draw(st.integers(1, 5) | st.integers(16, 60))
        got = self.broker.read(name, start, count)
        expected = queue.messages[start : start + count]
        assert [m.offset for m in got] == list(range(start, start + len(expected)))
        for message, (body, props) in zip(got, expected, strict=True):
            assert message.properties == props
            assert message.size == len(body)
            assert b"".join(self.broker.open_body(message)) == body
            assert message.chunked == (len(body) > CHUNK)

    @precondition(lambda self: any(n.lite for n in self.model))
    @rule(data=st.data())
    def subscribe(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted((n for n in self.model if n.lite), key=str)))
        self.broker.subscribe(name)
        self.model[name].subscribers += 1

    @precondition(lambda self: any(q.subscribers for q in self.model.values()))
    @rule(data=st.data())
    def unsubscribe(self, data: st.DataObject) -> None:
        held = sorted((n for n, q in self.model.items() if q.subscribers), key=str)
        name = data.draw(st.sampled_from(held))
        self.broker.unsubscribe(name)
        self.model[name].subscribers -= 1
        if not self.model[name].subscribers:
            self.model[name].last_active = self.clock.now

    @rule(seconds=st.integers(0, 8))
    def expire(self, seconds: int) -> None:
        self.clock.now += seconds
        report = self.broker.expire()
        doomed = [
            name
            for name, queue in self.model.items()
            if name.lite
            and not queue.subscribers
            and queue.last_active + TOPICS[name.topic] <= self.clock.now
        ]
        assert report.expired_queues == len(doomed)
        for name in doomed:
            del self.model[name]

    # Subscriptions are connections and do not survive a restart; the TTL of
    # a topic that lost its subscriber that way runs from its last publish or
    # unsubscribe. The model reopens only with nothing subscribed, to stay exact.
    @precondition(lambda self: not any(q.subscribers for q in self.model.values()))
    @rule()
    def reopen(self) -> None:
        self.broker.close()
        self.broker = Broker.open(self.directory, self.settings, clock=self.clock)

    # --------------------------------------------------------- invariants

    @invariant()
    def every_queue_exists_with_its_length(self) -> None:
        for name, queue in self.model.items():
            assert self.broker.queue_info(name).next_offset == len(queue.messages)
        assert self.broker.stats().queues == len(self.model)

    @invariant()
    def expired_queues_are_gone(self) -> None:
        for topic in TOPICS:
            for lite in LITES:
                name = QueueName("", topic, lite)
                if name not in self.model:
                    try:
                        self.broker.queue_info(name)
                    except NotFound:
                        continue
                    raise AssertionError(f"{name} should not exist")


BrokerModel.TestCase.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None, derandomize=True
)
TestBrokerModel = BrokerModel.TestCase
