"""Settings: the YAML of CONTRACTS.md section 2, env overrides, errors, keys, frozen values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from scheduler.errors import ConfigError
from scheduler.settings import (
    Settings,
    broker_options,
    load_settings,
    parse_settings,
    tenant_api_keys,
    to_fleet_config,
    to_scheduler_config,
    to_workload_spec,
    worker_tenants,
)
from scheduler.settings.sections import (
    BrokerSection,
    FleetModelSettings,
    SchedulerSettings,
    TenantSettings,
    WindowSettings,
)
from scheduler.sim.fleet import FleetConfig, FleetModel
from scheduler.types import RateLimit, SchedulerConfig, TenantConfig, WindowConfig

REPO = Path(__file__).resolve().parents[3]

CONTRACT = """
tenants:
  acme:                       # tenant name: [a-z0-9][a-z0-9_-]{0,62}
    weight: 4                 # share of GPU service while backlogged (> 0)
    max_priority: 2           # highest priority this tenant may ask for
    max_queued: 5000          # queued requests before new ones are refused
    rate:                     # optional quota ("ConsumerGroup quota")
      requests_per_s: 50
      tokens_per_s: 200000    # input + output tokens, estimated at admission
      burst_s: 2              # bucket depth, in seconds of rate
  free-tier:
    weight: 1
    api_key_env: FREE_TIER_KEY   # the tenant's API key is read from this env var
                                 # (or api_key_file: PATH); never from the YAML itself
broker:
  fsync: always        # always | interval
"""


def test_contract_example_parses_into_the_frozen_config() -> None:
    settings = parse_settings(CONTRACT, {})
    config = to_scheduler_config(settings)
    assert config.tenants["acme"] == TenantConfig(
        name="acme",
        weight=4.0,
        max_priority=2,
        max_queued=5000,
        rate=RateLimit(requests_per_s=50.0, tokens_per_s=200000.0, burst_s=2.0),
    )
    # Keys left out take the dataclass defaults.
    assert config.tenants["free-tier"] == TenantConfig(name="free-tier", weight=1.0)
    assert config.window == WindowConfig()
    assert config.max_queued_total == SchedulerConfig().max_queued_total
    assert settings.broker.fsync == "always"


def test_shipped_configs_load() -> None:
    env = {"ACME_KEY": "k1", "FREE_TIER_KEY": "k2", "GPU_FLEET_KEY": "k3"}
    example = load_settings(REPO / "configs" / "tenants.yaml", env)
    assert set(example.tenants) == {"acme", "free-tier", "gpu-fleet"}
    assert set(tenant_api_keys(example, env)) == {"acme", "free-tier", "gpu-fleet"}
    assert worker_tenants(example) == {"gpu-fleet"}
    assert set(to_scheduler_config(example).tenants) == {"acme", "free-tier"}
    for name in ("sim-fair-124", "sim-burst", "sim-priority"):
        settings = load_settings(REPO / "configs" / f"{name}.yaml", {})
        to_scheduler_config(settings)
        assert to_fleet_config(settings).workers == 8
        assert to_workload_spec(settings).streams
    azure = load_settings(REPO / "configs" / "sim-azure.yaml", {})
    assert set(to_scheduler_config(azure).tenants) == {"coder", "chat"}
    assert to_fleet_config(azure).workers == 4


def test_empty_file_and_empty_sections_mean_defaults() -> None:
    assert parse_settings("", {}) == Settings()
    settings = parse_settings("tenants:\n  solo:\nbroker:\nscheduler:\n", {})
    assert to_scheduler_config(settings).tenants["solo"] == TenantConfig(name="solo")


def test_environment_overrides_win_over_the_file() -> None:
    env = {
        "TIDEGATE_TENANTS__ACME__WEIGHT": "6",
        "TIDEGATE_TENANTS__ACME__RATE__BURST_S": "5",
        "TIDEGATE_BROKER__FSYNC": "interval",
        "TIDEGATE_SCHEDULER__BAND_SHARES": "[6, 3, 1]",
        "TIDEGATE_SCHEDULER__WINDOW__MAXIMUM": "64",
        "TIDEGATE_API_KEY": "not a setting",  # the client's variable: ignored here
        "UNRELATED": "x",
    }
    settings = parse_settings(CONTRACT, env)
    config = to_scheduler_config(settings)
    assert config.tenants["acme"].weight == 6.0
    assert config.tenants["acme"].rate == RateLimit(50.0, 200000.0, 5.0)
    assert config.tenants["acme"].max_priority == 2  # untouched keys stay
    assert config.band_shares == (6.0, 3.0, 1.0)
    assert config.window.maximum == 64
    assert settings.broker.fsync == "interval"


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONTRACT)
    monkeypatch.setenv("TIDEGATE_BROKER__FSYNC", "interval")
    assert load_settings(path).broker.fsync == "interval"
    # parse_settings with no environ reads none: nothing behind the caller's back.
    assert parse_settings(CONTRACT).broker.fsync == "always"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("tenants: {acme: {weight: -1}}", "tenants.acme.weight: must be > 0 (got -1)"),
        ("tenants: {acme: {weight: zero}}", "tenants.acme.weight: must be a number (got 'zero')"),
        ("tenants: {acme: {max_queued: 1.5}}", "tenants.acme.max_queued: must be an integer"),
        ("tenants: {acme: {wieght: 2}}", "tenants.acme.wieght: unknown key"),
        ("tenants: {Acme: {}}", "tenants.Acme: not a valid name: must match"),
        ("tenants: {acme: {rate: {burst_s: 0}}}", "tenants.acme.rate.burst_s: must be > 0 (got 0)"),
        ("broker: {fsync: sometimes}", "broker.fsync: must be one of 'always' or 'interval'"),
        ("tenant: {}", "tenant: unknown key"),
        (
            "scheduler: {window: {decrease: 1.5}}",
            "scheduler.window.decrease: must be < 1 (got 1.5)",
        ),
        ("scheduler: {window: {minimum: 9}}", "minimum <= initial <= maximum (got 9, 8, 256)"),
        ("scheduler: {band_shares: []}", "scheduler.band_shares: must have at least 1 item"),
        ("fleet: {model: {max_batch: 0}}", "fleet.model.max_batch: must be >= 1 (got 0)"),
        (
            "workload: {duration_s: 1, streams: [{tenant: a, rate_per_s: -1, "
            "input_tokens: 1, output_tokens: 1}]}",
            "workload.streams[0].rate_per_s: must be >= 0 (got -1)",
        ),
        ("tenants: {acme: {api_key: hunter2}}", "keys are never read from the configuration"),
        (
            "tenants: {acme: {api_key_env: A, api_key_file: /k}}",
            "give api_key_env or api_key_file, not both",
        ),
        ("[1, 2]", "the top level must be a mapping"),
        ("tenants: [", "not valid YAML"),
    ],
)
def test_errors_name_the_key_path_and_the_rule(yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(yaml_text, {}, source="conf.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("conf.yaml")
    assert "hunter2" not in str(info.value)


def test_all_errors_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings("tenants: {a: {weight: 0, max_queued: -1}}", {})
    assert "tenants.a.weight" in str(info.value)
    assert "tenants.a.max_queued" in str(info.value)


def test_env_override_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"tenants\.acme\.weight: must be > 0 \(got '-2'\)"):
        parse_settings(CONTRACT, {"TIDEGATE_TENANTS__ACME__WEIGHT": "-2"})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings("/nonexistent/tidegate.yaml", {})


# ------------------------------------------------------------------ API keys


def test_api_keys_from_env_and_file_are_secret(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "b.key").write_text("file-secret\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        "tenants:\n"
        "  a: {api_key_env: A_KEY}\n"
        "  b: {api_key_file: keys/b.key}\n"  # relative to the config file
        "  c: {}\n"
    )
    settings = load_settings(config, {})
    keys = tenant_api_keys(settings, {"A_KEY": "env-secret"})
    assert set(keys) == {"a", "b"}
    assert keys["a"].get_secret_value() == "env-secret"
    assert keys["b"].get_secret_value() == "file-secret"
    assert "secret" not in repr(keys)
    assert "secret" not in str(keys)
    assert "secret" not in repr(settings)


def test_api_key_problems_name_the_key(tmp_path: Path) -> None:
    settings = parse_settings("tenants: {a: {api_key_env: A_KEY}}", {})
    with pytest.raises(ConfigError, match=r"tenants\.a\.api_key_env: environment variable A_KEY"):
        tenant_api_keys(settings, {})
    with pytest.raises(ConfigError, match=r"tenants\.a\.api_key_env: the key is empty"):
        tenant_api_keys(settings, {"A_KEY": "  "})
    missing = parse_settings(f"tenants: {{a: {{api_key_file: {tmp_path}/none}}}}", {})
    with pytest.raises(ConfigError, match=r"tenants\.a\.api_key_file: cannot read"):
        tenant_api_keys(missing, {})
    twins = parse_settings("tenants: {a: {api_key_env: K}, b: {api_key_env: K}}", {})
    with pytest.raises(ConfigError, match=r"tenants\.b: has the same API key as tenants\.a"):
        tenant_api_keys(twins, {"K": "same"})


# ------------------------------------------------------------------ frozen values


def test_fleet_and_workload() -> None:
    settings = parse_settings(
        "fleet:\n  workers: 3\n  model: {max_batch: 16}\n"
        "workload:\n  duration_s: 10\n  streams:\n"
        "    - {tenant: a, rate_per_s: 2, input_tokens: 5, output_tokens: {median: 3, p99: 9},"
        " bursts: [{start_s: 1, duration_s: 2, factor: 4}], priority: 1, sessions: 2}\n",
        {},
    )
    assert to_fleet_config(settings) == FleetConfig(workers=3, model=FleetModel(max_batch=16))
    spec = to_workload_spec(settings)
    (stream,) = spec.streams
    assert (stream.tenant, stream.priority, stream.sessions) == ("a", 1, 2)
    assert stream.input_tokens.median == 5
    assert stream.input_tokens.p99 is None
    assert stream.output_tokens.p99 == 9
    assert stream.bursts[0].factor == 4
    with pytest.raises(ConfigError, match="fleet: missing"):
        to_fleet_config(parse_settings("", {}))
    with pytest.raises(ConfigError, match="workload: missing"):
        to_workload_spec(parse_settings("", {}))


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_every_knob_of_the_frozen_values_can_be_set() -> None:
    """The sections and the dataclasses must not drift apart."""
    assert set(WindowSettings.model_fields) == _names(WindowConfig)
    assert set(SchedulerSettings.model_fields) == _names(SchedulerConfig) - {"tenants"}
    # Keys the server reads (broker limits, the key, the role), not the policy.
    server_keys = {"api_key_env", "api_key_file", "max_lite_topics", "max_subscriptions", "role"}
    tenant_keys = set(TenantSettings.model_fields) - server_keys
    assert tenant_keys == _names(TenantConfig) - {"name"}
    assert set(FleetModelSettings.model_fields) == _names(FleetModel)


def test_broker_section_matches_the_broker_settings() -> None:
    broker_settings = pytest.importorskip("broker.settings")
    assert set(BrokerSection.model_fields) == _names(broker_settings.BrokerSettings)
    options = broker_options(parse_settings("broker: {fsync: interval, max_attempts: 3}", {}))
    assert options == {"fsync": "interval", "max_attempts": 3}
    built = broker_settings.BrokerSettings(**options)
    assert built.max_attempts == 3


def test_slow_start_is_on_by_default_and_yaml_turns_it_off() -> None:
    assert to_scheduler_config(parse_settings("tenants: {}\n", {})).window.slow_start
    off = parse_settings("scheduler: {window: {slow_start: false}}\n", {})
    assert not to_scheduler_config(off).window.slow_start
