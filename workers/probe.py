"""GPU probes: what the GPU says about its load, read on an interval.

* :class:`GpuProbe` — the protocol: ``read()`` returns one frozen
  :class:`GpuReading` per device.
* :class:`NvmlProbe` — NVML through pynvml (the ``nvidia-ml-py``
  distribution): utilisation, memory, temperature, power, and GPM SM
  occupancy on GPUs that have GPM (Hopper and later). GPM metrics are
  computed between two samples, so each read compares with the previous
  read's sample: the first read of a device has no occupancy yet.
* :class:`ScriptedProbe` — replays scripted readings, for machines without
  a GPU and for tests.
* :class:`ProbeSampler` — reads a probe every ``interval_s`` on a
  :class:`~scheduler.clock.Clock` and keeps the latest readings.
* :func:`detect_probe` — NVML when a GPU is there, otherwise the fallback
  the caller passes (there is no silent fake).

NVML queries are driver calls that return in microseconds to a millisecond,
so the sampler calls them on the event loop rather than paying a thread hop
per sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import pynvml

from scheduler.clock import Clock
from workers.errors import ProbeError, ProbeUnavailableError, WorkerConfigError

__all__ = [
    "GpuProbe",
    "GpuReading",
    "NvmlProbe",
    "ProbeSampler",
    "ScriptedProbe",
    "detect_probe",
]

log = logging.getLogger(__name__)


def _check_fraction(name: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"GpuReading.{name} must be in [0, 1] (got {value!r})")


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One device at one moment. Fractions are in [0, 1]; None: not supported here.

    ``utilisation``: share of the last sample period in which a kernel ran
    (NVML's coarse "GPU busy"). ``sm_occupancy``: active warps over the
    theoretical maximum, from GPM — how full the SMs really are.
    """

    device: int
    at_s: float
    utilisation: float | None = None
    memory_used: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    sm_occupancy: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None

    def __post_init__(self) -> None:
        _check_fraction("utilisation", self.utilisation)
        _check_fraction("memory_used", self.memory_used)
        _check_fraction("sm_occupancy", self.sm_occupancy)


@runtime_checkable
class GpuProbe(Protocol):
    """Reads the devices a worker owns."""

    def read(self, now: float) -> tuple[GpuReading, ...]:
        """One reading per device, stamped ``now``."""
        ...

    def close(self) -> None:
        """Release the library handles. Idempotent."""
        ...


# ---------------------------------------------------------------- scripted


class ScriptedProbe:
    """Replays a script: each read returns the next step's readings.

    A step is a sequence of readings (one per device) or a single reading.
    After the last step the last one repeats, or the script starts over
    when ``loop`` is set. The readings are re-stamped with the read's ``now``.
    """

    def __init__(
        self, script: Iterable[GpuReading | Sequence[GpuReading]], *, loop: bool = False
    ) -> None:
        self._steps: list[tuple[GpuReading, ...]] = [
            (step,) if isinstance(step, GpuReading) else tuple(step) for step in script
        ]
        if not self._steps:
            raise WorkerConfigError("ScriptedProbe needs at least one step")
        self._loop = loop
        self._index = 0
        self.reads = 0

    def read(self, now: float) -> tuple[GpuReading, ...]:
        step = self._steps[self._index]
        if self._index + 1 < len(self._steps):
            self._index += 1
        elif self._loop:
            self._index = 0
        self.reads += 1
        return tuple(replace(reading, at_s=now) for reading in step)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- NVML


class NvmlProbe:
    """Reads NVIDIA GPUs through NVML. ``devices`` are NVML indices (all when None).

    ``nvml`` is the pynvml module; tests of the error paths pass a stand-in.
    Every per-metric query that the device does not support reads as None;
    a device that fails outright raises ProbeError naming it.
    """

    def __init__(self, devices: Sequence[int] | None = None, *, nvml: Any = None) -> None:
        self._nv: Any = nvml if nvml is not None else pynvml
        self._gpm: dict[int, Any] = {}  # device -> previous GPM sample
        try:
            self._nv.nvmlInit()
        except self._nv.NVMLError as exc:
            raise ProbeUnavailableError(f"NVML cannot start: {exc}") from exc
        self._open = True
        try:
            self._handles = self._open_devices(devices)
            self._gpm_supported = {i: self._supports_gpm(h) for i, h in self._handles}
        except BaseException:
            self.close()
            raise

    def _open_devices(self, devices: Sequence[int] | None) -> list[tuple[int, Any]]:
        try:
            count = int(self._nv.nvmlDeviceGetCount())
        except self._nv.NVMLError as exc:
            raise ProbeUnavailableError(f"NVML cannot count devices: {exc}") from exc
        indices = list(range(count)) if devices is None else list(devices)
        if not indices:
            raise ProbeUnavailableError("NVML sees no GPU on this machine")
        for index in indices:
            if not 0 <= index < count:
                raise WorkerConfigError(
                    f"GPU device {index} does not exist (NVML sees {count} device(s))"
                )
        return [(i, self._nv.nvmlDeviceGetHandleByIndex(i)) for i in indices]

    @property
    def devices(self) -> tuple[int, ...]:
        return tuple(i for i, _ in self._handles)

    def gpm_supported(self, device: int) -> bool:
        return self._gpm_supported.get(device, False)

    def _supports_gpm(self, handle: Any) -> bool:
        try:
            return bool(self._nv.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice)
        except (self._nv.NVMLError, AttributeError):
            return False  # older driver or library: no GPM

    def _maybe(self, query: Callable[..., Any], *args: Any) -> Any:
        """A query's value, or None where the device does not support it."""
        try:
            return query(*args)
        except self._nv.NVMLError as exc:
            if self._is_unsupported(exc):
                return None
            raise

    def _is_unsupported(self, exc: Exception) -> bool:
        value = getattr(exc, "value", None)
        return value in (
            getattr(self._nv, "NVML_ERROR_NOT_SUPPORTED", 3),
            getattr(self._nv, "NVML_ERROR_NO_PERMISSION", 4),
            getattr(self._nv, "NVML_ERROR_NO_DATA", 21),
        )

    def _sm_occupancy(self, device: int, handle: Any) -> float | None:
        """Occupancy between the previous read's GPM sample and a new one."""
        nv = self._nv
        sample = nv.nvmlGpmSampleAlloc()
        try:
            nv.nvmlGpmSampleGet(handle, sample)
        except nv.NVMLError:
            nv.nvmlGpmSampleFree(sample)
            raise
        previous = self._gpm.get(device)
        self._gpm[device] = sample
        if previous is None:
            return None
        try:
            request = nv.c_nvmlGpmMetricsGet_t()
            request.version = nv.NVML_GPM_METRICS_GET_VERSION
            request.numMetrics = 1
            request.sample1 = previous
            request.sample2 = sample
            request.metrics[0].metricId = nv.NVML_GPM_METRIC_SM_OCCUPANCY
            nv.nvmlGpmMetricsGet(request)
            metric = request.metrics[0]
            if metric.nvmlReturn != nv.NVML_SUCCESS:
                return None
            return min(1.0, max(0.0, float(metric.value) / 100.0))
        finally:
            nv.nvmlGpmSampleFree(previous)

    def read(self, now: float) -> tuple[GpuReading, ...]:
        if not self._open:
            raise ProbeError("NvmlProbe is closed")
        nv = self._nv
        readings = []
        for device, handle in self._handles:
            try:
                util = self._maybe(nv.nvmlDeviceGetUtilizationRates, handle)
                memory = self._maybe(nv.nvmlDeviceGetMemoryInfo, handle)
                temp = self._maybe(nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU)
                power_mw = self._maybe(nv.nvmlDeviceGetPowerUsage, handle)
            except nv.NVMLError as exc:
                raise ProbeError(f"NVML cannot read GPU {device}: {exc}") from exc
            occupancy = None
            if self._gpm_supported[device]:
                try:
                    occupancy = self._sm_occupancy(device, handle)
                except nv.NVMLError as exc:
                    # GPM is a bonus signal: a device that fails it (MIG mode,
                    # a driver without it) keeps reporting everything else.
                    log.warning("GPM disabled on GPU %d: %s", device, exc)
                    self._gpm_supported[device] = False
            used = total = None
            if memory is not None:
                used, total = int(memory.used), int(memory.total)
            readings.append(
                GpuReading(
                    device=device,
                    at_s=now,
                    utilisation=None if util is None else min(1.0, util.gpu / 100.0),
                    memory_used=used / total if used is not None and total else None,
                    memory_used_bytes=used,
                    memory_total_bytes=total,
                    sm_occupancy=occupancy,
                    temperature_c=None if temp is None else float(temp),
                    power_w=None if power_mw is None else power_mw / 1000.0,
                )
            )
        return tuple(readings)

    def close(self) -> None:
        if not getattr(self, "_open", False):
            return
        self._open = False
        for sample in self._gpm.values():
            with contextlib.suppress(self._nv.NVMLError):
                self._nv.nvmlGpmSampleFree(sample)
        self._gpm = {}
        with contextlib.suppress(self._nv.NVMLError):
            self._nv.nvmlShutdown()


def detect_probe(
    fallback: GpuProbe | None = None, *, devices: Sequence[int] | None = None
) -> GpuProbe:
    """NVML when this machine has an NVIDIA GPU, else ``fallback``.

    Without a GPU and without a fallback it raises ProbeUnavailableError:
    a worker that believes it watches a GPU must not silently watch a script.
    """
    try:
        return NvmlProbe(devices)
    except ProbeUnavailableError as exc:
        if fallback is None:
            raise ProbeUnavailableError(
                f"no NVIDIA GPU to probe ({exc}); pass a ScriptedProbe (or another "
                "GpuProbe) explicitly on machines without one"
            ) from exc
        log.info("no GPU to probe (%s); using %r", exc, fallback)
        return fallback


# ---------------------------------------------------------------- sampling


class ProbeSampler:
    """Reads ``probe`` every ``interval_s`` on ``clock``; the latest readings are kept.

    ``on_reading`` (optional) is called with each new set of readings, on
    the event loop. A failing read is logged and retried next interval; the
    previous readings stay (stale data is better than none for a window
    controller, and ``latest`` carries its timestamp).
    """

    def __init__(
        self,
        probe: GpuProbe,
        clock: Clock,
        interval_s: float = 0.5,
        on_reading: Callable[[tuple[GpuReading, ...]], None] | None = None,
    ) -> None:
        if not interval_s > 0:
            raise WorkerConfigError(f"probe interval_s must be > 0 (got {interval_s!r})")
        self.probe = probe
        self.clock = clock
        self.interval_s = interval_s
        self._on_reading = on_reading
        self.latest: tuple[GpuReading, ...] = ()
        self.samples = 0
        self.errors = 0
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> tuple[GpuReading, ...]:
        """Take one reading now (also what the loop does each interval)."""
        try:
            readings = self.probe.read(self.clock.now())
        except ProbeError as exc:
            self.errors += 1
            log.warning("GPU probe read failed: %s", exc)
            return self.latest
        self.latest = readings
        self.samples += 1
        if self._on_reading is not None:
            self._on_reading(readings)
        return readings

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            self.sample()
            await self.clock.sleep(self.interval_s)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="gpu-probe-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})
