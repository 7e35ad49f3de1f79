"""A stand-in for the pynvml module, for the NVML probe's tests on machines without a GPU.

It keeps pynvml's own error class, constants and GPM structures (so the
probe's ctypes handling is the real one) and replaces the driver calls with
per-device values a test sets. The real library runs in the gpu-marked test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml


@dataclass
class FakeDevice:
    util_percent: int = 40
    memory_used: int = 30 * 2**30
    memory_total: int = 80 * 2**30
    temperature_c: int = 55
    power_mw: int = 250_000
    gpm: bool = True
    occupancy_percent: float = 35.0
    unsupported: set[str] = field(default_factory=set)  # query names answering NOT_SUPPORTED


class FakeNvml:
    NVMLError = pynvml.NVMLError
    NVML_SUCCESS = pynvml.NVML_SUCCESS
    NVML_ERROR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION
    NVML_ERROR_NO_DATA = pynvml.NVML_ERROR_NO_DATA
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_GPM_METRICS_GET_VERSION = pynvml.NVML_GPM_METRICS_GET_VERSION
    NVML_GPM_METRIC_SM_OCCUPANCY = pynvml.NVML_GPM_METRIC_SM_OCCUPANCY
    c_nvmlGpmMetricsGet_t = pynvml.c_nvmlGpmMetricsGet_t  # noqa: N815 - pynvml's own name

    def __init__(self, devices: list[FakeDevice], init_error: int | None = None) -> None:
        self.devices = devices
        self.init_error = init_error
        self.initialised = 0
        self.samples_alive = 0
        self.metric_requests: list[Any] = []

    def _device(self, handle: Any, query: str) -> FakeDevice:
        device: FakeDevice = self.devices[handle.index]
        if query in device.unsupported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return device

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return SimpleNamespace(index=index)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        return SimpleNamespace(gpu=self._device(handle, "util").util_percent, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        d = self._device(handle, "memory")
        return SimpleNamespace(used=d.memory_used, total=d.memory_total, free=0)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._device(handle, "temperature").temperature_c

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return self._device(handle, "power").power_mw

    def nvmlGpmQueryDeviceSupport(self, handle: Any) -> Any:
        return SimpleNamespace(isSupportedDevice=int(self.devices[handle.index].gpm))

    def nvmlGpmSampleAlloc(self) -> Any:
        self.samples_alive += 1
        return pynvml.c_nvmlGpmSample_t()  # the real (opaque pointer) type

    def nvmlGpmSampleGet(self, handle: Any, sample: Any) -> Any:
        self._device(handle, "gpm")
        sample.device = handle.index
        return sample

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        self.samples_alive -= 1

    def nvmlGpmMetricsGet(self, request: Any) -> Any:
        assert request.version == pynvml.NVML_GPM_METRICS_GET_VERSION
        assert request.numMetrics == 1
        metric = request.metrics[0]
        assert metric.metricId == pynvml.NVML_GPM_METRIC_SM_OCCUPANCY
        self.metric_requests.append(request)
        metric.nvmlReturn = pynvml.NVML_SUCCESS
        metric.value = self.devices[0].occupancy_percent
        return request
