"""The ``serving:`` section: the serving runtime's knobs, idempotency keys' bounds among them."""

from __future__ import annotations

import dataclasses

import pytest

from scheduler.errors import ConfigError
from scheduler.runtime import RuntimeOptions
from scheduler.settings import ServingSettings, parse_settings, to_runtime_options


def test_the_section_names_every_knob_of_the_runtime_options() -> None:
    assert set(ServingSettings.model_fields) == {f.name for f in dataclasses.fields(RuntimeOptions)}


def test_left_out_keys_keep_the_defaults_and_set_ones_win() -> None:
    assert to_runtime_options(parse_settings("", {})) == RuntimeOptions()
    assert to_runtime_options(parse_settings("serving:\n", {})) == RuntimeOptions()
    defaults = RuntimeOptions()
    assert (defaults.idempotency_ttl_s, defaults.idempotency_max_keys) == (600.0, 100_000)
    text = "serving:\n  idempotency_ttl_s: 30\n  idempotency_max_keys: 0\n  lease_s: 4\n"
    options = to_runtime_options(parse_settings(text, {}))
    assert (options.idempotency_ttl_s, options.idempotency_max_keys, options.lease_s) == (30, 0, 4)
    env = {"TIDEGATE_SERVING__IDEMPOTENCY_TTL_S": "90"}
    assert to_runtime_options(parse_settings(text, env)).idempotency_ttl_s == 90


def test_bad_values_name_the_key_and_the_rule() -> None:
    with pytest.raises(ConfigError, match=r"serving\.idempotency_ttl_s"):
        parse_settings("serving: {idempotency_ttl_s: -1}", {})
    with pytest.raises(ConfigError, match=r"serving\.idempotency_max_keys"):
        parse_settings("serving: {idempotency_max_keys: 1.5}", {})
    with pytest.raises(ConfigError, match=r"serving\.unknown"):
        parse_settings("serving: {unknown: 1}", {})
    with pytest.raises(ConfigError, match=r"serving: lease_s 400.0 must lie in"):
        to_runtime_options(parse_settings("serving: {lease_s: 400}", {}))
