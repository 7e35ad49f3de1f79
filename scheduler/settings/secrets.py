"""Tenants' API keys: read from the environment variable or file the config names.

Never from the YAML itself; held as ``SecretStr`` so no repr or log shows them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType

from pydantic import SecretStr

from scheduler.errors import ConfigError
from scheduler.settings.sections import Settings

__all__ = ["tenant_api_keys"]


def tenant_api_keys(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> Mapping[str, SecretStr]:
    """Each tenant's API key, read now from its env var or file (``os.environ`` if not given).

    Tenants without a key source are left out. Two tenants sharing a key is
    an error, since a key must name exactly one tenant.
    """
    env = environ if environ is not None else os.environ
    keys: dict[str, SecretStr] = {}
    seen: dict[str, str] = {}
    for name, tenant in settings.tenants.items():
        key: str | None = None
        if tenant.api_key_env is not None:
            where = f"tenants.{name}.api_key_env"
            key = env.get(tenant.api_key_env)
            if key is None:
                raise ConfigError(f"{where}: environment variable {tenant.api_key_env} is not set")
        elif tenant.api_key_file is not None:
            where = f"tenants.{name}.api_key_file"
            try:
                key = tenant.api_key_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"{where}: cannot read {tenant.api_key_file}: {exc.strerror or exc}"
                ) from None
        else:
            continue
        key = key.strip()
        if not key:
            raise ConfigError(f"{where}: the key is empty")
        if key in seen:
            raise ConfigError(f"tenants.{name}: has the same API key as tenants.{seen[key]}")
        seen[key] = name
        keys[name] = SecretStr(key)
    return MappingProxyType(keys)
