"""The ``tidegate`` command: the composition root.

This is the one module that wires ``broker``, ``scheduler`` and ``workers``
together and reads settings. It imports them inside each command so that
``tidegate --help`` stays fast and no package cycle forms. Errors that the
packages raise on purpose become one line on stderr and exit code 2; nothing
a user does should show a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tidegate.errors import TidegateError, UsageError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from broker.server import ExtensionFactory
    from broker.tenancy import KeyRing
    from scheduler.settings import Settings
    from scheduler.sim.events import EventRow
    from tidegate import demo as demo_types
    from tidegate.loadgen import LoadEvent
    from workers.fleet import FleetSpec

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70  # EX_SOFTWARE

Handler = Callable[[argparse.Namespace], int]


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Root error classes whose message is meant for the user."""
    from broker.errors import BrokerError
    from scheduler.errors import SchedulerError

    return (TidegateError, BrokerError, SchedulerError)


# ----------------------------------------------------------------- commands


def _cmd_bench(args: argparse.Namespace) -> int:
    from tidegate import bench

    return bench.run_cli(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from tidegate import demo

    return demo.run(args, _demo_plan(args))


def _demo_plan(args: argparse.Namespace) -> demo_types.DemoPlan:
    """What the demo replays, read from its config (settings are read here only),
    with the simulator's prediction for the same trace and fleet."""
    from scheduler.settings import (
        load_settings,
        to_fleet_config,
        to_scheduler_config,
        to_workload_spec,
    )
    from scheduler.sim.simulate import simulate
    from scheduler.sim.workload import generate
    from tidegate.bench.replay import fairness_summary
    from tidegate.demo import DemoPlan
    from tidegate.loadgen import LoadRow

    config = Path(args.config) if args.config else _default_demo_config()
    settings = load_settings(config, environ={})
    fleet = to_fleet_config(settings)
    scheduler_config = to_scheduler_config(settings)
    trace = generate(to_workload_spec(settings), args.seed)
    if args.seconds is not None:  # a short run: the arrivals of its first half
        trace = [r for r in trace if r.arrival_s < args.seconds / 2]
    clients = {n: t for n, t in settings.tenants.items() if t.role != "worker"}
    fleets = [t.api_key_env for t in settings.tenants.values() if t.role == "worker"]
    key_envs = {n: t.api_key_env for n, t in clients.items() if t.api_key_env}
    if len(fleets) != 1 or fleets[0] is None or len(key_envs) != len(clients):
        raise UsageError(
            f"{config}: the demo needs api_key_env on every tenant and one tenant with role: worker"
        )
    weights = {n: t.weight for n, t in scheduler_config.tenants.items() if n in clients}
    predicted = simulate(trace, scheduler_config, fleet).summary

    def summarize(events: Sequence[LoadEvent]) -> dict[str, object]:
        return fairness_summary(
            _event_rows(events),
            weights,
            workers=fleet.workers,
            input_weight=scheduler_config.input_token_weight,
            output_weight=scheduler_config.output_token_weight,
            label="demo",
        )

    return DemoPlan(
        config=config,
        rows=tuple(
            LoadRow(r.arrival_s, r.tenant, r.priority, r.input_tokens, r.output_tokens, r.session)
            for r in trace
        ),
        weights=weights,
        key_envs=key_envs,
        fleet_key_env=fleets[0],
        workers=fleet.workers,
        summarize=summarize,
        predicted=predicted,
    )


def _event_rows(events: Sequence[LoadEvent]) -> list[EventRow]:
    """The load generator's rows as the simulator's (one events format, one writer)."""
    from scheduler.sim.events import EventRow

    return [
        EventRow(
            e.request_id,
            e.tenant,
            e.priority,
            e.arrival_s,
            e.admitted,
            e.reject_reason,
            e.dispatch_s,
            e.first_token_s,
            e.finish_s,
            e.input_tokens,
            e.output_tokens,
            e.worker,
            e.preemptions,
        )
        for e in events
    ]


def _default_demo_config() -> Path:
    """configs/demo.yaml of the working directory, else of the source tree."""
    for here in (
        Path("configs/demo.yaml"),
        Path(__file__).resolve().parents[1] / "configs/demo.yaml",
    ):
        if here.is_file():
            return here
    raise UsageError("the demo's config configs/demo.yaml is missing; pass --config")


def _cmd_workers(args: argparse.Namespace) -> int:
    from tidegate.scripting import api_key
    from workers.fleet import FleetSpec
    from workers.serve import serve_in_process, serve_ray

    options: dict[str, object] = {}
    replicas = args.replicas
    key = None
    if args.config:
        from scheduler.settings import load_settings, tenant_api_keys

        settings = load_settings(args.config)
        fleet = settings.fleet
        if args.backend == "simulated" and fleet is not None and fleet.model is not None:
            options["model"] = fleet.model.model_dump(exclude_none=True)
        if replicas is None and fleet is not None and fleet.workers is not None:
            replicas = fleet.workers
        if args.api_key_file is None and "TIDEGATE_API_KEY" not in os.environ:
            keys = tenant_api_keys(settings)
            fleets = [n for n, t in settings.tenants.items() if t.role == "worker" and n in keys]
            if len(fleets) == 1:
                key = keys[fleets[0]].get_secret_value()
    for item in args.backend_option:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--backend-option {item!r}: expected KEY=VALUE")
        _set_option(options, name.split("."), text)
    if key is None:
        key = api_key(args, os.environ).reveal()
    spec = FleetSpec(
        server=args.server,
        api_key=key,
        backend=args.backend,
        backend_options=options,
        capacity=args.capacity,
        prefix=args.prefix,
    )

    def announce(text: str) -> None:
        print(f"tidegate workers: {text}", flush=True)

    autoscale = args.max_replicas is not None or args.min_replicas is not None
    if autoscale:
        return _serve_autoscaled(args, spec, announce)
    replicas = replicas or 1
    if args.in_process:
        if args.tracing == "off":
            return serve_in_process(spec, replicas, announce)
        # The workers of this process trace under the provider set up here.
        tracing = _setup_tracing(args, "tidegate-worker")
        try:
            return serve_in_process(spec, replicas, announce)
        finally:
            if tracing is not None:
                tracing.shutdown()
    if args.tracing != "off":
        raise UsageError("--tracing needs --in-process: Ray actors set up no tracer yet")
    return serve_ray(spec, replicas, announce, address=args.ray_address, gpus=args.gpus)


def _serve_autoscaled(
    args: argparse.Namespace, spec: FleetSpec, announce: Callable[[str], None]
) -> int:
    """``tidegate workers --max-replicas``: a Ray fleet resized on the server's queue depth."""
    from scheduler.metric_names import TENANT_QUEUED
    from workers.autoscale import AutoscaleConfig
    from workers.errors import WorkerConfigError
    from workers.queue_depth import FleetStatusDepth, PrometheusQueueDepth, QueueDepthSource
    from workers.scaling import serve_ray_autoscaled

    if args.max_replicas is None:
        raise UsageError("--min-replicas needs --max-replicas (the fleet's upper bound)")
    if args.replicas is not None:
        raise UsageError(
            "--replicas is a fixed fleet; give it, or --min-replicas/--max-replicas, not both"
        )
    if args.in_process:
        raise UsageError("autoscaling (--max-replicas) runs Ray actors; drop --in-process")
    if args.tracing != "off":
        raise UsageError("--tracing needs --in-process: Ray actors set up no tracer yet")
    try:
        config = AutoscaleConfig(
            min_replicas=args.min_replicas or 1,
            max_replicas=args.max_replicas,
            up_queued_per_replica=args.scale_up_queued,
            down_queued_per_replica=args.scale_down_queued,
            up_after_s=args.scale_up_after_s,
            down_after_s=args.scale_down_after_s,
            cooldown_s=args.scale_cooldown_s,
        )
        source: QueueDepthSource = (
            PrometheusQueueDepth(args.metrics_url, metric=TENANT_QUEUED.name)
            if args.metrics_url
            else FleetStatusDepth(spec.server, spec.api_key)
        )
    except (WorkerConfigError, ValueError) as exc:
        raise UsageError(str(exc).replace("_replicas", "-replicas")) from None
    return serve_ray_autoscaled(
        spec,
        config,
        source,
        announce,
        address=args.ray_address,
        gpus=args.gpus,
        interval_s=args.scale_interval_s,
        drain_timeout_s=args.drain_timeout_s,
    )


def _set_option(options: dict[str, object], path: list[str], text: str) -> None:
    """``model.decode_step_s=0.02`` -> options["model"]["decode_step_s"] = 0.02 (YAML scalars)."""
    import yaml

    target = options
    for part in path[:-1]:
        inner = target.setdefault(part, {})
        if not isinstance(inner, dict):
            raise UsageError(f"--backend-option {'.'.join(path)}: {part} is not a mapping")
        target = inner
    try:
        target[path[-1]] = yaml.safe_load(text)
    except yaml.YAMLError:
        target[path[-1]] = text


def _cmd_loadgen(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from scheduler.sim.events import write_events
    from scheduler.sim.traces import read_trace
    from tidegate.loadgen import LoadGenerator, LoadOptions, LoadRow

    trace = read_trace(args.trace)
    rows = [
        LoadRow(r.arrival_s, r.tenant, r.priority, r.input_tokens, r.output_tokens, r.session)
        for r in trace
    ]
    keys = _loadgen_keys(args, sorted({r.tenant for r in rows}))
    generator = LoadGenerator(
        args.server, rows, keys, LoadOptions(speed=args.speed, deadline_s=args.deadline_s)
    )
    events = asyncio.run(generator.run())
    try:
        count = write_events(args.events, _event_rows(events))
    except OSError as exc:
        raise UsageError(f"--events {args.events}: cannot write: {exc.strerror or exc}") from None
    completed = sum(1 for e in events if e.finish_s is not None)
    refused = sum(1 for e in events if not e.admitted)
    summary = {
        "requests": count,
        "admitted": count - refused,
        "refused": refused,
        "completed": completed,
        "unfinished": sum(1 for e in events if e.admitted and e.finish_s is None),
        "errors": generator.errors[:5],
    }
    print(
        json.dumps(summary)
        if args.json
        else f"wrote {count} rows to {args.events}: {completed} completed, {refused} refused, "
        f"{summary['unfinished']} admitted but not completed"
    )
    return 0


def _loadgen_keys(args: argparse.Namespace, tenants: list[str]) -> dict[str, str]:
    """Each tenant's key: from --config (as the server reads it), else from
    TIDEGATE_API_KEY_<TENANT> (upper case, '-' as '_'); a one-tenant trace may
    use TIDEGATE_API_KEY or --api-key-file."""
    keys: dict[str, str] = {}
    if args.config:
        from scheduler.settings import load_settings, tenant_api_keys

        found = tenant_api_keys(load_settings(args.config))
        keys = {t: found[t].get_secret_value() for t in tenants if t in found}
    for tenant in tenants:
        env = "TIDEGATE_API_KEY_" + tenant.upper().replace("-", "_")
        if tenant not in keys and os.environ.get(env):
            keys[tenant] = os.environ[env].strip()
    if len(tenants) == 1 and tenants[0] not in keys:
        from tidegate.scripting import api_key

        with contextlib.suppress(UsageError):
            keys[tenants[0]] = api_key(args, os.environ).reveal()
    return keys


def _cmd_pub(args: argparse.Namespace) -> int:
    from tidegate import scripting

    return scripting.pub(args)


def _cmd_sub(args: argparse.Namespace) -> int:
    from tidegate import scripting

    return scripting.sub(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    from pathlib import Path

    from broker import Broker, BrokerSettings
    from broker.metrics import FsyncTimer
    from broker.server import BrokerServer, ServerOptions, TlsFiles, serve_until_signalled
    from broker.tenancy import KeyRing, Quotas, TenantLimits
    from scheduler.settings import broker_options, load_settings, tenant_api_keys

    settings = load_settings(args.config)
    keys = tenant_api_keys(settings)
    ring = KeyRing.from_keys({name: key.get_secret_value() for name, key in keys.items()})
    quotas = Quotas(
        {
            name: TenantLimits(t.max_lite_topics, t.max_subscriptions)
            for name, t in settings.tenants.items()
        }
    )
    server_settings = settings.server
    listen = args.listen or server_settings.listen or "127.0.0.1:7400"
    data_dir = Path(args.data_dir or server_settings.data_dir or "tidegate-data")
    metrics_port = args.metrics_port
    if metrics_port is None:
        metrics_port = server_settings.metrics_port
    tls = None
    if server_settings.tls_cert_file is not None and server_settings.tls_key_file is not None:
        try:
            ca = server_settings.tls_client_ca_file
            tls = TlsFiles(
                server_settings.tls_cert_file.read_bytes(),
                server_settings.tls_key_file.read_bytes(),
                ca.read_bytes() if ca is not None else None,
            )
        except OSError as exc:
            raise UsageError(f"server.tls_*: cannot read {exc.filename}: {exc.strerror}") from None
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log = logging.getLogger("tidegate.serve")
    if not ring:
        log.warning("no tenant has an API key (api_key_env / api_key_file): every call is refused")
    broker_settings = BrokerSettings(**broker_options(settings))

    def announce(port: int) -> None:
        host = listen.rpartition(":")[0]
        tenants = ", ".join(ring.tenants) or "none"
        print(
            f"tidegate serve: listening on {host}:{port} "
            f"(data {data_dir}, fsync {broker_settings.fsync.value}, tenants: {tenants})",
            flush=True,
        )

    tracing = _setup_tracing(args, "tidegate-server")
    fsync = FsyncTimer()  # the commit log's fsync, timed for /metrics
    with Broker.open(data_dir, broker_settings, fsync=fsync) as store:
        options = ServerOptions(listen=listen, tls=tls)
        inference = _inference_extension(args.config, settings, ring, traced=tracing is not None)

        def make() -> BrokerServer:
            return BrokerServer(store, ring, quotas, options, extensions=[inference])

        try:
            asyncio.run(
                serve_until_signalled(make, announce, metrics_port=metrics_port, collectors=[fsync])
            )
        except OSError as exc:
            raise UsageError(f"--listen {listen}: {exc}") from None
        finally:
            if tracing is not None:
                tracing.shutdown()  # flush the last spans
    print("tidegate serve: stopped", flush=True)
    return 0


def _setup_tracing(args: argparse.Namespace, service: str) -> TracerProvider | None:
    from tidegate.tracing import TracingOptions, setup_tracing

    return setup_tracing(TracingOptions(args.tracing, args.otlp_endpoint, service))


def _inference_extension(
    config_path: str, settings: Settings, ring: KeyRing, *, traced: bool = False
) -> ExtensionFactory:
    """The scheduler's Inference API on the broker's server, with settings hot reload,
    metrics of every request's moves and, when ``traced``, their spans."""
    import asyncio
    import random
    import time

    from broker.hub import Hub
    from scheduler.clock import MonotonicClock
    from scheduler.metrics import SchedulerTelemetry
    from scheduler.policy import create_policy
    from scheduler.runtime import BrokerRequestStore, Runtime
    from scheduler.serving import InferenceExtension
    from scheduler.settings import (
        SettingsWatcher,
        to_runtime_options,
        to_scheduler_config,
        worker_tenants,
    )

    def make(hub: Hub) -> InferenceExtension:
        clock = MonotonicClock()
        config = to_scheduler_config(settings)
        tracer = None
        if traced:
            from opentelemetry import trace

            from scheduler.tracing import RequestTracer

            tracer = RequestTracer(
                trace.get_tracer("tidegate.scheduler"), time.time() - clock.now()
            )
        telemetry = SchedulerTelemetry(tracer=tracer)
        runtime = Runtime(
            create_policy("tidegate", config, random.Random()),
            BrokerRequestStore(hub),
            config,
            clock=clock,
            wall=time.time,
            options=to_runtime_options(settings),
            worker_tenants=worker_tenants(settings),
            observer=telemetry.observer,
        )

        def reload(new: Settings) -> None:
            # Weights, quotas, windows and roles change at once; queued requests
            # stay. API keys are read at start only (restart for a new key).
            runtime.update_config(to_scheduler_config(new), worker_tenants(new))

        watcher = SettingsWatcher(config_path, reload)

        async def watch() -> None:
            loop = asyncio.get_running_loop()
            watcher.install_sighup(loop)
            try:
                await watcher.run(clock, 1.0)
            finally:
                watcher.remove_sighup(loop)

        return InferenceExtension(runtime, ring, jobs=[watch], telemetry=telemetry)

    return make


def _cmd_simulate(args: argparse.Namespace) -> int:
    import json

    from scheduler.settings import load_settings, to_fleet_config, to_scheduler_config
    from scheduler.sim.events import write_events
    from scheduler.sim.simulate import SimOptions, simulate
    from scheduler.sim.summary import format_summary
    from scheduler.sim.traces import read_trace

    settings = load_settings(args.config)
    config = to_scheduler_config(settings)
    fleet = to_fleet_config(settings)
    trace = read_trace(args.trace)
    options = SimOptions(
        output_estimate_tokens=settings.simulation.output_estimate_tokens,
        deadline_s=settings.simulation.deadline_s,
    )
    result = simulate(
        trace, config, fleet, policy_name=args.policy, seed=args.seed, options=options
    )
    try:
        write_events(args.events, result.rows)
    except OSError as exc:
        raise UsageError(f"--events {args.events}: cannot write: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(result.summary, indent=2))
    else:
        print(format_summary(result.summary))
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    from scheduler.settings import load_settings, to_workload_spec
    from scheduler.sim.traces import convert_azure, read_azure, read_trace, write_trace
    from scheduler.sim.workload import generate

    if args.trace_command == "generate":
        rows = generate(to_workload_spec(load_settings(args.config)), args.seed)
    elif args.trace_command == "convert":
        priorities: dict[str, int] = {}
        for item in args.priority:
            name, _, value = item.partition("=")
            try:
                priorities[name] = int(value)
            except ValueError:
                raise UsageError(f"--priority {item!r}: expected NAME=INTEGER") from None
        sources = [(path, read_azure(path)) for path in args.input]
        try:
            rows = convert_azure(
                sources,
                [t.strip() for t in args.tenants.split(",") if t.strip()],
                assign=args.assign,
                seed=args.seed,
                slice_s=args.slice_s,
                start_s=args.start_s,
                duration_s=args.duration_s,
                speed=args.speed,
                priorities=priorities,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    else:  # validate
        rows = read_trace(args.trace)
        tenants = sorted({r.tenant for r in rows})
        span = rows[-1].arrival_s if rows else 0.0
        print(f"{args.trace}: {len(rows)} rows, {span:.3f} s, tenants: {', '.join(tenants)}")
        return 0
    try:
        count = write_trace(args.out, rows)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write: {exc.strerror or exc}") from None
    span = rows[-1].arrival_s if rows else 0.0
    print(f"wrote {count} rows ({span:.3f} s) to {args.out}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------- parser


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tidegate.bench_names import BENCH_NAMES

    p = sub.add_parser(
        "bench",
        help="run a benchmark and print its figures",
        description="Run one benchmark (CONTRACTS.md section 4) and print its figures. "
        "By default it starts a server on loopback with a temporary data directory, runs "
        "the workload over gRPC and stops the server; --server uses a running one instead "
        "(API key from $TIDEGATE_API_KEY or --api-key-file); --in-process measures the "
        "broker core in this process, without a server.",
    )
    p.add_argument("name", choices=BENCH_NAMES, help="which benchmark")
    p.add_argument("--count", type=_positive_int, help="messages or lite-topics")
    p.add_argument("--size", type=_positive_int, help="message body size in bytes")
    p.add_argument("--batch", type=_positive_int, help="messages per publish call")
    p.add_argument("--log-bytes", type=_positive_int, help="log size to recover (recovery)")
    p.add_argument("--queued", type=_positive_int, help="queued requests (schedule)")
    p.add_argument("--tenants", type=_positive_int, help="tenants (schedule)")
    p.add_argument("--subscriptions", type=_positive_int, help="subscriptions (fanin)")
    p.add_argument(
        "--rate",
        type=_positive_int,
        help="messages per second (fanin), Submit calls per second (submit), "
        "chunks per second per stream (relay)",
    )
    p.add_argument("--seconds", type=_seconds, help="how long to publish, submit or stream")
    p.add_argument("--streams", type=_positive_int, help="concurrent reply streams (relay)")
    p.add_argument("--workers", type=_positive_int, help="worker processes (relay)")
    p.add_argument(
        "--warmup-s",
        type=_seconds,
        help="relay: leave the streams' first seconds out of the steady-state figures",
    )
    p.add_argument("--clients", type=_positive_int, help="publishing threads (over gRPC)")
    p.add_argument(
        "--fsync", choices=("always", "interval"), default=None, help="the store's fsync policy"
    )
    p.add_argument("--data-dir", help="keep the data here instead of a temporary directory")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--in-process", action="store_true", help="the broker core in this process, no server"
    )
    where.add_argument("--server", help="HOST:PORT of a running server to measure instead")
    p.add_argument(
        "--api-key-file", help="with --server: the API key's file (default: $TIDEGATE_API_KEY)"
    )
    p.add_argument(
        "--server-pid", type=_positive_int, help="with --server: its pid, to read its RSS"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_cmd_bench)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port in [0, 65535]")
    return value


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the broker and the inference API over gRPC (health, reflection, /metrics)",
        description="Serve the broker over gRPC (CONTRACTS.md section 5) until SIGTERM, "
        "which drains calls under way and exits 0.",
    )
    p.add_argument("--config", required=True, help="YAML with tenants: (and broker:, server:)")
    p.add_argument("--data-dir", help="where the store lives (default: server.data_dir)")
    p.add_argument("--listen", help="HOST:PORT to serve gRPC on (default 127.0.0.1:7400)")
    p.add_argument("--metrics-port", type=_port, help="serve Prometheus /metrics on this port")
    _add_tracing_flags(p)
    p.set_defaults(handler=_cmd_serve)


def _add_tracing_flags(p: argparse.ArgumentParser) -> None:
    from tidegate.tracing import MODES

    p.add_argument(
        "--tracing",
        choices=MODES,
        default="off",
        help="OpenTelemetry spans of each request: otlp (to --otlp-endpoint), console "
        "(stderr) or off (default; costs nothing)",
    )
    p.add_argument(
        "--otlp-endpoint",
        help="with --tracing otlp: the collector (default $OTEL_EXPORTER_OTLP_ENDPOINT, "
        "else localhost:4317)",
    )


def _add_dashboards(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dashboards",
        help="render the Grafana dashboards' panels to PNG from a Prometheus",
        description="Work with the dashboards of dashboards/ without a Grafana: `render` "
        "runs every panel's queries over a time range against Prometheus' HTTP API "
        "(query_range) and plots each panel to DIR/<dashboard>/<NN>-<panel>.png with "
        "matplotlib (pip install 'tidegate[dashboards]').",
    )
    dsub = p.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)
    r = dsub.add_parser("render", help="every panel to PNG")
    r.add_argument("--prometheus", required=True, help="Prometheus' URL, e.g. http://host:9090")
    r.add_argument("--out", required=True, help="directory for the PNG files")
    r.add_argument(
        "--dashboards", help="directory of dashboard JSON (default: dashboards/json of the tree)"
    )
    r.add_argument(
        "--minutes", type=_seconds, default=15.0, help="the time range: the last N minutes"
    )
    r.add_argument("--step", type=_seconds, help="seconds between points (default: range/200)")
    p.set_defaults(handler=_cmd_dashboards)


def _cmd_dashboards(args: argparse.Namespace) -> int:
    from tidegate.render import render_dashboards

    written = render_dashboards(
        args.prometheus,
        Path(args.out),
        Path(args.dashboards) if args.dashboards else None,
        minutes=args.minutes,
        step_s=args.step,
    )
    for path in written:
        print(path)
    return 0


def _add_client_flags(p: argparse.ArgumentParser) -> None:
    """Flags pub and sub share: where the server is, how to reach it, the key."""
    p.add_argument("--server", required=True, help="HOST:PORT of a tidegate server")
    p.add_argument("--topic", required=True, help="the parent topic (e.g. chatbot)")
    p.add_argument("--json", action="store_true", help="print one JSON line per message")
    p.add_argument(
        "--api-key-file", help="read the API key from this file (default: $TIDEGATE_API_KEY)"
    )
    p.add_argument(
        "--retry-s",
        type=_seconds,
        default=10.0,
        help="keep retrying an unreachable server this long before giving up (default 10)",
    )
    p.add_argument("--tls", action="store_true", help="TLS with the system's root certificates")
    p.add_argument("--ca-file", help="TLS: the CA (PEM) the server's certificate chains to")
    p.add_argument("--cert-file", help="mutual TLS: this client's certificate (PEM)")
    p.add_argument("--key-file", help="mutual TLS: this client's private key (PEM)")
    p.add_argument("--server-name", help="TLS: the name to check on the server's certificate")


def _add_pub(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pub",
        help="publish messages (generated, or one per line of stdin)",
        description="Publish to TOPIC[/LITE] (CONTRACTS.md section 6): --count messages of "
        "--size bytes, or one message per line of stdin. With --json, one line per "
        'acknowledged message: {"topic", "lite_topic", "offset", "sha256"}. The API key '
        "comes from $TIDEGATE_API_KEY or --api-key-file and is never printed.",
    )
    _add_client_flags(p)
    p.add_argument("--lite", help="the lite-topic under --topic (default: the topic's own queue)")
    p.add_argument("--count", type=_positive_int, help="publish this many generated messages")
    p.add_argument("--size", type=_positive_int, help="body bytes of each generated message")
    p.set_defaults(handler=_cmd_pub)


def _add_sub(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sub",
        help="print messages of lite-topics as they arrive",
        description="Subscribe to lite-topics of TOPIC (CONTRACTS.md section 6) and print each "
        'message; with --json one line each: {"topic", "lite_topic", "offset", "sha256", '
        '"attempt"}, acknowledged after printing. Reconnects and resumes by itself.',
    )
    _add_client_flags(p)
    p.add_argument(
        "--lite", action="append", required=True, help="a lite-topic under --topic (repeatable)"
    )
    p.add_argument(
        "--from",
        dest="from_",
        metavar="earliest|latest|OFFSET",
        help="where to start (default: the group's position, else latest)",
    )
    p.add_argument("--group", help="consume as this consumer group (acks, redelivery)")
    p.add_argument(
        "--idle-exit", type=_seconds, help="exit 0 after this many seconds without a message"
    )
    p.set_defaults(handler=_cmd_sub)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the embedded demo (what `make demo` runs)",
        description="Start a server, simulated GPU workers (local Ray) and a load generator "
        "replaying a bursty three-tenant workload (configs/demo.yaml); show a live table of "
        "admissions, waits, shares and fairness; end with a summary. Ctrl-C stops it all.",
    )
    # Hidden: for tests and quick looks; `make demo` takes none of them.
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=_seconds, default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--headless", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-ray", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(handler=_cmd_demo)


def _add_workers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "workers",
        help="run GPU workers (Ray actors) that lease requests from a server",
        description="Start N workers that open Lease streams to the server and run what it "
        "grants on a backend: one Ray actor per GPU (num_gpus=1) on GPU clusters, CPU actors "
        "elsewhere, restarted by Ray when they die; a local Ray when --ray-address is not "
        "given. The fleet's key (a tenant with role: worker) comes from $TIDEGATE_API_KEY, "
        "--api-key-file, or the one worker tenant of --config. Runs until SIGTERM/SIGINT.",
    )
    p.add_argument("--server", required=True, help="HOST:PORT of the tidegate server")
    p.add_argument("--ray-address", help="a Ray cluster's address (default: start a local Ray)")
    p.add_argument("--replicas", type=_positive_int, help="workers to run (default 1)")
    p.add_argument(
        "--backend",
        choices=("simulated", "hf", "openai", "vllm"),
        default="simulated",
        help="inference backend (default simulated)",
    )
    p.add_argument(
        "--backend-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a backend option (repeatable; dotted keys nest, e.g. model.max_batch=32)",
    )
    p.add_argument(
        "--config",
        help="a config whose fleet: section gives the simulated model and the replicas",
    )
    p.add_argument(
        "--capacity", type=_positive_int, default=64, help="requests a worker runs at once"
    )
    p.add_argument("--prefix", default="worker", help="worker ids are PREFIX-0, PREFIX-1, ...")
    p.add_argument(
        "--gpus",
        choices=("auto", "yes", "no"),
        default="auto",
        help="one GPU per actor: auto (when the cluster has GPUs and the backend is not "
        "simulated), yes, no",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the workers as tasks of this process instead of Ray actors",
    )
    p.add_argument("--api-key-file", help="the fleet's API key file (default: $TIDEGATE_API_KEY)")
    scale = p.add_argument_group(
        "autoscaling (Ray only)",
        "With --max-replicas the fleet starts at --min-replicas and adds an actor when the "
        "server's queue stays above --scale-up-queued per replica for --scale-up-after-s, "
        "drains one (it takes nothing new, finishes its runs, then exits) when the queue stays "
        "at or below --scale-down-queued per replica for --scale-down-after-s, one change per "
        "--scale-cooldown-s, never more actors than Ray has free GPUs (or CPUs) for. The "
        "queue depth comes from the server's FleetStatus call with the fleet's key, or "
        "from its Prometheus endpoint with --metrics-url.",
    )
    scale.add_argument("--min-replicas", type=_positive_int, help="fewest workers (default 1)")
    scale.add_argument("--max-replicas", type=_positive_int, help="most workers; turns it on")
    scale.add_argument(
        "--metrics-url",
        help="read the queue depth from the server's metrics instead of its FleetStatus "
        "call: HOST:PORT of `tidegate serve --metrics-port`, or a URL",
    )
    scale.add_argument(
        "--scale-up-queued",
        type=_seconds,
        default=4.0,
        metavar="N",
        help="queued requests per replica above which the fleet grows (default 4)",
    )
    scale.add_argument(
        "--scale-down-queued",
        type=_seconds,
        default=0.0,
        metavar="N",
        help="queued requests per replica at or below which it shrinks (default 0)",
    )
    scale.add_argument(
        "--scale-up-after-s", type=_seconds, default=10.0, help="how long high (default 10)"
    )
    scale.add_argument(
        "--scale-down-after-s", type=_seconds, default=60.0, help="how long low (default 60)"
    )
    scale.add_argument(
        "--scale-cooldown-s",
        type=_seconds,
        default=30.0,
        help="the least time between two changes (default 30)",
    )
    scale.add_argument(
        "--scale-interval-s",
        type=_speed,
        default=2.0,
        help="seconds between two readings of the queue (default 2)",
    )
    scale.add_argument(
        "--drain-timeout-s",
        type=_seconds,
        default=600.0,
        help="how long a drained worker may take to finish its runs (default 600)",
    )
    _add_tracing_flags(p)
    p.set_defaults(handler=_cmd_workers)


def _add_loadgen(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "loadgen",
        help="replay a trace against a running server and write the events CSV",
        description="Replay a trace CSV (CONTRACTS.md section 3) against a running server in "
        "real time (arrivals divided by --speed) and write the same events file as "
        "`tidegate simulate`, measured on the wall clock (times on the trace's scale). Each "
        "tenant's API key comes from --config (the api_key_env/api_key_file the server reads) "
        "or from $TIDEGATE_API_KEY_<TENANT> (upper case, '-' as '_'); a one-tenant trace may "
        "use $TIDEGATE_API_KEY or --api-key-file.",
    )
    p.add_argument("--server", required=True, help="HOST:PORT of the tidegate server")
    p.add_argument("--trace", required=True, help="trace CSV (arrival_s,tenant,priority,...)")
    p.add_argument("--events", required=True, help="where to write the events CSV")
    p.add_argument("--speed", type=_speed, default=1.0, help="replay X times faster (default 1)")
    p.add_argument("--config", help="the server's config: tenants' keys are read as it reads them")
    p.add_argument("--api-key-file", help="a one-tenant trace's key file")
    p.add_argument(
        "--deadline-s", type=_seconds, default=0.0, help="each request's deadline (0: none)"
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(handler=_cmd_loadgen)


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


_POLICIES = ("tidegate", "fifo", "round-robin", "strict-priority")  # CONTRACTS.md section 3


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def _add_simulate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="replay a trace through a scheduling policy on a simulated fleet",
        description="Run the scheduler's policy on a virtual clock against the fleet model "
        "of the config, write one events row per request (CONTRACTS.md section 3).",
    )
    p.add_argument("--config", required=True, help="YAML with tenants:, fleet: (and scheduler:)")
    p.add_argument("--trace", required=True, help="trace CSV (arrival_s,tenant,priority,...)")
    p.add_argument("--events", required=True, help="where to write the events CSV")
    p.add_argument("--policy", choices=_POLICIES, default="tidegate", help="default: tidegate")
    p.add_argument("--seed", type=int, default=0, help="seed of the policy's tie-breaks")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(handler=_cmd_simulate)

    t = sub.add_parser(
        "trace",
        help="make, convert or check trace CSVs for `simulate` and `loadgen`",
        description="Trace tools: generate a bursty multi-tenant workload from a config's "
        "workload: section, convert the public Azure LLM traces, or validate a trace.",
    )
    tsub = t.add_subparsers(dest="trace_command", metavar="ACTION", required=True)
    g = tsub.add_parser("generate", help="seeded workload from the config's workload: section")
    g.add_argument("--config", required=True, help="YAML with a workload: section")
    g.add_argument("--out", required=True, help="trace CSV to write")
    g.add_argument("--seed", type=int, default=0)
    c = tsub.add_parser("convert", help="Azure LLM inference trace 2023 -> trace CSV")
    c.add_argument("--input", action="append", required=True, help="Azure CSV (repeat to mix)")
    c.add_argument("--out", required=True, help="trace CSV to write")
    c.add_argument("--tenants", required=True, help="comma-separated tenant names")
    c.add_argument(
        "--assign",
        choices=("hash", "slice", "file"),
        default="hash",
        help="hash: seeded hash per row; slice: tenants take turns by time slice; "
        "file: one tenant per --input",
    )
    c.add_argument("--slice-s", type=_seconds, default=60.0, help="slice length (assign=slice)")
    c.add_argument("--seed", type=int, default=0, help="seed of the hash (assign=hash)")
    c.add_argument("--start-s", type=_seconds, default=0.0, help="skip the first seconds")
    c.add_argument("--duration-s", type=_seconds, default=None, help="keep this many seconds")
    c.add_argument("--speed", type=float, default=1.0, help="divide arrival times by this")
    c.add_argument(
        "--priority",
        action="append",
        default=[],
        metavar="NAME=P",
        help="priority of a tenant's rows (default 0)",
    )
    v = tsub.add_parser("validate", help="check a trace CSV and print what it holds")
    v.add_argument("trace")
    t.set_defaults(handler=_cmd_trace)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidegate",
        description="Durable request queue and fair GPU admission controller for LLM serving.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_bench,
    _add_dashboards,
    _add_demo,
    _add_loadgen,
    _add_pub,
    _add_serve,
    _add_simulate,
    _add_sub,
    _add_workers,
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`); that is not an error.
        return 0
    except Exception as exc:
        if isinstance(exc, (UsageError, *_user_error_types())):
            print(f"tidegate {args.command}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if os.environ.get("TIDEGATE_DEBUG"):
            raise
        # A bug of ours: say so in one line rather than showing a traceback.
        print(
            f"tidegate {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(set TIDEGATE_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
