"""The ``buttress`` command line. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from buttress.cli.alerts import app as alerts_app
from buttress.cli.alerts import dashboards as dashboards_app
from buttress.cli.features import app as features_app
from buttress.cli.insights import insights
from buttress.cli.models import app as models_app
from buttress.config import ConfigError, Settings, load_settings

app = typer.Typer(
    name="buttress", no_args_is_help=True, add_completion=False,
    help="Serve ML models over HTTP with resiliency built in.")

HostOption = Annotated[str | None, typer.Option("--host", help="Interface to bind.")]
PortOption = Annotated[int | None, typer.Option("--port", help="Port to listen on.")]
ConfigOption = Annotated[str | None, typer.Option("--config", help="Path to buttress.toml.")]


app.add_typer(features_app, name="features", help="Load and inspect feature stores.")
app.add_typer(models_app, name="models", help="Register, list, promote and roll back models.")
app.command("insights")(insights)
app.add_typer(alerts_app, name="alerts", help="Alert rules: list, check, export to Prometheus.")
app.add_typer(dashboards_app, name="dashboards", help="Grafana dashboards of the metrics.")


@app.callback()
def _root() -> None:
    """buttress: resilient real-time ML prediction services."""


def _fail(message: str) -> None:
    typer.echo(f"buttress: error: {message}", err=True)
    raise typer.Exit(code=2)


@app.command()
def serve(
    target: Annotated[str, typer.Argument(help="path/to/file.py:service or module:service")],
    host: HostOption = None,
    port: PortOption = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Worker processes.")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve a prediction service over HTTP."""
    from buttress.cli.server import serve as run_server
    from buttress.cli.targets import TargetError

    try:
        settings = load_settings(config, host=host, port=port, workers=workers)
        run_server(target, settings, config)
    except (ConfigError, TargetError) as error:
        _fail(str(error))


@app.command()
def consume(
    target: Annotated[str, typer.Argument(help="path/to/file.py:service or module:service")],
    source: Annotated[str, typer.Option(
        "--source", help="Stream to read, e.g. redis-stream://127.0.0.1:6379/0/orders?group=g "
        "or nats://127.0.0.1:4222/ORDERS/orders.new?durable=g.")],
    sink: Annotated[str, typer.Option("--sink", help="Stream to write the answers to.")],
    dead_letter: Annotated[str | None, typer.Option(
        "--dead-letter", help="Stream for messages the input contract refuses; default: the "
        "sink's name + -dead-letters.")] = None,
    max_in_flight: Annotated[int, typer.Option(
        "--max-in-flight", min=1, help="Messages answered at once.")] = 64,
    host: HostOption = None,
    port: Annotated[int | None, typer.Option(
        "--port", help="Port for /healthz, /readyz and /metrics (0: none).")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve a prediction service over a message stream (Redis Streams, NATS JetStream)."""
    from buttress.cli.consume import consume as run_consumer
    from buttress.cli.targets import TargetError
    from buttress.streams.urls import StreamURLError

    try:
        settings = load_settings(config, host=host, port=port)
        run_consumer(target, settings, source=source, sink=sink, dead_letters=dead_letter,
                     max_in_flight=max_in_flight)
    except (ConfigError, TargetError, StreamURLError) as error:
        _fail(str(error))


DEMO_TARGET = "buttress.demo.service:svc"
DEMO_FEATURES_URL = "sqlite:///var/demo-features.db"


@app.command()
def demo(
    host: HostOption = None,
    port: PortOption = None,
    traffic: Annotated[bool, typer.Option(
        "--traffic", help="Also drive the demo with realistic synthetic traffic.")] = False,
    redis: Annotated[str | None, typer.Option(
        "--redis", help="Put every backend on this Redis, e.g. redis://127.0.0.1:6379/0.")] = None,
    stream: Annotated[bool, typer.Option(
        "--stream", help="Produce orders to a Redis Stream (--redis, default the local one) "
        "and consume them, printing the lag.")] = False,
    rate: Annotated[float, typer.Option("--rate", help="Orders per second for --stream.")] = 200,
    config: ConfigOption = None,
) -> None:
    """Run the discount demo on embedded defaults (no server to install)."""
    from buttress.cli.server import serve as run_server
    from buttress.cli.targets import TargetError
    from buttress.demo import missing_requirements, requirements_message

    missing = missing_requirements()
    if missing:
        _fail(requirements_message(missing))
    try:
        settings = load_settings(config, host=host, port=port, backend=redis)
        if settings.features_url is None and settings.backend == "memory://":
            # the embedded default: features persist in a local SQLite file
            settings = settings.model_copy(update={"features_url": DEMO_FEATURES_URL})
        typer.echo(f"buttress demo: serving {DEMO_TARGET} on http://{settings.host}:"
                   f"{settings.port} (features {settings.feature_store_url}, caches and "
                   f"guardrails {settings.guardrail_store_url})", err=True)
        if stream:
            from buttress.streams.demo import run_stream_demo

            run_stream_demo(DEMO_TARGET, rate=rate, redis_url=redis or "redis://127.0.0.1:6379/0",
                            port=settings.port, env={
                                "BUTTRESS_LOG_LEVEL": "warning",
                                "BUTTRESS_BACKEND": settings.backend,
                                "BUTTRESS_FEATURES_URL": settings.feature_store_url})
        elif traffic:
            _serve_with_traffic(DEMO_TARGET, settings)
        else:
            run_server(DEMO_TARGET, settings, config)
    except (ConfigError, TargetError) as error:
        _fail(str(error))


def _serve_with_traffic(target: str, settings: Settings) -> None:
    """The server in a child process, the traffic and its live display in this one."""
    import subprocess

    from buttress.cli.server import ensure_port_free, wait_until_ready
    from buttress.demo.traffic.display import run_traffic

    ensure_port_free(settings.host, settings.port)
    env = {**os.environ, "BUTTRESS_LOG_LEVEL": "warning", "BUTTRESS_BACKEND": settings.backend,
           "BUTTRESS_FEATURES_URL": settings.feature_store_url}
    server = subprocess.Popen(
        [sys.executable, "-m", "buttress.cli", "serve", target, "--host", settings.host,
         "--port", str(settings.port)], env=env)
    try:
        base_url = f"http://{settings.host}:{settings.port}"
        wait_until_ready(base_url, timeout=60)
        run_traffic(base_url, duration=None, rate=200.0, concurrency=16, seed=7, display=True)
    except KeyboardInterrupt:
        pass
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


