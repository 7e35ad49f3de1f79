"""GPU probes: scripted replay, the sampler on a virtual clock, NVML (stand-in and real)."""

from __future__ import annotations

import asyncio

import pynvml
import pytest

from scheduler.clock import VirtualClock
from workers.errors import ProbeError, ProbeUnavailableError, WorkerConfigError
from workers.probe import (
    GpuProbe,
    GpuReading,
    NvmlProbe,
    ProbeSampler,
    ScriptedProbe,
    detect_probe,
)

from .fake_nvml import FakeDevice, FakeNvml
from .virtual import settle


def reading(util: float, mem: float = 0.5, device: int = 0) -> GpuReading:
    return GpuReading(device=device, at_s=0.0, utilisation=util, memory_used=mem)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("field", ["utilisation", "memory_used", "sm_occupancy"])
def test_a_reading_refuses_fractions_outside_0_1(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        GpuReading(device=0, at_s=0.0, **{field: 1.2})  # type: ignore[arg-type]


# ---------------------------------------------------------------- scripted


def test_scripted_probe_replays_then_holds_the_last_step() -> None:
    probe = ScriptedProbe([reading(0.1), [reading(0.2), reading(0.3, device=1)]])
    assert isinstance(probe, GpuProbe)
    first = probe.read(1.0)
    assert [(r.utilisation, r.at_s) for r in first] == [(0.1, 1.0)]
    second = probe.read(2.0)
    assert [(r.device, r.utilisation, r.at_s) for r in second] == [(0, 0.2, 2.0), (1, 0.3, 2.0)]
    assert probe.read(3.0)[1].utilisation == 0.3
    assert probe.reads == 3


def test_scripted_probe_loops_when_asked() -> None:
    probe = ScriptedProbe([reading(0.1), reading(0.9)], loop=True)
    assert [probe.read(t)[0].utilisation for t in range(5)] == [0.1, 0.9, 0.1, 0.9, 0.1]


def test_an_empty_script_is_refused() -> None:
    with pytest.raises(WorkerConfigError, match="at least one step"):
        ScriptedProbe([])


# ---------------------------------------------------------------- sampler


def test_the_sampler_reads_on_its_interval_on_the_clock() -> None:
    clock = VirtualClock()
    seen: list[tuple[float, float | None]] = []
    probe = ScriptedProbe([reading(u / 10) for u in range(10)])

    async def scenario() -> ProbeSampler:
        sampler = ProbeSampler(
            probe,
            clock,
            interval_s=0.5,
            on_reading=lambda rs: seen.append((rs[0].at_s, rs[0].utilisation)),
        )
        sampler.start()
        await settle()
        for _ in range(3):
            clock.advance(0.5)
            await settle()
        await sampler.stop()
        return sampler

    sampler = asyncio.run(scenario())
    assert seen == [(0.0, 0.0), (0.5, 0.1), (1.0, 0.2), (1.5, 0.3)]
    assert sampler.latest[0].utilisation == 0.3
    assert sampler.samples == 4


class FailingProbe:
    def __init__(self) -> None:
        self.fail = False

    def read(self, now: float) -> tuple[GpuReading, ...]:
        if self.fail:
            raise ProbeError("GPU 0 fell off the bus")
        return (GpuReading(0, now, utilisation=0.5),)

    def close(self) -> None:
        pass


def test_a_failed_read_keeps_the_last_readings_and_counts_the_error() -> None:
    probe = FailingProbe()
    sampler = ProbeSampler(probe, VirtualClock(), interval_s=1.0)
    good = sampler.sample()
    probe.fail = True
    assert sampler.sample() == good
    assert (sampler.samples, sampler.errors) == (1, 1)


def test_a_sampler_needs_a_positive_interval() -> None:
    with pytest.raises(WorkerConfigError, match="interval_s"):
        ProbeSampler(FailingProbe(), VirtualClock(), interval_s=0)


# ---------------------------------------------------------------- NVML stand-in


def test_nvml_readings_and_gpm_occupancy_from_the_second_read() -> None:
    nvml = FakeNvml([FakeDevice()])
    probe = NvmlProbe(nvml=nvml)
    assert probe.devices == (0,)
    assert probe.gpm_supported(0)
    (first,) = probe.read(10.0)
    assert first == GpuReading(
        device=0,
        at_s=10.0,
        utilisation=0.4,
        memory_used=30 / 80,
        memory_used_bytes=30 * 2**30,
        memory_total_bytes=80 * 2**30,
        sm_occupancy=None,  # GPM needs two samples
        temperature_c=55.0,
        power_w=250.0,
    )
    (second,) = probe.read(10.5)
    assert second.sm_occupancy == pytest.approx(0.35)
    assert len(nvml.metric_requests) == 1
    assert nvml.samples_alive == 1  # the older sample was freed, the newer kept
    probe.close()
    assert nvml.samples_alive == 0
    assert nvml.initialised == 0
    probe.close()  # idempotent
    with pytest.raises(ProbeError, match="closed"):
        probe.read(11.0)


def test_a_device_without_gpm_or_a_sensor_reads_none_there() -> None:
    nvml = FakeNvml([FakeDevice(gpm=False, unsupported={"temperature", "power"})])
    probe = NvmlProbe(nvml=nvml)
    probe.read(0.0)
    (reading_,) = probe.read(1.0)
    assert (reading_.sm_occupancy, reading_.temperature_c, reading_.power_w) == (None, None, None)
    assert reading_.utilisation == 0.4
    assert nvml.samples_alive == 0
    probe.close()


def test_a_gpm_failure_disables_gpm_but_keeps_the_rest() -> None:
    nvml = FakeNvml([FakeDevice(unsupported={"gpm"})])
    probe = NvmlProbe(nvml=nvml)
    (reading_,) = probe.read(0.0)
    assert reading_.sm_occupancy is None
    assert reading_.utilisation == 0.4
    assert not probe.gpm_supported(0)
    assert nvml.samples_alive == 0
    probe.close()


def test_only_the_chosen_devices_are_read() -> None:
    nvml = FakeNvml([FakeDevice(util_percent=10), FakeDevice(util_percent=90)])
    probe = NvmlProbe([1], nvml=nvml)
    assert [(r.device, r.utilisation) for r in probe.read(0.0)] == [(1, 0.9)]
    probe.close()
    with pytest.raises(WorkerConfigError, match="GPU device 2 does not exist"):
        NvmlProbe([2], nvml=FakeNvml([FakeDevice(), FakeDevice()]))


def test_no_driver_or_no_device_is_probe_unavailable() -> None:
    with pytest.raises(ProbeUnavailableError, match="NVML cannot start"):
        NvmlProbe(nvml=FakeNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    empty = FakeNvml([])
    with pytest.raises(ProbeUnavailableError, match="no GPU"):
        NvmlProbe(nvml=empty)
    assert empty.initialised == 0  # shut down again


def test_detect_probe_takes_nvml_where_there_is_a_gpu_and_the_fallback_elsewhere() -> None:
    fallback = ScriptedProbe([reading(0.0)])
    probe = detect_probe(fallback)
    try:
        if isinstance(probe, NvmlProbe):  # a machine with a GPU
            assert probe.devices
        else:
            assert probe is fallback
            with pytest.raises(ProbeUnavailableError, match="ScriptedProbe"):
                detect_probe()
    finally:
        probe.close()
