"""The server's settings: one YAML file (CONTRACTS.md section 2) plus environment overrides.

Read by the composition root only (``tidegate.cli``), validated once, turned
into the frozen values the packages take. Nothing here runs at import.

* :func:`load_settings` / :func:`parse_settings` -> :class:`Settings`
  (``sections``: the pydantic models, one per YAML section).
* Environment overrides use the prefix ``TIDEGATE_`` and ``__`` between key
  levels: ``TIDEGATE_BROKER__FSYNC=interval``,
  ``TIDEGATE_TENANTS__ACME__WEIGHT=3``. They win over the file.
* Every error is a ``ConfigError`` naming the key path and the rule, e.g.
  ``tenants.acme.weight: must be > 0 (got -1)``.
* :func:`tenant_api_keys` reads each tenant's key, as ``SecretStr``, from the
  env var (``api_key_env``) or file (``api_key_file``) it names; never from
  the YAML.
* :func:`to_scheduler_config`, :func:`to_fleet_config`,
  :func:`to_workload_spec`, :func:`to_runtime_options`,
  :func:`broker_options`: the frozen values;
  :func:`worker_tenants`: the fleets' tenants (``role: worker``).
* :class:`SettingsWatcher`: hot reload on file change or SIGHUP.
"""

from __future__ import annotations

from scheduler.settings.convert import (
    broker_options,
    to_fleet_config,
    to_runtime_options,
    to_scheduler_config,
    to_workload_spec,
    worker_tenants,
)
from scheduler.settings.loading import describe_validation_error, load_settings, parse_settings
from scheduler.settings.secrets import tenant_api_keys
from scheduler.settings.sections import (
    ENV_NESTED_DELIMITER,
    ENV_PREFIX,
    TENANT_NAME_PATTERN,
    BrokerSection,
    FleetModelSettings,
    FleetSettings,
    RateSettings,
    SchedulerSettings,
    ServerSettings,
    ServingSettings,
    Settings,
    SimulationSettings,
    StreamSettings,
    TenantSettings,
    WindowSettings,
    WorkloadSettings,
)
from scheduler.settings.watch import SettingsWatcher

__all__ = [
    "ENV_NESTED_DELIMITER",
    "ENV_PREFIX",
    "TENANT_NAME_PATTERN",
    "BrokerSection",
    "FleetModelSettings",
    "FleetSettings",
    "RateSettings",
    "SchedulerSettings",
    "ServerSettings",
    "ServingSettings",
    "Settings",
    "SettingsWatcher",
    "SimulationSettings",
    "StreamSettings",
    "TenantSettings",
    "WindowSettings",
    "WorkloadSettings",
    "broker_options",
    "describe_validation_error",
    "load_settings",
    "parse_settings",
    "tenant_api_keys",
    "to_fleet_config",
    "to_runtime_options",
    "to_scheduler_config",
    "to_workload_spec",
    "worker_tenants",
]
