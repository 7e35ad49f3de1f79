"""A policy refuses a config that breaks a rule, naming the key and the rule."""

from __future__ import annotations

import random
from dataclasses import replace
from types import MappingProxyType

import pytest

from scheduler.errors import ConfigError
from scheduler.policy import create_policy
from scheduler.types import RateLimit, SchedulerConfig, TenantConfig, WindowConfig

from .support import config, tenant

GOOD = config(tenant("a"))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            config(tenant("a", weight=0.0)),
            r"tenants\.a\.weight = 0\.0: must be a finite number > 0",
        ),
        (config(tenant("a", weight=float("inf"))), r"tenants\.a\.weight = inf"),
        (config(tenant("a", max_queued=-1)), r"tenants\.a\.max_queued = -1: must be >= 0"),
        (
            config(tenant("a", rate=RateLimit(requests_per_s=-2.0))),
            r"tenants\.a\.rate\.requests_per_s = -2\.0",
        ),
        (
            config(tenant("a", rate=RateLimit(tokens_per_s=10.0, burst_s=0.0))),
            r"tenants\.a\.rate\.burst_s = 0\.0",
        ),
        (
            SchedulerConfig(tenants=MappingProxyType({"a": TenantConfig("b")})),
            r"tenants\.a\.name = 'b': must equal its key 'a'",
        ),
        (replace(GOOD, max_queued_total=-1), r"max_queued_total = -1"),
        (replace(GOOD, input_token_weight=-1.0), r"input_token_weight = -1\.0: must be .* >= 0"),
        (
            replace(GOOD, input_token_weight=0.0, output_token_weight=0.0),
            r"both 0: at least one must be > 0",
        ),
        (replace(GOOD, band_shares=()), r"band_shares = \(\)"),
        (replace(GOOD, band_shares=(6.0, 0.0)), r"band_shares\[1\] = 0\.0"),
        (
            replace(GOOD, shed_queue_fraction=1.5),
            r"shed_queue_fraction = 1\.5: must lie in \(0, 1\]",
        ),
        (
            replace(GOOD, window=WindowConfig(initial=300, maximum=256)),
            r"initial 300, maximum 256: must satisfy 1 <= minimum <= initial <= maximum",
        ),
        (replace(GOOD, window=WindowConfig(decrease=1.0)), r"window\.decrease = 1\.0"),
        (replace(GOOD, window=WindowConfig(max_kv_usage=0.0)), r"window\.max_kv_usage = 0\.0"),
        (
            replace(GOOD, window=WindowConfig(adjust_interval_s=-1.0)),
            r"window\.adjust_interval_s = -1\.0",
        ),
    ],
)
def test_bad_configs_are_refused_with_the_key_and_rule(bad: SchedulerConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_policy("tidegate", bad, random.Random(0))


def test_output_only_charging_is_allowed() -> None:
    create_policy("fifo", replace(GOOD, input_token_weight=0.0), random.Random(0))
