"""A draining worker in the policy: no room, swaps included, and no preemption victims on it."""

from __future__ import annotations

from .support import admit, ids, policy, req


def test_a_draining_worker_gets_nothing_new_and_is_never_a_preemption_victim() -> None:
    p = policy("tidegate", workers=2, window=2)
    admit(p, req("l1", "a", 0), req("l2", "b", 0))
    assert sorted(ids(p.dispatch(0.0))) == ["l1", "l2"]
    p.drain_worker("w0", 1.0)
    p.drain_worker("w0", 1.0)  # again: no change
    admit(p, req("l3", "c", 0), req("l4", "c", 0), req("l5", "c", 0), now=1.0)
    assert {d.worker_id for d in p.dispatch(1.0)} == {"w1"}
    assert p.dispatch(1.0, "w0") == []  # pulling changes nothing
    admit(p, req("h1", "a", 2), now=2.0)
    # Only requests on w1 may be stopped: a slot freed on w0 would take nothing.
    victims = p.preemptions(2.0)
    assert victims
    assert all(v.worker_id == "w1" for v in victims)
    # What w0 runs completes as usual.
    on_w0 = [rid for rid in ("l1", "l2") if rid not in {v.request_id for v in victims}]
    for rid in on_w0:
        p.complete(rid, 10, 10, 3.0)
    assert p.dispatch(3.0, "w0") == []
