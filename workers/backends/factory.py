"""Build a backend from its name and a mapping of options (a YAML block, CLI flags).

The closed set of names is :data:`BACKEND_NAMES`; an unknown name, an
unknown option or a bad value raises :class:`~workers.errors.WorkerConfigError`
naming it and what is allowed. Options are the fields of the backend's
config dataclass; two are nested:

* ``simulated``: ``model`` is a mapping of :class:`~scheduler.sim.fleet.FleetModel`
  fields (the ``fleet.model`` block of a scenario config).
* ``openai``: ``engine`` is a profile name (``vllm``, ``sglang``, ``tgi``,
  ``transformers``, ``generic``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any, Final

from scheduler.clock import Clock
from scheduler.sim.fleet import FleetModel
from workers.backends.base import Backend
from workers.backends.hf import HFBackend, HFConfig
from workers.backends.openai import OpenAIBackend, OpenAIConfig, engine_profile
from workers.backends.simulated import SimulatedBackend, SimulatedConfig
from workers.backends.vllm import VllmBackend, VllmConfig
from workers.errors import WorkerConfigError

__all__ = ["BACKEND_NAMES", "create_backend"]

BACKEND_NAMES: Final = ("simulated", "hf", "openai", "vllm")


def _build(cls: Any, name: str, options: Mapping[str, Any]) -> Any:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise WorkerConfigError(
            f"backend {name!r}: unknown option(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(fields))}"
        )
    try:
        return cls(**options)
    except TypeError as exc:  # a required option is missing
        raise WorkerConfigError(f"backend {name!r}: {exc}") from exc
    except WorkerConfigError:
        raise
    except ValueError as exc:
        raise WorkerConfigError(f"backend {name!r}: {exc}") from exc


def create_backend(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    clock: Clock,
    rng: random.Random | None = None,
) -> Backend:
    """A backend called ``name`` built from ``options``; ``clock`` and ``rng``
    drive the simulated one (the others run on the engine's own time)."""
    opts = dict(options or {})
    if name == "simulated":
        model = opts.get("model")
        if isinstance(model, Mapping):
            opts["model"] = _build(FleetModel, "simulated.model", model)
        return SimulatedBackend(_build(SimulatedConfig, name, opts), clock, rng)
    if name == "hf":
        return HFBackend(_build(HFConfig, name, opts))
    if name == "openai":
        engine = opts.get("engine", "generic")
        if isinstance(engine, str):
            opts["engine"] = engine_profile(engine)
        return OpenAIBackend(_build(OpenAIConfig, name, opts))
    if name == "vllm":
        return VllmBackend(_build(VllmConfig, name, opts))
    raise WorkerConfigError(f"unknown backend {name!r}: expected one of {', '.join(BACKEND_NAMES)}")
