"""The YAML file's sections as pydantic models (CONTRACTS.md section 2 plus the server's own).

Pydantic lives here, at the edge; the packages take frozen dataclasses built
by :mod:`scheduler.settings.convert`. A knob left out of the file is None
here and left out of the dataclass constructor, so each default lives in one
place: the dataclass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from scheduler.types import WindowConfig

__all__ = [
    "ENV_NESTED_DELIMITER",
    "ENV_PREFIX",
    "TENANT_NAME_PATTERN",
    "BrokerSection",
    "BurstSettings",
    "FleetModelSettings",
    "FleetSettings",
    "RateSettings",
    "SchedulerSettings",
    "ServerSettings",
    "ServingSettings",
    "Settings",
    "SimulationSettings",
    "StreamSettings",
    "TenantSettings",
    "TokenDistSettings",
    "WindowSettings",
    "WorkloadSettings",
    "dataclass_default",
]

ENV_PREFIX = "TIDEGATE_"
ENV_NESTED_DELIMITER = "__"
TENANT_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

TenantName = Annotated[str, StringConstraints(pattern=TENANT_NAME_PATTERN)]
_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_Fraction = Annotated[float, Field(gt=0, le=1)]


def dataclass_default(cls: type[Any], name: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                factory: Callable[[], Any] = f.default_factory
                return factory()
    raise AttributeError(f"{cls.__name__} has no field {name!r}")


class _Section(BaseModel):
    """A YAML mapping: unknown keys are typos, so they are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: Any) -> Any:
        # ``broker:`` with nothing under it parses as None: mean "all defaults".
        return {} if data is None else data


class RateSettings(_Section):
    requests_per_s: _Positive | None = None
    tokens_per_s: _Positive | None = None
    burst_s: _Positive | None = None


class TenantSettings(_Section):
    weight: _Positive | None = None
    max_priority: int | None = None
    max_queued: Annotated[int, Field(ge=0)] | None = None
    rate: RateSettings | None = None
    # Broker limits (the server refuses past them with RESOURCE_EXHAUSTED).
    max_lite_topics: Annotated[int, Field(ge=0)] | None = None
    max_subscriptions: Annotated[int, Field(ge=0)] | None = None
    api_key_env: Annotated[str, StringConstraints(pattern=_ENV_NAME_PATTERN)] | None = None
    api_key_file: Path | None = None
    # "worker": the key of a GPU fleet. It opens Lease streams (and may lease
    # any tenant's requests) but submits nothing and is not scheduled itself.
    # Left out: a client tenant.
    role: Literal["client", "worker"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_key(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "api_key" in data:
            raise ValueError(
                "api_key: keys are never read from the configuration; "
                "name an environment variable (api_key_env) or a file (api_key_file)"
            )
        return data

    @model_validator(mode="after")
    def _one_key_source(self) -> TenantSettings:
        if self.api_key_env is not None and self.api_key_file is not None:
            raise ValueError("give api_key_env or api_key_file, not both")
        return self


class WindowSettings(_Section):
    initial: Annotated[int, Field(ge=1)] | None = None
    minimum: Annotated[int, Field(ge=1)] | None = None
    maximum: Annotated[int, Field(ge=1)] | None = None
    increase: _Positive | None = None
    decrease: Annotated[float, Field(gt=0, lt=1)] | None = None
    target_ttft_s: _Positive | None = None
    target_tpot_s: _Positive | None = None
    max_queue_depth: Annotated[int, Field(ge=0)] | None = None
    max_kv_usage: _Fraction | None = None
    max_gpu_mem: _Fraction | None = None
    high_gpu_util: _Fraction | None = None
    near_target: _Fraction | None = None
    adjust_interval_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    slow_start: bool | None = None

    @model_validator(mode="after")
    def _ordered(self) -> WindowSettings:
        low = (
            self.minimum if self.minimum is not None else dataclass_default(WindowConfig, "minimum")
        )
        mid = (
            self.initial if self.initial is not None else dataclass_default(WindowConfig, "initial")
        )
        high = (
            self.maximum if self.maximum is not None else dataclass_default(WindowConfig, "maximum")
        )
        if not low <= mid <= high:
            raise ValueError(f"must keep minimum <= initial <= maximum (got {low}, {mid}, {high})")
        return self


class SchedulerSettings(_Section):
    max_queued_total: Annotated[int, Field(ge=0)] | None = None
    input_token_weight: _Positive | None = None
    output_token_weight: _Positive | None = None
    band_shares: Annotated[tuple[_Positive, ...], Field(min_length=1)] | None = None
    shed_queue_fraction: _Fraction | None = None
    window: WindowSettings | None = None


class BrokerSection(_Section):
    """The durable store's knobs, named as the fields of ``broker.settings.BrokerSettings``
    (whose defaults and further rules apply); only ``fsync`` is public (CONTRACTS.md 2).

    With ``fsync: always`` a publish is acknowledged once on disk; with
    ``interval`` a machine crash loses at most ``fsync_interval_s`` of them.
    """

    fsync: Literal["always", "interval"] | None = None
    fsync_interval_s: _Positive | None = None
    segment_bytes: Annotated[int, Field(ge=1)] | None = None
    retention_bytes: Annotated[int, Field(ge=1)] | None = None
    retention_s: _Positive | None = None
    skip_corrupt: bool | None = None
    max_message_bytes: Annotated[int, Field(ge=1)] | None = None
    chunk_bytes: Annotated[int, Field(ge=1)] | None = None
    default_ttl_s: _Positive | None = None
    ttl_by_topic: dict[str, _Positive | None] | None = None
    expiry_granularity_s: _Positive | None = None
    hot_topics: Annotated[int, Field(ge=1)] | None = None
    max_attempts: Annotated[int, Field(ge=1)] | None = None
    max_lite_topics: Annotated[int, Field(ge=1)] | None = None
    max_read_messages: Annotated[int, Field(ge=1)] | None = None
    index_memory_bytes: Annotated[int, Field(ge=1)] | None = None
    index_cache_bytes: Annotated[int, Field(ge=1)] | None = None


class ServingSettings(_Section):
    """The serving runtime's knobs (``scheduler.runtime.RuntimeOptions``, whose
    defaults and further rules apply).

    ``idempotency_ttl_s`` / ``idempotency_max_keys``: how long after its
    admission a Submit's idempotency key is remembered once its request
    finished, and for how many finished requests at most (while a request is
    queued or running its key is always remembered).

    ``finished_capacity``: finished requests whose final state Status still
    answers with, across restarts too; ``finished_compact_s``: how often, at
    most, the journal that keeps them over a restart is folded into one
    snapshot (the log it holds back spans about this long).
    """

    lease_s: _Positive | None = None
    min_lease_s: _Positive | None = None
    max_lease_s: _Positive | None = None
    tick_s: _Positive | None = None
    commit_interval_s: _Positive | None = None
    max_chunk_bytes: Annotated[int, Field(ge=1)] | None = None
    inline_bytes: Annotated[int, Field(ge=1)] | None = None
    piece_bytes: Annotated[int, Field(ge=1)] | None = None
    cache_payload_bytes: Annotated[int, Field(ge=0)] | None = None
    cache_total_bytes: Annotated[int, Field(ge=0)] | None = None
    max_attempts: Annotated[int, Field(ge=1)] | None = None
    default_output_tokens: Annotated[int, Field(ge=0)] | None = None
    default_reply_topic: str | None = None
    finished_capacity: Annotated[int, Field(ge=1)] | None = None
    finished_compact_s: _Positive | None = None
    max_properties_bytes: Annotated[int, Field(ge=1)] | None = None
    max_credits: Annotated[int, Field(ge=1)] | None = None
    idempotency_ttl_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    idempotency_max_keys: Annotated[int, Field(ge=0)] | None = None


class ServerSettings(_Section):
    """Defaults for ``tidegate serve``; its command-line flags win."""

    listen: str | None = None
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    data_dir: Path | None = None
    # TLS: certificate chain and key (PEM files); a client CA makes it mutual TLS.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give tls_cert_file and tls_key_file together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self


class FleetModelSettings(_Section):
    prefill_tokens_per_s: _Positive | None = None
    decode_step_s: _Positive | None = None
    decode_step_per_seq_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    max_batch: Annotated[int, Field(ge=1)] | None = None
    kv_capacity_tokens: Annotated[int, Field(ge=1)] | None = None
    prefill_chunk_tokens: Annotated[int, Field(ge=1)] | None = None


class FleetSettings(_Section):
    workers: Annotated[int, Field(ge=1)] | None = None
    model: FleetModelSettings | None = None
    feedback_interval_s: _Positive | None = None


class SimulationSettings(_Section):
    """How ``tidegate simulate`` turns trace rows into requests."""

    # None: the policy sees each request's real output length (an oracle);
    # a number: every request is estimated at that many output tokens, as a
    # server that cannot know the length would do.
    output_estimate_tokens: Annotated[int, Field(ge=0)] | None = None
    deadline_s: _Positive | None = None  # relative to arrival; None: no deadline


class TokenDistSettings(_Section):
    median: _Positive
    p99: _Positive | None = None
    minimum: Annotated[int, Field(ge=0)] = 1
    maximum: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> TokenDistSettings:
        if self.p99 is not None and self.p99 < self.median:
            raise ValueError(f"p99 must be >= median (got p99 {self.p99}, median {self.median})")
        if self.maximum is not None and self.maximum < self.minimum:
            raise ValueError(f"maximum must be >= minimum (got {self.maximum} < {self.minimum})")
        return self


class BurstSettings(_Section):
    start_s: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    duration_s: _Positive
    factor: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class StreamSettings(_Section):
    """One generated stream: a tenant at a priority (see scheduler.sim.workload)."""

    tenant: TenantName
    rate_per_s: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    input_tokens: Annotated[int, Field(ge=0)] | TokenDistSettings
    output_tokens: Annotated[int, Field(ge=0)] | TokenDistSettings
    priority: int = 0
    bursts: list[BurstSettings] = Field(default_factory=list)
    arrival: Literal["poisson", "uniform"] = "poisson"
    start_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    end_s: _Positive | None = None
    sessions: Annotated[int, Field(ge=0)] = 0


class WorkloadSettings(_Section):
    duration_s: _Positive
    streams: Annotated[list[StreamSettings], Field(min_length=1)]


class Settings(BaseSettings):
    """The whole file. Sections other than ``tenants`` are optional."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        case_sensitive=False,
        extra="forbid",
        frozen=True,
    )

    tenants: dict[TenantName, TenantSettings] = Field(default_factory=dict)
    broker: BrokerSection = Field(default_factory=BrokerSection)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    fleet: FleetSettings | None = None
    simulation: SimulationSettings = Field(default_factory=SimulationSettings)
    # What ``tidegate trace generate`` makes (scheduler.sim.workload).
    workload: WorkloadSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _tenant_bodies(cls, data: Any) -> Any:
        # ``free-tier:`` with nothing under it is a tenant with all defaults.
        if isinstance(data, dict) and isinstance(data.get("tenants"), dict):
            data = {
                **data,
                "tenants": {k: {} if v is None else v for k, v in data["tenants"].items()},
            }
        for key in ("broker", "scheduler", "server", "serving", "simulation"):
            if isinstance(data, dict) and key in data and data[key] is None:
                data = {**data, key: {}}
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what parse_settings() hands in: it merges the file and an
        # explicit environment itself, so nothing is read behind its back.
        return (init_settings,)
