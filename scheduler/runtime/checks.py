"""Rules a submit must keep, checked once, with messages naming the field and the rule."""

from __future__ import annotations

import math
from dataclasses import dataclass

from broker.errors import InvalidArgument
from broker.types import LITE_PATTERN, LITE_RULE, TOPIC_RULE, check_topic
from scheduler.runtime.errors import InvalidFieldError
from scheduler.runtime.values import RuntimeOptions, SubmitSpec

__all__ = [
    "IDEMPOTENCY_KEY_PATTERN",
    "IDEMPOTENCY_KEY_RULE",
    "REQUEST_LITE_PREFIX",
    "RESERVED_PREFIX",
    "Checked",
    "check_submit",
]

RESERVED_PREFIX = "tidegate."
REQUEST_LITE_PREFIX = "req-"  # per-request reply lite-topics: req-{request id}
MAX_TOKENS = 2**32 - 1
BYTES_PER_TOKEN = 4  # the estimate when a submit gives no input tokens
# An idempotency key keeps the lite-topic name's rule.
IDEMPOTENCY_KEY_RULE = LITE_RULE
IDEMPOTENCY_KEY_PATTERN = LITE_PATTERN


@dataclass(frozen=True, slots=True)
class Checked:
    reply_topic: str
    input_tokens: int
    output_tokens: int


def check_submit(spec: SubmitSpec, payload_bytes: int, options: RuntimeOptions) -> Checked:
    """Validate ``spec``; fill in the defaults (reply topic, token estimates)."""
    key = spec.idempotency_key
    if key and IDEMPOTENCY_KEY_PATTERN.fullmatch(key) is None:
        shown = key if len(key) <= 64 else key[:64] + "..."
        raise InvalidFieldError(
            f"idempotency_key {shown!r} ({len(key)} characters) breaks the rule "
            f"{IDEMPOTENCY_KEY_RULE}"
        )
    session = spec.session
    if session:
        if LITE_PATTERN.fullmatch(session) is None:
            raise InvalidFieldError(
                f"session_id {session!r} breaks the lite-topic name rule "
                "1 to 128 characters of [A-Za-z0-9_.:@=+-]"
            )
        if session.startswith(REQUEST_LITE_PREFIX):
            raise InvalidFieldError(
                f"session_id {session!r} starts with {REQUEST_LITE_PREFIX!r}, which is kept for "
                "the per-request reply lite-topics of requests without a session"
            )
    reply_topic = spec.reply_topic or options.default_reply_topic
    try:
        check_topic(reply_topic)
    except InvalidArgument:
        raise InvalidFieldError(
            f"reply_topic {reply_topic!r} breaks the topic name rule {TOPIC_RULE}"
        ) from None
    for name in ("input_tokens", "output_tokens"):
        value = getattr(spec, name)
        if not 0 <= value <= MAX_TOKENS:
            raise InvalidFieldError(f"{name} is {value}; it must be in [0, {MAX_TOKENS}]")
    deadline = spec.deadline_s
    if not (math.isfinite(deadline) and deadline >= 0):
        raise InvalidFieldError(f"deadline_s is {deadline!r}; it must be a finite number >= 0")
    size = 0
    for key, value in spec.properties.items():
        if key.startswith(RESERVED_PREFIX):
            raise InvalidFieldError(
                f"properties[{key!r}]: keys starting with {RESERVED_PREFIX!r} are reserved "
                "for the server"
            )
        size += len(key.encode()) + len(value.encode())
    if size > options.max_properties_bytes:
        raise InvalidFieldError(
            f"properties hold {size} bytes; the limit is {options.max_properties_bytes}"
        )
    input_tokens = spec.input_tokens or min(MAX_TOKENS, payload_bytes // BYTES_PER_TOKEN)
    output_tokens = spec.output_tokens or options.default_output_tokens
    return Checked(reply_topic, input_tokens, output_tokens)
