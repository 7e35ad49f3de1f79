"""``python -m benchmarks.peers``: start each server, run the workloads, print one table.

    --quick                 the one-minute smoke sizes
    --json                  print the whole run as one JSON object (nothing else on stdout)
    --markdown              print the tables as Markdown (for the README)
    --save FILE             also write the JSON to FILE
    --from-json FILE        re-render a saved run; starts nothing
    --systems a,b           a subset of tidegate,redis,jetstream
    --workloads a,b         a subset of produce,consume,publish-one,topics,fanin
    --fanin-rate N          fan-in messages per second instead of the size's

Progress goes to stderr. A workload that fails is reported (in the JSON's
``errors`` and on stderr) and the run goes on; every server is stopped by its
pid whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.peers import jetstream_runs, redis_runs, servers, tidegate_runs
from benchmarks.peers.machine import describe, summary
from benchmarks.peers.report import (
    check_targets,
    cpu_table,
    durability_table,
    markdown,
    rich_table,
    rows,
)
from benchmarks.peers.results import Figure, System, Tier, combine, supports_sync_always
from benchmarks.peers.workloads import FULL, QUICK, Sizes, Step, Workload, plan

__all__ = ["main"]

_STARTERS: dict[System, Callable[[Tier], servers.PeerServer]] = {
    System.TIDEGATE: servers.start_tidegate,
    System.REDIS: servers.start_redis,
    System.JETSTREAM: servers.start_nats,
}
_RUNNERS: dict[System, Any] = {
    System.TIDEGATE: tidegate_runs,
    System.REDIS: redis_runs,
    System.JETSTREAM: jetstream_runs,
}


def _names(text: str, kind: type[System] | type[Workload]) -> list[Any]:
    try:
        return [kind(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        choices = ",".join(k.value for k in kind)
        raise SystemExit(f"{text!r}: each name must be one of {choices}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.peers", description=__doc__.split("\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="a one-minute smoke run")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the run as one JSON object")
    out.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--save", type=Path, help="also write the JSON to this file")
    p.add_argument("--from-json", type=Path, help="re-render a saved run (starts nothing)")
    p.add_argument("--systems", default=",".join(s.value for s in System))
    p.add_argument("--workloads", default=",".join(w.value for w in Workload))
    p.add_argument("--seed", type=int, default=7, help="seeds the fan-in's choice of sessions")
    p.add_argument(
        "--fanin-rate", type=int, help="fan-in messages per second (default: the size's)"
    )
    return p


def _unavailable(systems: Sequence[System]) -> dict[tuple[System, Tier], str]:
    """(system, tier) pairs that this machine's servers cannot run, and why."""
    if System.JETSTREAM not in systems:
        return {}
    version = servers.nats_version()
    if supports_sync_always(version):
        return {}
    text = ".".join(map(str, version))
    return {
        (System.JETSTREAM, Tier.FSYNC): f"nats-server {text} has no sync_interval: always (2.10+)"
    }


def _run_step(
    step: Step, sizes: Sizes, seed: int, log: Console
) -> tuple[list[Figure], list[dict[str, str]], str]:
    """Start the step's server, run its workloads, stop it by pid."""
    figures: list[Figure] = []
    errors: list[dict[str, str]] = []
    runner = _RUNNERS[step.system]
    server = _STARTERS[step.system](step.tier)
    log.print(
        f"[bold]{step.system.value}[/] {server.version} at {step.tier.value}, round {step.round} "
        f"(pid {server.pid}, 127.0.0.1:{server.port}): {', '.join(w.value for w in step.workloads)}"
    )
    try:
        for workload in step.workloads:
            started = time.monotonic()
            server_cpu = server.cpu_seconds()
            client_cpu = time.process_time()
            try:
                if workload is Workload.FANIN:
                    made = runner.fanin(server, step.tier, sizes, seed)
                else:
                    made = getattr(runner, workload.value.replace("-", "_"))(
                        server, step.tier, sizes
                    )
            except Exception as exc:  # report, stop nothing else; the run goes on
                errors.append(
                    {
                        "system": step.system.value,
                        "tier": step.tier.value,
                        "workload": workload.value,
                        "error": f"{type(exc).__name__}: {exc}",
                    }
                )
                log.print(f"  [red]{workload.value} failed[/]: {type(exc).__name__}: {exc}")
                continue
            # Who burnt the CPU (two cores, shared by the server and this client)
            # says what limits a figure.
            cost = {
                "wall_s": round(time.monotonic() - started, 3),
                "server_cpu_s": round(server.cpu_seconds() - server_cpu, 3),
                "client_cpu_s": round(time.process_time() - client_cpu, 3),
                "load_1m": round(os.getloadavg()[0], 2),  # how busy the machine was
            }
            made = [
                replace(f, details={**cost, **f.details})  # a runner's own figures win
                for f in (made if isinstance(made, list) else [made])
            ]
            figures += made
            shown = ", ".join(f"{f.metric.value} {f.value:,.1f} {f.metric.unit}" for f in made)
            log.print(f"  {workload.value}: {shown} ({time.monotonic() - started:.1f} s)")
    finally:
        code = server.stop()
        log.print(f"  stopped pid {server.pid} (exit {code})")
    return figures, errors, server.version


def _commit() -> str:
    """This checkout's commit, with ``+dirty`` when the tree has changes (or '?')."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], check=False).returncode
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+dirty" if dirty else "")


def run(args: argparse.Namespace, log: Console) -> dict[str, Any]:
    systems: list[System] = _names(args.systems, System)
    workloads: list[Workload] = _names(args.workloads, Workload)
    sizes = QUICK if args.quick else FULL
    if args.fanin_rate is not None:
        sizes = replace(sizes, fanin_rate=args.fanin_rate)
    unavailable = _unavailable(systems)
    machine = describe()
    log.print(f"machine: {summary(machine)}")
    figures: list[Figure] = []
    errors: list[dict[str, str]] = []
    versions: dict[str, str] = {"tidegate_commit": _commit()}
    started = time.monotonic()
    for step in plan(systems, workloads, unavailable, sizes.rounds):
        try:
            made, failed, version = _run_step(step, sizes, args.seed, log)
        except servers.ServerError as exc:
            errors.append({"system": step.system.value, "tier": step.tier.value, "error": str(exc)})
            log.print(f"[red]{step.system.value} did not start[/]: {exc}")
            continue
        figures += made
        errors += failed
        versions[step.system.value] = version
    machine["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "mode": "quick" if args.quick else "full",
        "seconds": round(time.monotonic() - started, 1),
        "machine": machine,
        "versions": versions,
        "sizes": asdict(sizes),
        "unavailable": [
            {"system": s.value, "tier": t.value, "reason": why}
            for (s, t), why in unavailable.items()
        ],
        "figures": [f.to_json() for f in combine(figures)],
        "every_run": [f.to_json() for f in figures],
        "errors": errors,
    }


def _present(result: dict[str, Any], args: argparse.Namespace, out: Console) -> None:
    figures = [Figure.from_json(f) for f in result["figures"]]
    table = rows(figures)
    targets = check_targets(table)
    unavailable = {
        (System(u["system"]), Tier(u["tier"])): str(u["reason"]) for u in result["unavailable"]
    }
    result["rows"] = [
        {
            "metric": r.metric.value,
            "tier": r.tier.value,
            "values": {s.value: f.value for s, f in r.figures.items()},
            "vs": {p.value: r.ratio(p) for p in (System.REDIS, System.JETSTREAM)},
        }
        for r in table
    ]
    result["targets"] = [t.to_json() for t in targets]
    if args.save:
        args.save.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
        return
    if args.markdown:
        print(markdown(table, unavailable), end="")
        return
    title = f"tidegate vs Redis Streams vs NATS JetStream ({result['mode']} run)"
    out.print(rich_table(table, title))
    tiers = Table(title="durability of each tier")
    for header in ("tier", "tidegate", "Redis", "JetStream"):
        tiers.add_column(header)
    for cells in durability_table(unavailable):
        tiers.add_row(*cells)
    out.print(tiers)
    cpu = Table(title="CPU µs per operation (server / client; both share the cores)")
    for header in ("workload", "tier", "tidegate", "Redis", "JetStream"):
        cpu.add_column(header, justify="left" if header in ("workload", "tier") else "right")
    for cells in cpu_table(table):
        cpu.add_row(*cells)
    out.print(cpu)
    for t in targets:
        mark = {True: "[green]met[/]", False: "[red]not met[/]", None: "not measured"}[t.met]
        ratio = "-" if t.ratio is None else f"{t.ratio:.2f}x"
        out.print(f"target {t.target.name}: {ratio} {mark}")
    out.print(f"machine: {summary(result['machine'])}")
    versions = ", ".join(f"{k} {v}" for k, v in result.get("versions", {}).items())
    out.print(f"versions: {versions}; run took {result.get('seconds')} s")
    for e in result.get("errors", []):
        out.print(f"[red]error[/]: {e}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log = Console(stderr=True)
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text())
    else:
        result = run(args, log)
    _present(result, args, Console())
    return 1 if result.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
