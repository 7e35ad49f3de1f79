"""Settings -> the frozen values each package takes."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from scheduler.errors import ConfigError
from scheduler.settings.sections import Settings, TokenDistSettings
from scheduler.sim.fleet import FleetConfig, FleetModel
from scheduler.sim.workload import Burst, Stream, TokenDist, WorkloadSpec
from scheduler.types import RateLimit, SchedulerConfig, TenantConfig, WindowConfig

if TYPE_CHECKING:
    from scheduler.runtime.values import RuntimeOptions

__all__ = [
    "broker_options",
    "to_fleet_config",
    "to_runtime_options",
    "to_scheduler_config",
    "to_workload_spec",
    "worker_tenants",
]


def _set_fields(model: BaseModel | None, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keys the user set (None means: take the dataclass default)."""
    if model is None:
        return {}
    values = ((name, getattr(model, name)) for name in type(model).model_fields)
    return {name: value for name, value in values if name not in skip and value is not None}


def worker_tenants(settings: Settings) -> frozenset[str]:
    """Tenants with ``role: worker``: fleets' keys, which lease requests and submit none."""
    return frozenset(name for name, body in settings.tenants.items() if body.role == "worker")


def to_scheduler_config(settings: Settings) -> SchedulerConfig:
    """The frozen config the policy takes; reload passes a new one to update_config.

    Worker tenants are left out: they are never scheduled."""
    tenants: dict[str, TenantConfig] = {}
    for name, body in settings.tenants.items():
        if body.role == "worker":
            continue
        fields = _set_fields(
            body,
            skip=(
                "rate",
                "api_key_env",
                "api_key_file",
                "max_lite_topics",
                "max_subscriptions",
                "role",
            ),
        )
        rate = None
        if body.rate is not None:
            rate = RateLimit(**_set_fields(body.rate))
        tenants[name] = TenantConfig(name=name, rate=rate, **fields)
    sched = settings.scheduler
    top = _set_fields(sched, skip=("window",))
    window = WindowConfig(**_set_fields(sched.window))
    return SchedulerConfig(tenants=MappingProxyType(tenants), window=window, **top)


def to_fleet_config(settings: Settings) -> FleetConfig:
    """The simulated fleet; the config must have a ``fleet:`` section."""
    if settings.fleet is None:
        raise ConfigError("fleet: missing: the simulator needs a fleet: section (CONTRACTS.md 3)")
    fleet = settings.fleet
    try:
        model = FleetModel(**_set_fields(fleet.model))
        return FleetConfig(model=model, **_set_fields(fleet, skip=("model",)))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _token_dist(spec: int | TokenDistSettings) -> TokenDist:
    if isinstance(spec, int):
        return TokenDist(
            median=max(spec, 1), minimum=min(spec, 1) if spec == 0 else 1, maximum=spec
        )
    return TokenDist(spec.median, spec.p99, spec.minimum, spec.maximum)


def to_workload_spec(settings: Settings) -> WorkloadSpec:
    """The generator's input; the config must have a ``workload:`` section."""
    if settings.workload is None:
        raise ConfigError("workload: missing: the generator needs a workload: section")
    streams = tuple(
        Stream(
            tenant=s.tenant,
            rate_per_s=s.rate_per_s,
            input_tokens=_token_dist(s.input_tokens),
            output_tokens=_token_dist(s.output_tokens),
            priority=s.priority,
            bursts=tuple(Burst(b.start_s, b.duration_s, b.factor) for b in s.bursts),
            arrival=s.arrival,
            start_s=s.start_s,
            end_s=s.end_s,
            sessions=s.sessions,
        )
        for s in settings.workload.streams
    )
    return WorkloadSpec(settings.workload.duration_s, streams)


def to_runtime_options(settings: Settings) -> RuntimeOptions:
    """The serving runtime's knobs from ``serving:`` (the rest keep their defaults)."""
    # Imported here: the runtime package pulls in the broker, which reading
    # settings (the simulator, the CLI's checks) does not need.
    from scheduler.runtime.values import RuntimeOptions  # noqa: PLC0415 - see above

    try:
        return RuntimeOptions(**_set_fields(settings.serving))
    except ValueError as exc:
        raise ConfigError(f"serving: {exc}") from None


def broker_options(settings: Settings) -> dict[str, Any]:
    """The ``broker:`` keys the file (or environment) set, as keyword arguments for
    ``broker.settings.BrokerSettings``; the rest keep that class's defaults."""
    return _set_fields(settings.broker)
