"""Security: the admin API's door, secrets kept out of output, request ids that cannot inject
into logs, and known vulnerabilities in the dependency set.

Tampered model artifacts are refused by the registry: its own tests cover that (see
docs/reliability.md for their ids).
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import Response

from buttress.demo.service import EXAMPLE
from buttress.http import admin
from buttress.http.request_ids import RequestIds
from tests.servers import DEMO, RunningServer, running_server

TOKEN = "s3cret-reliability-token-9b7e"
ORDER = orjson.dumps(EXAMPLE)
ADMIN_ROUTES = [
    ("GET", "/admin/status"),
    ("GET", "/admin/guardrails"),
    ("POST", "/admin/guardrails/discount_value_per_minute"),
    ("POST", "/admin/cache/invalidate"),
    ("GET", "/admin/models"),
    ("POST", "/admin/models/discount_model/promote"),
    ("POST", "/admin/models/discount_model/rollback"),
]
# (no trailing whitespace: HTTP clients may not send it and servers strip it)
WRONG = [None, "", "Bearer", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x",
         f"Bearer  {TOKEN}", f"Bearer {TOKEN}\t.", TOKEN, f"bearer {TOKEN}", f"Basic {TOKEN}",
         f"Token {TOKEN}", f"Bearer {TOKEN.upper()}"]
ID_SHAPE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {"BUTTRESS_ADMIN_TOKEN": TOKEN, "BUTTRESS_LOG_LEVEL": "debug",
           "BUTTRESS_MAX_CONCURRENCY": "off"}
    with running_server(DEMO, tmp_path_factory.mktemp("guarded"), env=env) as server:
        yield server


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """No admin token configured."""
    with running_server(DEMO, tmp_path_factory.mktemp("no-token")) as server:
        yield server


# --- the admin door ---------------------------------------------------------------------------

async def test_the_token_is_compared_with_hmac_compare_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every admin route goes through ``guarded``, whose check is ``hmac.compare_digest``
    (constant time): spied on here, for a right and a wrong token."""
    compared: list[tuple[bytes, bytes]] = []
    real = admin.hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(admin.hmac, "compare_digest", spy)

    async def endpoint(request: Request) -> Response:
        return Response("ok")

    runtime: Any = SimpleNamespace(settings=SimpleNamespace(admin_token=TOKEN))
    check = admin.guarded(runtime, endpoint)

    def request(authorization: str) -> Request:
        return Request({"type": "http", "method": "GET", "path": "/admin/status",
                        "headers": [(b"authorization", authorization.encode())]})

    assert (await check(request(f"Bearer {TOKEN}"))).status_code == 200
    assert (await check(request(f"Bearer {TOKEN[:-1]}x"))).status_code == 401
    assert compared == [(f"Bearer {TOKEN}".encode(), f"Bearer {TOKEN}".encode()),
                        (f"Bearer {TOKEN[:-1]}x".encode(), f"Bearer {TOKEN}".encode())]


@pytest.mark.slow
def test_admin_routes_refuse_a_missing_or_wrong_token(guarded_server: RunningServer) -> None:
    with httpx.Client(base_url=guarded_server.base_url, timeout=10) as client:
        for method, path in ADMIN_ROUTES:
            for authorization in WRONG:
                headers = {} if authorization is None else {"Authorization": authorization}
                response = client.request(method, path, headers=headers, content=b"{}")
                assert response.status_code == 401, (method, path, authorization)
                assert response.json()["error"]["message"] == "missing or wrong bearer token"
            right = client.request(method, path, content=b"{}",
                                   headers={"Authorization": f"Bearer {TOKEN}"})
            assert right.status_code != 401, (method, path)


@pytest.mark.slow
def test_admin_routes_are_absent_without_a_configured_token(open_server: RunningServer) -> None:
    with httpx.Client(base_url=open_server.base_url, timeout=10) as client:
        for method, path in ADMIN_ROUTES:
            for authorization in (None, "", "Bearer", "Bearer None", "Bearer null"):
                headers = {} if authorization is None else {"Authorization": authorization}
                response = client.request(method, path, headers=headers, content=b"{}")
                assert response.status_code == 404, (method, path, authorization)


SMUGGLED_PATHS = [
    "/predict/admin/status", "/predict/../admin/status", "/predict/..%2Fadmin/status",
    "/predict%2F..%2Fadmin%2Fstatus", "/predict?/admin/status", "/predict#/admin/status",
    "/v2/admin/status", "/v2/../admin/status", "/v2/models/../../admin/status",
    "/v2/models/discount_model/../../../admin/status", "/v2/models/%2E%2E/%2E%2E/admin/status",
    "/v2/models/discount_model/infer/../../../../admin/status", "//admin/status",
    "/predict;/admin/status", "/v2/models/admin/status",
]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_admin_is_never_reached_through_predict_or_v2_paths(
    guarded_server: RunningServer, method: str
) -> None:
    """Raw request targets (http.client normalizes nothing), with the right token: none of
    them is served by an admin route."""
    connection = http.client.HTTPConnection("127.0.0.1", guarded_server.port, timeout=10)
    try:
        for path in SMUGGLED_PATHS:
            connection.request(method, path, body=ORDER if method == "POST" else None,
                               headers={"Authorization": f"Bearer {TOKEN}"})
            response = connection.getresponse()
            body = response.read()
            assert b'"breakers"' not in body, (path, body[:200])
            assert b'"guardrails"' not in body, (path, body[:200])
            if path.startswith("/predict") and method == "POST" and response.status == 200:
                assert path.split("?")[0].split("#")[0] == "/predict"  # the query is no path
            else:
                assert response.status in (400, 404, 405, 422), (path, response.status)
    finally:
        connection.close()


# --- the token in output ----------------------------------------------------------------------

@pytest.mark.slow
def test_the_token_appears_in_no_event_log_or_error_body(tmp_path: Path) -> None:
    env = {"BUTTRESS_ADMIN_TOKEN": TOKEN, "BUTTRESS_LOG_LEVEL": "debug",
           "BUTTRESS_MAX_CONCURRENCY": "off"}
    bodies: list[bytes] = []
    with running_server(DEMO, tmp_path / "server", env=env) as server, httpx.Client(
            base_url=server.base_url, timeout=10) as client:
        carrying = {"Authorization": f"Bearer {TOKEN}"}
        wrong = {"Authorization": f"Bearer {TOKEN}-wrong"}
        for headers in (carrying, wrong, {"Authorization": TOKEN}):
            for content in (ORDER, b"{", b"[" * 100, ORDER.replace(b"o-1", b"fail-model-1"),
                            orjson.dumps({**EXAMPLE, "order_id": 7})):
                bodies.append(client.post("/predict", content=content, headers=headers).content)
            bodies.append(client.post("/predict", content=b" " * 2_000_000,
                                      headers=headers).content)
            for method, path in ADMIN_ROUTES:
                bodies.append(client.request(method, path, content=b"{bad", headers=headers)
                              .content)
            bodies.append(client.post("/v2/models/discount_model/infer", content=b"{",
                                      headers=headers).content)
            bodies.append(client.get("/v2/models/nope", headers=headers).content)
        bodies.append(client.get("/metrics").content)
        bodies.append(client.get("/openapi.json").content)
        server.stop()
        written = [server.output().encode()] + [
            path.read_bytes() for path in server.workdir.rglob("*") if path.is_file()
            and path.suffix in (".jsonl", ".log", ".txt", ".db")]
    assert server.events(), "the server wrote no event: nothing was checked"
    for text in bodies + written:
        assert TOKEN.encode() not in text


# --- request ids ------------------------------------------------------------------------------

@settings(max_examples=2_000, deadline=None, database=None)
@given(given_id=st.binary(max_size=200) | st.text(max_size=140).map(str.encode)
       | st.sampled_from([b"abc\n", b"abc\r\n", b"a\x00b", b"\x1b[31mred", b"ok\x85",
                          b"x" * 128 + b"\n", "id\u2028".encode()]))
def test_a_picked_request_id_is_always_well_formed(given_id: bytes) -> None:
    picked = RequestIds().pick(given_id)
    assert ID_SHAPE.fullmatch(picked), repr(picked)
    assert picked == given_id.decode("latin-1") or not ID_SHAPE.fullmatch(
        given_id.decode("latin-1"))


@pytest.mark.slow
def test_client_request_ids_cannot_inject_into_events_or_logs(tmp_path: Path) -> None:
    """Ids a client may send over HTTP (control characters cannot even reach the server: the
    HTTP parser refuses them) are kept only when well-formed; every event stays one line."""
    hostile = ["x" * 129, "x" * 10_000, "a\tb", "id with spaces", "ünïcode", "a%0Ab",
               "a\\nb", '"}{"injected": true', "<script>", "../../etc/passwd", "a;b=c"]
    with running_server(DEMO, tmp_path / "server", env={"BUTTRESS_LOG_LEVEL": "debug"}) as \
            server, httpx.Client(base_url=server.base_url, timeout=10) as client:
        answered = []
        for request_id in hostile:
            response = client.post("/predict", content=ORDER,
                                   headers=[(b"X-Request-Id", request_id.encode())])
            answered.append(response.headers["x-request-id"])
            assert ID_SHAPE.fullmatch(response.headers["x-request-id"])
            assert response.headers["x-request-id"] != request_id
        for raw in (b"a\rb", b"a\nX-Injected: 1", b"a\x00b", b"a\x7fb"):
            raw_conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            try:
                raw_conn.putrequest("POST", "/predict")
                raw_conn.putheader("Content-Length", str(len(ORDER)))
                raw_conn._output(b"X-Request-Id: " + raw)  # type: ignore[attr-defined]
                try:
                    raw_conn.endheaders(ORDER)
                    response = raw_conn.getresponse()
                    assert response.status == 400 or response.getheader("X-Injected") is None
                    rid = response.getheader("x-request-id")
                    assert rid is None or ID_SHAPE.fullmatch(rid)
                except (ConnectionError, http.client.RemoteDisconnected):
                    pass  # refused by the HTTP parser, which is also fine
            finally:
                raw_conn.close()
        server.stop()
        events = server.events()
        log = server.output()
    ids = {event["request_id"] for event in events}
    assert set(answered) <= ids
    assert all(ID_SHAPE.fullmatch(rid) for rid in ids)
    for request_id in hostile:
        assert request_id not in log
    for path in (tmp_path / "server" / "events").glob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            assert isinstance(json.loads(line), dict)  # one event, one line


# --- known vulnerabilities --------------------------------------------------------------------

KNOWN_EXCEPTIONS: dict[str, str] = {
    # "PYSEC-YYYY-NNN": "why it does not apply to buttress, and until when",
}


@pytest.mark.slow
def test_the_dependency_set_has_no_known_vulnerability(tmp_path: Path) -> None:
    """pip-audit over the environment the tests run in (the project and its dev extra); it
    asks the PyPI/OSV vulnerability database over the network, so offline it skips."""
    if shutil.which("pip-audit") is None and not _module_available("pip_audit"):
        pytest.fail("pip-audit is not installed (it is in the dev extra)")
    report = tmp_path / "audit.json"
    ignored = [arg for vuln in KNOWN_EXCEPTIONS for arg in ("--ignore-vuln", vuln)]
    done = subprocess.run(
        [sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "--format", "json",
         "--output", str(report), *ignored],
        capture_output=True, text=True, timeout=300)
    if not report.exists() or not report.read_text().strip():
        if any(word in done.stderr for word in ("ConnectionError", "Max retries",
                                                "NameResolution", "timed out", "Network")):
            pytest.skip(f"pip-audit could not reach the vulnerability database: "
                        f"{done.stderr.strip()[-300:]}")
        pytest.fail(f"pip-audit failed ({done.returncode}): {done.stderr[-2000:]}")
    audited = json.loads(report.read_text())["dependencies"]
    vulnerable = {f"{d['name']} {d['version']}": [v["id"] for v in d.get("vulns", [])]
                  for d in audited if d.get("vulns")}
    print(f"pip-audit: {len(audited)} distributions audited, "
          f"{len(KNOWN_EXCEPTIONS)} named exceptions")
    assert not vulnerable, f"known vulnerabilities: {vulnerable}"
    assert len(audited) > 20


def _module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
