"""Does a real replay reproduce the simulator's fairness? (reports, never asserts)

    .venv/bin/python -m benchmarks.loadgen_vs_sim [--config configs/demo.yaml] [--seed 1]

Makes the trace of the config's ``workload:`` section, runs ``tidegate
simulate`` on it (the policy on a virtual clock against the fleet model),
then replays the same trace in real time with ``tidegate loadgen``'s engine
against a real ``tidegate serve`` and ``fleet.workers`` simulated-GPU
workers (``tidegate workers --in-process``, the same fleet model in real
time). Both events files go through one summary
(:func:`tidegate.bench.replay.fairness_summary`), so the figures compare like
with like; the simulator's own figure is printed too. One JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
from typing import Any

from scheduler.settings import (
    load_settings,
    to_fleet_config,
    to_scheduler_config,
    to_workload_spec,
)
from scheduler.sim.events import EventRow
from scheduler.sim.simulate import simulate
from scheduler.sim.workload import generate
from tidegate.bench.replay import fairness_summary
from tidegate.bench.serving import stop
from tidegate.loadgen import LoadGenerator, LoadRow


def _spawn(argv: list[str], env: dict[str, str], marker: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if marker not in line:
        proc.kill()
        raise SystemExit(f"{argv[3]} did not start: {line!r}")
    return proc, line


def _figures(summary: dict[str, Any]) -> dict[str, Any]:
    total = sum(t["served_tokens"] for t in summary["tenants"].values()) or 1
    return {
        "jain_index": summary["jain_index"],
        "jain_index_dispatched": summary["jain_index_dispatched"],
        "completed": summary["completed"],
        "rejected": summary["rejected"],
        "duration_s": summary["duration_s"],
        "tenants": {
            name: {
                "served_share": round(t["served_tokens"] / total, 4),
                "rejections": t["rejections"],
                "wait_p50_s": t["wait_p50_s"],
                "wait_p99_s": t["wait_p99_s"],
            }
            for name, t in summary["tenants"].items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    settings = load_settings(args.config, environ={})
    config = to_scheduler_config(settings)
    fleet = to_fleet_config(settings)
    trace = generate(to_workload_spec(settings), args.seed)
    simulated = simulate(trace, config, fleet)
    weights = {n: t.weight for n, t in config.tenants.items()}
    clients = [n for n, t in settings.tenants.items() if t.role != "worker"]
    keys = {n: secrets.token_hex(12) for n in settings.tenants}
    env = dict(os.environ)
    for name, tenant in settings.tenants.items():
        if tenant.api_key_env:
            env[tenant.api_key_env] = keys[name]

    def summary(rows: list[EventRow], label: str) -> dict[str, Any]:
        return fairness_summary(
            rows,
            weights,
            workers=fleet.workers,
            input_weight=config.input_token_weight,
            output_weight=config.output_token_weight,
            label=label,
        )

    with tempfile.TemporaryDirectory() as tmp:
        tidegate = [sys.executable, "-m", "tidegate"]
        server, line = _spawn(
            [
                *(*tidegate, "serve", "--config", args.config, "--data-dir", f"{tmp}/data"),
                *("--listen", "127.0.0.1:0"),
            ],
            env,
            "listening on",
        )
        address = line.split("listening on ")[1].split()[0]
        fleet_proc, _ = _spawn(
            [
                *(*tidegate, "workers", "--server", address, "--config", args.config),
                *("--in-process", "--capacity", "64", "--backend-option", "chunk_interval_s=0.25"),
            ],
            env,
            "ready",
        )
        try:
            generator = LoadGenerator(
                address,
                [
                    LoadRow(
                        r.arrival_s,
                        r.tenant,
                        r.priority,
                        r.input_tokens,
                        r.output_tokens,
                        r.session,
                    )
                    for r in trace
                ],
                {n: keys[n] for n in clients},
            )
            events = asyncio.run(generator.run())
        finally:
            stop(fleet_proc)
            stop(server)
    replayed = [EventRow(*(getattr(e, f) for f in EventRow.__dataclass_fields__)) for e in events]
    sim_events = summary(list(simulated.rows), "simulate")
    real = summary(replayed, "loadgen")
    sim_jain = sim_events["jain_index"]
    real_jain = real["jain_index"]
    print(
        json.dumps(
            {
                "config": args.config,
                "requests": len(trace),
                "workers": fleet.workers,
                "simulator_own_jain_index": simulated.summary["jain_index"],
                "simulate": _figures(sim_events),
                "loadgen": _figures(real),
                "jain_relative_difference": (
                    round(abs(real_jain - sim_jain) / sim_jain, 4)
                    if sim_jain and real_jain is not None
                    else None
                ),
                "errors": generator.errors[:5],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
