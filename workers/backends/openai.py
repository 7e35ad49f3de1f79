"""OpenAI-compatible HTTP streaming backend (vLLM, SGLang, TGI, ``transformers serve``).

Requests go to ``/v1/chat/completions`` (chat prompts) or ``/v1/completions``
(text prompts) with ``stream: true``; the reply is server-sent events, one
JSON chunk per ``data:`` line. Engines differ in small ways that matter, so
each has an :class:`EngineProfile`:

* Extra request fields. vLLM takes ``priority`` (lower runs first) and, for
  resuming a chat answer, ``continue_final_message``; ``transformers serve``
  rejects any field it does not know with HTTP 422. A profile says which
  extras to send.
* Streams may end with ``data: [DONE]`` or simply close; usage arrives in
  the last chunk when ``stream_options.include_usage`` is set. Both are
  accepted.
* Engine signals: vLLM and SGLang export queue depth and KV-cache use on
  ``/metrics`` (see :mod:`workers.engine_metrics`).

Each request's stream is read by its own task (:mod:`.streams`).
:meth:`OpenAIBackend.cancel` cancels that task, which closes the HTTP
stream; the engines abort a request whose client disconnects, so this is
how the upstream work stops.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import httpx

from workers.backends.base import (
    CANCELLED,
    LENGTH,
    STOP,
    Chunk,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
)
from workers.backends.streams import Emit, Ending, RequestStreams
from workers.engine_metrics import (
    SGLANG_METRICS,
    TGI_METRICS,
    VLLM_METRICS,
    EngineMetricNames,
    EngineSignals,
    parse_engine_signals,
)
from workers.errors import (
    BackendError,
    BackendFailedError,
    BackendRejectedError,
    BackendUnavailableError,
    WorkerConfigError,
)

__all__ = ["ENGINE_PROFILES", "EngineProfile", "OpenAIBackend", "OpenAIConfig", "engine_profile"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineProfile:
    """What one engine accepts beyond the OpenAI API, and where its signals are.

    ``send_priority``: put the request's priority in the body as
    ``priority``; ``priority_lower_first`` negates it for engines where a
    lower value runs first (vLLM). ``continue_final_message``: the engine can
    continue a partial assistant message (vLLM's chat extension), which is
    how a preempted chat request resumes mid-answer.
    """

    name: str
    send_priority: bool = False
    priority_lower_first: bool = True
    continue_final_message: bool = False
    include_usage: bool = True
    metrics: EngineMetricNames | None = None
    metrics_path: str = "/metrics"


ENGINE_PROFILES: Final[Mapping[str, EngineProfile]] = MappingProxyType(
    {
        # vLLM honours `priority` only when started with --scheduling-policy priority;
        # with the default fcfs policy it refuses a non-zero priority, so the
        # profile sends it and the deployment must enable it.
        "vllm": EngineProfile(
            "vllm", send_priority=True, continue_final_message=True, metrics=VLLM_METRICS
        ),
        "sglang": EngineProfile("sglang", metrics=SGLANG_METRICS),
        "tgi": EngineProfile("tgi", metrics=TGI_METRICS),
        # transformers serve: strict request schema (HTTP 422 on unknown fields), no /metrics.
        "transformers": EngineProfile("transformers"),
        "generic": EngineProfile("generic"),
    }
)


def engine_profile(name: str) -> EngineProfile:
    """The profile called ``name``; a WorkerConfigError lists the known ones."""
    try:
        return ENGINE_PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(ENGINE_PROFILES))
        raise WorkerConfigError(f"unknown engine {name!r}: expected one of {known}") from None


@dataclass(frozen=True, slots=True)
class OpenAIConfig:
    """Where the engine is and how to talk to it.

    ``base_url`` is the server root (``http://host:8000``); the API lives
    under ``api_prefix`` and the metrics under ``engine.metrics_path``.
    ``read_timeout_s`` bounds the wait for the next chunk, not the request.
    """

    base_url: str
    model: str
    engine: EngineProfile = field(default_factory=lambda: ENGINE_PROFILES["generic"])
    api_prefix: str = "/v1"
    api_key: str | None = field(default=None, repr=False)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 300.0
    max_connections: int = 1024

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise WorkerConfigError(
                f"openai.base_url must start with http:// or https:// (got {self.base_url!r})"
            )
        if not self.model:
            raise WorkerConfigError("openai.model must not be empty")
        for name in ("connect_timeout_s", "read_timeout_s"):
            value = getattr(self, name)
            if not value > 0:
                raise WorkerConfigError(f"openai.{name} must be > 0 (got {value!r})")
        if self.max_connections < 1:
            raise WorkerConfigError(
                f"openai.max_connections must be >= 1 (got {self.max_connections!r})"
            )


def _finish_reason(value: object) -> FinishReason:
    if value == "length":
        return LENGTH
    if value == "abort":
        return CANCELLED
    return STOP


def _detail(body: bytes) -> str:
    """The human part of an error body: FastAPI's ``detail`` or OpenAI's ``error.message``."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(data, dict):
        if "detail" in data:
            return str(data["detail"])[:500]
        error = data.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])[:500]
        if isinstance(error, str):
            return error[:500]
    return text[:500]


class OpenAIBackend:
    """Streams requests to an OpenAI-compatible server. See the module docstring."""

    def __init__(self, config: OpenAIConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._root = config.base_url.rstrip("/")
        self._owns_client = client is None
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=config.connect_timeout_s,
                read=config.read_timeout_s,
                write=config.connect_timeout_s,
                pool=config.connect_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=config.max_connections,
                max_keepalive_connections=min(config.max_connections, 64),
            ),
            headers=headers,
        )
        self._streams = RequestStreams(self.name_for(config))
        self._signal_error_logged = False

    @staticmethod
    def name_for(config: OpenAIConfig) -> str:
        return f"openai/{config.engine.name}"

    @property
    def name(self) -> str:
        return self.name_for(self.config)

    def _url(self, path: str) -> str:
        return f"{self._root}{self.config.api_prefix}{path}"

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Check that the engine answers and serves ``config.model``."""
        url = self._url("/models")
        try:
            response = await self._client.get(url)
        except httpx.TransportError as exc:
            raise BackendUnavailableError(
                f"cannot reach {self.config.engine.name} engine at {url}: {exc!r}"
            ) from exc
        if response.status_code >= 400:
            raise BackendUnavailableError(
                f"{self.config.engine.name} engine at {url} answered HTTP "
                f"{response.status_code}: {_detail(response.content)}"
            )
        try:
            served = [str(m.get("id")) for m in response.json().get("data", [])]
        except (ValueError, AttributeError) as exc:
            raise BackendFailedError(f"{url} did not return a model list: {exc!r}") from exc
        if served and self.config.model not in served:
            raise WorkerConfigError(
                f"openai.model {self.config.model!r} is not served at {url} "
                f"(it serves {', '.join(served)})"
            )

    async def aclose(self) -> None:
        await self._streams.cancel_all()
        if self._owns_client:
            await self._client.aclose()

    # ------------------------------------------------------------ requests

    def _body(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        engine = self.config.engine
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": request.remaining_tokens,
            "stream": True,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if engine.include_usage:
            body["stream_options"] = {"include_usage": True}
        if engine.send_priority:
            body["priority"] = (
                -request.priority if engine.priority_lower_first else request.priority
            )
        if isinstance(request.prompt, str):
            body["prompt"] = request.prompt + request.resume_text
            return "/completions", body
        messages = [{"role": m.role, "content": m.content} for m in request.prompt]
        if request.resume_text:
            # The answer so far, as the assistant's message. An engine that can
            # continue it does so mid-sentence; any other starts a fresh
            # assistant turn after it. Either way the text is not sent again.
            messages.append({"role": "assistant", "content": request.resume_text})
            if engine.continue_final_message:
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
        body["messages"] = messages
        return "/chat/completions", body

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        path, body = self._body(request)
        url = self._url(path)

        async def produce(emit: Emit) -> Ending:
            if request.remaining_tokens == 0:
                return Ending(LENGTH, output_tokens=0)
            return await self._stream(request.request_id, url, body, emit)

        return self._streams.stream(request, produce)

    async def cancel(self, request_id: str) -> bool:
        return await self._streams.cancel(request_id)

    async def _stream(self, rid: str, url: str, body: dict[str, Any], emit: Emit) -> Ending:
        """POST one request and read its SSE reply, translating httpx's errors."""
        engine = self.config.engine.name
        try:
            async with self._client.stream("POST", url, json=body) as response:
                if response.status_code >= 400:
                    detail = _detail(await response.aread())
                    raise self._http_error(response.status_code, url, rid, detail)
                return await self._events(response, emit, rid)
        except httpx.TimeoutException as exc:
            raise BackendFailedError(
                f"{engine} engine at {url} timed out on request {rid}: {exc!r}"
            ) from exc
        except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
            raise BackendUnavailableError(
                f"cannot reach {engine} engine at {url}: {exc!r}"
            ) from exc
        except httpx.TransportError as exc:
            raise BackendFailedError(
                f"{engine} engine at {url} broke the stream of request {rid}: {exc!r}"
            ) from exc

    def _http_error(self, status: int, url: str, rid: str, detail: str) -> BackendError:
        engine = self.config.engine.name
        message = f"{engine} engine at {url} answered request {rid} with HTTP {status}: {detail}"
        if status in (429, 503):
            return BackendUnavailableError(message)  # overloaded or starting: try again later
        if status < 500:
            return BackendRejectedError(message, status)
        return BackendFailedError(message, status)

    async def _events(self, response: httpx.Response, emit: Emit, rid: str) -> Ending:
        """Parse the SSE body, emitting chunks; return how the stream ended."""
        reason: FinishReason = STOP
        usage: Mapping[str, Any] | None = None
        data: list[str] = []

        def dispatch() -> bool:
            """Handle one complete event; True at ``[DONE]``."""
            nonlocal reason, usage
            payload = "\n".join(data)
            data.clear()
            if payload.strip() == "[DONE]":
                return True
            try:
                event = json.loads(payload)
            except ValueError as exc:
                raise BackendFailedError(
                    f"{self.config.engine.name} sent a chunk that is not JSON for request "
                    f"{rid}: {payload[:200]!r}"
                ) from exc
            if not isinstance(event, dict):
                raise BackendFailedError(
                    f"chunk for request {rid} is not a JSON object: {payload[:200]!r}"
                )
            if "error" in event:
                raise BackendFailedError(
                    f"{self.config.engine.name} failed request {rid} mid-stream: "
                    f"{_detail(payload.encode())}"
                )
            if isinstance(event.get("usage"), dict):
                usage = event["usage"]
            for choice in event.get("choices") or ():
                text = choice.get("text")
                if text is None:
                    text = (choice.get("delta") or {}).get("content")
                if text:
                    emit(Chunk(text, 1))
                if choice.get("finish_reason") is not None:
                    reason = _finish_reason(choice["finish_reason"])
            return False

        async for line in response.aiter_lines():
            if not line:
                if data and dispatch():
                    break
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            # other fields (event:, id:, retry:) and comments (":") carry nothing here
        else:
            if data:
                dispatch()  # the stream closed without a blank line after its last event
        if usage is None:
            return Ending(reason)
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        return Ending(
            reason,
            input_tokens=prompt if isinstance(prompt, int) else None,
            output_tokens=completion if isinstance(completion, int) else None,
        )

    # ------------------------------------------------------------ signals

    async def signals(self) -> EngineSignals:
        """Scrape the engine's /metrics; unknown signals where it has none or fails.

        Signals are advisory: a failed scrape is logged once and reads as
        "unknown", which the window controller treats as fine.
        """
        names = self.config.engine.metrics
        if names is None:
            return EngineSignals()
        url = f"{self._root}{self.config.engine.metrics_path}"
        try:
            response = await self._client.get(url)
            response.raise_for_status()
            return parse_engine_signals(response.text, names, model=self.config.model)
        except (httpx.HTTPError, ValueError) as exc:
            if not self._signal_error_logged:
                log.warning("cannot read engine signals from %s: %r", url, exc)
                self._signal_error_logged = True
            return EngineSignals()
