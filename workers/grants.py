"""From a lease grant to a backend request (pure).

A grant carries the payload as bytes and the submitter's properties as
strings; the backend wants a prompt, a token budget and sampling settings.
The rules, in one place:

* prompt: the payload as UTF-8 text; with the property ``prompt_format:
  chat`` the payload is a JSON list of ``{"role", "content"}`` messages.
* ``max_tokens``: the property when given, else the submit's output token
  estimate, else the worker's default.
* sampling: the properties ``temperature``, ``top_p``, ``seed``.
* resume: the output already stored is the text to continue after. The
  server knows the tokens of earlier runs only when they ended by a
  preemption (``done_output_tokens``); after a lost worker it does not, so
  the stored chunks stand in for them (one token per chunk, which streamed
  engines send), whichever is larger.

A property that breaks a rule raises :class:`GrantError` naming it; the
worker reports such a request as failed for good (retrying cannot help).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from tidegate.client import LeaseGrant
from workers.backends.base import ChatMessage, GenerationRequest, Prompt, SamplingParams
from workers.errors import WorkerError

__all__ = ["GrantError", "RunPlan", "plan_run"]


class GrantError(WorkerError):
    """A granted request cannot be turned into a backend request."""


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What to run for a grant. ``request`` is None when nothing is left to make
    (the earlier runs already made ``max_tokens``)."""

    request: GenerationRequest | None
    max_tokens: int
    resume_tokens: int
    input_tokens: int


def _prompt(grant: LeaseGrant) -> Prompt:
    text = grant.payload.decode("utf-8", errors="replace")
    form = grant.properties.get("prompt_format", "text")
    if form == "text":
        return text
    if form != "chat":
        raise GrantError(f"property prompt_format is {form!r}; it must be 'text' or 'chat'")
    try:
        items = json.loads(text)
        messages = tuple(ChatMessage(str(m["role"]), str(m["content"])) for m in items)
    except (ValueError, TypeError, KeyError) as exc:
        raise GrantError(
            "prompt_format chat: the payload must be a JSON list of "
            f'{{"role": ..., "content": ...}} objects ({exc})'
        ) from None
    if not messages:
        raise GrantError("prompt_format chat: the payload holds no message")
    return messages


def _number(properties: Mapping[str, str], key: str, kind: type[float] | type[int]) -> float | None:
    text = properties.get(key)
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        raise GrantError(f"property {key} is {text!r}; it must be a number") from None


def _sampling(properties: Mapping[str, str]) -> SamplingParams:
    temperature = _number(properties, "temperature", float)
    top_p = _number(properties, "top_p", float)
    seed = _number(properties, "seed", int)
    try:
        return SamplingParams(
            temperature=1.0 if temperature is None else temperature,
            top_p=1.0 if top_p is None else top_p,
            seed=None if seed is None else int(seed),
        )
    except ValueError as exc:
        raise GrantError(f"sampling properties: {exc}") from None


def plan_run(grant: LeaseGrant, default_max_tokens: int) -> RunPlan:
    """The backend request for ``grant`` (see the module docstring)."""
    wanted = _number(grant.properties, "max_tokens", int)
    if wanted is not None and wanted < 1:
        raise GrantError(f"property max_tokens is {wanted}; it must be >= 1")
    max_tokens = int(wanted or grant.output_tokens or default_max_tokens)
    resume_text = grant.resume_output.decode("utf-8", errors="replace")
    resume_tokens = grant.done_output_tokens
    if resume_text:
        resume_tokens = max(resume_tokens, grant.next_chunk, 1)
    resume_tokens = min(resume_tokens, max_tokens)
    input_tokens = grant.input_tokens
    if resume_tokens >= max_tokens:
        return RunPlan(None, max_tokens, resume_tokens, input_tokens)
    request = GenerationRequest(
        request_id=grant.request_id,
        prompt=_prompt(grant),
        max_tokens=max_tokens,
        priority=grant.priority,
        sampling=_sampling(grant.properties),
        resume_text=resume_text if resume_tokens else "",
        resume_tokens=resume_tokens,
        input_tokens_hint=input_tokens or None,
        tenant=grant.tenant,
    )
    return RunPlan(request, max_tokens, resume_tokens, input_tokens)
