"""A finished request's view, as the finished journal and the stores keep it."""

from __future__ import annotations

from scheduler.runtime.values import RequestView, State


def finished_view(
    rid: str, state: str = State.COMPLETED, worker: str = "w1", reason: str | None = None
) -> RequestView:
    """A request ``rid`` of tenant acme that ended in ``state`` on ``worker``.

    ``reason`` defaults to none for a completed request and a cancellation
    otherwise. The numbers are not round (an offset of 3, a quarter second)
    so that what a store keeps is checked to the last digit.
    """
    if reason is None:
        reason = "" if state == State.COMPLETED else "cancelled by the client"
    return RequestView(
        request_id=rid,
        tenant="acme",
        state=state,
        priority=1,
        reply_topic="chatbot",
        reply_lite_topic=f"req-{rid}",
        reply_offset=3,
        chunks=2,
        attempts=1,
        worker_id=worker,
        input_tokens=10,
        output_tokens=20,
        reason=reason,
        admitted_at=1.7e9 + 0.25,
    )
