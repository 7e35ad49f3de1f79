"""Rules a ``SchedulerConfig`` must keep before a policy accepts it.

Settings loading validates the YAML too; this is the policy's own guard, so
a config built in code (tests, the simulator) meets the same rules. Each
message names the key, the value and the rule.
"""

from __future__ import annotations

import math

from scheduler.errors import ConfigError
from scheduler.types import SchedulerConfig, TenantConfig, WindowConfig

__all__ = ["validate_config"]


def _positive(key: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{key} = {value!r}: must be a finite number > 0")


def _fraction(key: str, value: float) -> None:
    if not 0 < value <= 1:
        raise ConfigError(f"{key} = {value!r}: must lie in (0, 1]")


def _tenant(key: str, tenant: TenantConfig) -> None:
    prefix = f"tenants.{key}"
    if tenant.name != key:
        raise ConfigError(f"{prefix}.name = {tenant.name!r}: must equal its key {key!r}")
    _positive(f"{prefix}.weight", tenant.weight)
    if tenant.max_queued < 0:
        raise ConfigError(f"{prefix}.max_queued = {tenant.max_queued}: must be >= 0")
    rate = tenant.rate
    if rate is not None:
        if rate.requests_per_s is not None:
            _positive(f"{prefix}.rate.requests_per_s", rate.requests_per_s)
        if rate.tokens_per_s is not None:
            _positive(f"{prefix}.rate.tokens_per_s", rate.tokens_per_s)
        _positive(f"{prefix}.rate.burst_s", rate.burst_s)


def _window(window: WindowConfig) -> None:
    if not 1 <= window.minimum <= window.initial <= window.maximum:
        raise ConfigError(
            f"window: minimum {window.minimum}, initial {window.initial}, maximum "
            f"{window.maximum}: must satisfy 1 <= minimum <= initial <= maximum"
        )
    _positive("window.increase", window.increase)
    if not 0 < window.decrease < 1:
        raise ConfigError(f"window.decrease = {window.decrease!r}: must lie in (0, 1)")
    _positive("window.target_ttft_s", window.target_ttft_s)
    _positive("window.target_tpot_s", window.target_tpot_s)
    if window.max_queue_depth < 0:
        raise ConfigError(f"window.max_queue_depth = {window.max_queue_depth}: must be >= 0")
    _fraction("window.max_kv_usage", window.max_kv_usage)
    _fraction("window.max_gpu_mem", window.max_gpu_mem)
    _fraction("window.high_gpu_util", window.high_gpu_util)
    _fraction("window.near_target", window.near_target)
    if window.adjust_interval_s < 0:
        raise ConfigError(f"window.adjust_interval_s = {window.adjust_interval_s!r}: must be >= 0")


def validate_config(config: SchedulerConfig) -> None:
    """Raise ConfigError on the first rule ``config`` breaks."""
    for key, tenant in config.tenants.items():
        _tenant(key, tenant)
    if config.max_queued_total < 0:
        raise ConfigError(f"max_queued_total = {config.max_queued_total}: must be >= 0")
    for key, weight in (
        ("input_token_weight", config.input_token_weight),
        ("output_token_weight", config.output_token_weight),
    ):
        if not (weight >= 0 and math.isfinite(weight)):
            raise ConfigError(f"{key} = {weight!r}: must be a finite number >= 0")
    if config.input_token_weight + config.output_token_weight <= 0:
        raise ConfigError(
            "input_token_weight and output_token_weight are both 0: at least one must be > 0, "
            "or every request would cost nothing and fair sharing would have nothing to share"
        )
    if config.band_shares is not None:
        if not config.band_shares:
            raise ConfigError("band_shares = (): give at least one share, or leave it unset")
        for index, share in enumerate(config.band_shares):
            _positive(f"band_shares[{index}]", share)
    _fraction("shed_queue_fraction", config.shed_queue_fraction)
    _window(config.window)
