"""Reading the file: YAML, then environment overrides, then validation.

Overrides come from an explicit mapping (``os.environ`` when the caller
gives none), merged key by key over the file, so a test or a reload sees
exactly the environment it names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings
from pydantic_settings.sources import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from scheduler.errors import ConfigError
from scheduler.settings.sections import TENANT_NAME_PATTERN, Settings

__all__ = ["describe_validation_error", "load_settings", "parse_settings"]


class _MappingEnvSource(EnvSettingsSource):
    """The standard env source, reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def load_settings(path: Path | str, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``path`` and apply environment overrides (``os.environ`` when not given)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_settings(text, environ if environ is not None else os.environ, source=path)


def parse_settings(
    text: str, environ: Mapping[str, str] | None = None, *, source: Path | str = "<config>"
) -> Settings:
    """Validate YAML text (plus overrides from ``environ``, if given) into :class:`Settings`.

    A relative ``api_key_file`` is taken relative to the file's directory.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{where}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    if environ:
        overrides = _MappingEnvSource(Settings, environ)()
        data = _deep_merge(data, overrides)
    _anchor_key_files(data, Path(source).parent)
    try:
        return Settings.model_validate(data)
    except PydanticValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, Mapping):
            merged[key] = _deep_merge(old, value)
        else:
            merged[key] = value
    return merged


def _anchor_key_files(data: dict[str, Any], base: Path) -> None:
    tenants = data.get("tenants")
    if not isinstance(tenants, dict):
        return
    for body in tenants.values():
        if isinstance(body, dict) and isinstance(body.get("api_key_file"), str):
            key_path = Path(body["api_key_file"]).expanduser()
            if not key_path.is_absolute():
                body["api_key_file"] = str(base / key_path)


def describe_validation_error(exc: PydanticValidationError) -> str:
    """One line: each error as ``key.path: rule (got value)``, joined by '; '."""
    return "; ".join(_describe_one(err) for err in exc.errors(include_url=False))


def _path(loc: Sequence[int | str]) -> str:
    """``('workload', 'streams', 0, 'rate_per_s')`` -> ``workload.streams[0].rate_per_s``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.startswith(("int", "float", "function-")):  # union-branch labels
            text += f".{part}" if text else part
    return text or "(top level)"


def _num(value: Any) -> str:
    """A bound as people write it: 0, not 0.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _describe_one(err: Mapping[str, Any]) -> str:
    loc = [str(part) for part in err["loc"]]
    kind: str = err["type"]
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    if loc and loc[-1] == "[key]":
        path = _path(err["loc"][:-1])
        return f"{path}: not a valid name: must match {TENANT_NAME_PATTERN} (got {value!r})"
    path = _path(err["loc"])
    rules: dict[str, Callable[[], str]] = {
        "greater_than": lambda: f"must be > {_num(ctx.get('gt'))}",
        "greater_than_equal": lambda: f"must be >= {_num(ctx.get('ge'))}",
        "less_than": lambda: f"must be < {_num(ctx.get('lt'))}",
        "less_than_equal": lambda: f"must be <= {_num(ctx.get('le'))}",
        "literal_error": lambda: f"must be one of {ctx.get('expected')}",
        "int_parsing": lambda: "must be an integer",
        "int_from_float": lambda: "must be an integer",
        "int_type": lambda: "must be an integer",
        "float_parsing": lambda: "must be a number",
        "float_type": lambda: "must be a number",
        "finite_number": lambda: "must be a finite number",
        "bool_parsing": lambda: "must be true or false",
        "string_type": lambda: "must be a string",
        "string_pattern_mismatch": lambda: f"must match {ctx.get('pattern')}",
        "too_short": lambda: f"must have at least {ctx.get('min_length')} item(s)",
        "model_type": lambda: "must be a mapping of keys",
        "dict_type": lambda: "must be a mapping",
        "tuple_type": lambda: "must be a list",
    }
    if kind == "extra_forbidden":
        return f"{path}: unknown key"
    if kind == "missing":
        return f"{path}: is required"
    if kind == "value_error":
        message = str(ctx.get("error", err.get("msg", "")))
        return f"{path}: {message}"
    rule = rules.get(kind)
    text = rule() if rule is not None else str(err.get("msg", kind)).lower()
    return f"{path}: {text} (got {value!r})"
