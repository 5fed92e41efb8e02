"""Load a service from a ``TARGET`` and run it under uvicorn.

``TARGET`` is ``path/to/file.py:attr`` or ``package.module:attr``; ``attr`` is a
:class:`~buttress.service.Service`. With ``--workers N`` uvicorn starts N processes that each
build the app from the environment (:func:`app_from_environment`), and Prometheus runs in
multiprocess mode so one scrape sees all of them.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from buttress.cli.targets import TargetError, load_object
from buttress.config import Settings, load_settings
from buttress.guardrails import warn_if_per_process
from buttress.observability.metrics import MULTIPROCESS_ENV, prepare_multiprocess_dir
from buttress.service import Service

TARGET_ENV = "BUTTRESS_SERVE_TARGET"
CONFIG_ENV = "BUTTRESS_SERVE_CONFIG"


def load_target(target: str) -> Service:
    """The :class:`Service` that ``target`` names."""
    service = load_object(target)
    if not isinstance(service, Service):
        found = (f"the class {service.__name__}" if isinstance(service, type)
                 else f"a {type(service).__name__}")
        raise TargetError(f"bad target {target!r}: it is {found}, not a buttress Service")
    try:
        service.check()
    except ValueError as error:
        raise TargetError(f"bad target {target!r}: {error}") from None
    return service


def ensure_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise TargetError(f"port {port} on {host} is already in use") from None
            raise TargetError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def wait_until_ready(base_url: str, timeout: float = 30.0,
                     alive: Callable[[], bool] | None = None) -> None:
    """Poll ``/readyz`` until it answers 200; raise ``TimeoutError`` after ``timeout``, or
    ``RuntimeError`` as soon as ``alive()`` says the server process has exited."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"the server at {base_url} exited before it was ready")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{base_url} was not ready within {timeout:.0f}s")


def configure_logging(settings: Settings) -> None:
    """One readable line per log record for buttress's own loggers (uvicorn keeps its own)."""
    import logging

    logger = logging.getLogger("buttress")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(settings.log_level.upper())


def build_app(service: Service, settings: Settings) -> Any:
    from buttress.http import create_app

    configure_logging(settings)
    return create_app(service.build(settings))


def app_from_environment() -> Any:
    """uvicorn's factory in each worker process."""
    settings = load_settings(os.environ.get(CONFIG_ENV) or None)
    service = load_target(os.environ[TARGET_ENV])
    return build_app(service, settings)


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What both ways of running uvicorn share.

    http: uvicorn's httptools protocol with a read deadline and a connection cap
    (:mod:`buttress.http.protocol`). proxy_headers=False: buttress never reads the client's
    address (events carry the request id), and uvicorn's proxy-headers middleware would cost
    every request ~1 µs.
    """
    from buttress.http.protocol import BoundedHttpProtocol

    return {"host": settings.host, "port": settings.port, "log_level": settings.log_level,
            "access_log": False, "loop": "uvloop", "http": BoundedHttpProtocol,
            "lifespan": "on", "server_header": False, "proxy_headers": False,
            "timeout_graceful_shutdown": int(settings.drain_timeout)}


def _uvicorn_config(app: Any, settings: Settings, **extra: Any) -> Any:
    import uvicorn

    return uvicorn.Config(app, **_uvicorn_options(settings), **extra)


def serve(target: str, settings: Settings, config_file: str | None = None) -> None:
    """Run until SIGTERM/SIGINT: then stop accepting, finish in-flight requests, exit 0."""
    service = load_target(target)
    ensure_port_free(settings.host, settings.port)
    if service.guardrails:
        warning = warn_if_per_process(settings.guardrail_store_url, settings.workers)
        if warning:
            print(f"buttress: warning: {warning}", file=sys.stderr)
    if settings.workers == 1:
        app = build_app(service, settings)
        server = _DrainingServer(_uvicorn_config(app, settings), app)
        server.run()
        return
    # Workers re-create the app from the environment; settings travel as BUTTRESS_* variables.
    prepare_multiprocess_dir(settings.metrics_dir)
    os.environ[MULTIPROCESS_ENV] = str(Path(settings.metrics_dir).resolve())
    os.environ[TARGET_ENV] = target
    if config_file:
        os.environ[CONFIG_ENV] = str(Path(config_file).resolve())
    for key, value in settings.model_dump(exclude_defaults=True).items():
        if value is not None:
            # nested settings ([insights], [[alerts]]) travel as JSON, as pydantic-settings
            # reads them from the environment
            text = json.dumps(value) if isinstance(value, dict | list) else str(value)
            os.environ[f"BUTTRESS_{key.upper()}"] = text
    import uvicorn

    uvicorn.run("buttress.cli.server:app_from_environment", factory=True,
                workers=settings.workers, **_uvicorn_options(settings))


class _DrainingServer:
    """uvicorn's server, which also flips ``/readyz`` to 503 as soon as a signal arrives."""

    def __init__(self, config: Any, app: Any) -> None:
        import uvicorn

        runtime = app.runtime

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                runtime.draining = True
                super().handle_exit(sig, frame)

        self._server = Server(config)

    def run(self) -> None:
        # uvicorn re-raises the signal that stopped it once it has drained, so a clean
        # shutdown would still end as "killed by SIGTERM" (exit -15). Ignore the re-raise:
        # uvicorn installs its own handlers for the whole run, so only that one is affected.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        self._server.run()
