"""Hostile input against a real demo server (``buttress serve buttress.demo.service:svc``).

- schemathesis generates requests from the server's own ``/openapi.json`` (positive and
  negative cases, every default check) — at least 2,000 cases in all;
- the admin routes, which the OpenAPI document leaves out, get hypothesis-generated names
  and bodies, with no token, a wrong one and the right one;
- huge, deep and wide bodies, invalid UTF-8, wrong and missing content types;
- slow clients: a body trickled byte by byte holds no worker, and is cut by ``read_timeout``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import negative_data_rejection
from schemathesis.core.parameters import ParameterLocation

from buttress.demo.service import EXAMPLE
from tests.servers import DEMO, RunningServer, running_server

pytestmark = pytest.mark.slow

TOKEN = "reliability-admin-token-5f1c"
ORDER = orjson.dumps(EXAMPLE)
MAX_BODY = 1_048_576  # the default max_body_bytes
SCHEMATHESIS_CASES = {"positive": 1_200, "negative": 800}
"""Examples asked of hypothesis per generation mode for ``POST /predict``; the GET routes
take no input, so each is one case."""
ADMIN_CASES = 300


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {"BUTTRESS_ADMIN_TOKEN": TOKEN,
           # generated cases come in one after another from one client: no overload shedding
           "BUTTRESS_MAX_CONCURRENCY": "off"}
    with running_server(DEMO, tmp_path_factory.mktemp("hostile"), env=env) as server:
        yield server


@pytest.fixture(scope="module")
def client(demo: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo.base_url, timeout=30) as http:
        yield http


def lenient_acceptance(case: schemathesis.Case, response: Any) -> str | None:
    """Why a schema-violating request was rightly answered 2xx, or None when it was not.

    The OpenAPI document states the strict contract; the server is lenient on purpose in two
    documented ways (README "A wrong type", deadline.py): a wrong-typed field that has a
    default takes it and the violation is recorded (``X-Fallback: input_contract``), and an
    optional header sent empty counts as absent.
    """
    data = getattr(case.meta.phase, "data", None) if case.meta else None
    location = getattr(data, "parameter_location", None)
    parameter = getattr(data, "parameter", None)
    if location is ParameterLocation.HEADER and parameter is not None:
        sent = {k.lower(): v for k, v in (case.headers or {}).items()}.get(parameter.lower())
        return "empty optional header" if sent in (None, "") else None
    fallback = response.headers.get("x-fallback") or []  # schemathesis: a list per header
    if "input_contract" in ",".join([fallback] if isinstance(fallback, str) else fallback):
        return "wrong-typed field took its default"
    return None


def run_cases(operation: Any, generation: schemathesis.GenerationMode, examples: int,
              session: requests.Session, counts: Counter[str], lenient: Counter[str]) -> None:
    label = f"{operation.label} {generation.value}"
    negative = not generation.is_positive

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=generation))
    def check(case: schemathesis.Case) -> None:
        counts[label] += 1
        if not negative:
            case.call_and_validate(session=session)  # every default check
            return
        response = case.call(session=session)
        # every default check, with negative_data_rejection replaced by the same rule plus
        # the server's documented leniency (lenient_acceptance)
        case.validate_response(response, excluded_checks=[negative_data_rejection])
        if 200 <= response.status_code < 300:
            reason = lenient_acceptance(case, response)
            assert reason is not None, (
                f"schema-violating request accepted: {case.meta}\n{response.headers}\n"
                f"{case.as_curl_command()}\n{response.status_code} {response.text}")
            lenient[reason] += 1
        else:
            assert response.status_code in (400, 413, 422), response.text

    check()


def test_schemathesis_cases_from_the_openapi_document(demo: RunningServer) -> None:
    schema = schemathesis.openapi.from_url(f"{demo.base_url}/openapi.json")
    counts: Counter[str] = Counter()
    lenient: Counter[str] = Counter()
    started = time.perf_counter()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            takes_input = bool(operation.body or list(operation.iter_parameters()))
            for mode, examples in SCHEMATHESIS_CASES.items():
                generation = schemathesis.GenerationMode(mode)
                if not generation.is_positive and not takes_input:
                    continue  # nothing to make invalid
                run_cases(operation, generation, examples, session, counts, lenient)
    elapsed = time.perf_counter() - started
    total = sum(counts.values())
    print(f"schemathesis: {total} cases in {elapsed:.1f}s: {dict(counts)}; "
          f"negative cases answered 200 by design: {dict(lenient)}")
    assert total >= 2_000


# --- the admin routes, which /openapi.json does not describe ----------------------------------

ADMIN_ROUTES = [
    ("GET", "/admin/status"),
    ("GET", "/admin/guardrails"),
    ("POST", "/admin/guardrails/{name}"),
    ("POST", "/admin/cache/invalidate"),
    ("GET", "/admin/models"),
    ("POST", "/admin/models/{name}/promote"),
    ("POST", "/admin/models/{name}/rollback"),
]
WRONG_TOKENS = [None, "", "Bearer", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", TOKEN,
                f"bearer {TOKEN}", f"Basic {TOKEN}", f"Bearer  {TOKEN}"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
admin_bodies = (
    json_values.map(lambda value: json.dumps(value).encode())
    | st.fixed_dictionaries({"limit": json_values}).map(lambda value: json.dumps(value).encode())
    | st.fixed_dictionaries({"stage": json_values}).map(lambda value: json.dumps(value).encode())
    | st.fixed_dictionaries({"version": json_values, "reason": json_values}).map(
        lambda value: json.dumps(value).encode())
    | st.binary(max_size=200)
)
names = st.sampled_from(["discount_value_per_minute", "discounted_orders_per_user_per_hour",
                         "discount_model", "user_features"]) | st.text(min_size=1, max_size=30)


def test_admin_routes_with_generated_bodies(client: httpx.Client) -> None:
    seen: Counter[tuple[str, int]] = Counter()

    @settings(max_examples=ADMIN_CASES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(route=st.sampled_from(ADMIN_ROUTES), name=names, body=admin_bodies,
           authorization=st.sampled_from(WRONG_TOKENS) | st.just(f"Bearer {TOKEN}"))
    def check(route: tuple[str, str], name: str, body: bytes, authorization: str | None) -> None:
        method, template = route
        path = template.replace("{name}", quote(name, safe=""))
        headers = {"Authorization": authorization} if authorization is not None else {}
        response = client.request(method, path, content=body if method == "POST" else None,
                                  headers=headers)
        seen[(template, response.status_code)] += 1
        assert response.status_code < 500, (method, path, body, response.text)
        if "/" in name and "{name}" in template:  # the decoded path matches no route at all
            assert response.status_code == 404, (method, path)
            return
        if authorization != f"Bearer {TOKEN}":
            assert response.status_code == 401, (method, path, authorization)
        else:
            assert response.status_code in (200, 400, 404, 409, 413), response.text
        if response.status_code != 200:
            assert response.json()["error"]["category"] == "input_invalid"

    check()
    print(f"admin: {sum(seen.values())} generated requests: {dict(seen)}")
    assert sum(seen.values()) >= ADMIN_CASES


# --- huge, deep and wide bodies; bytes that are not UTF-8; content types ---------------------

def timed(client: httpx.Client, content: Any, **headers: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = client.post("/predict", content=content, headers=headers)
    return response, time.perf_counter() - started


def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(client: httpx.Client) -> None:
    declared, seconds = timed(client, b" " * (MAX_BODY + 1))
    assert declared.status_code == 413
    assert seconds < 2

    def chunks() -> Iterator[bytes]:  # 8 MiB without a Content-Length: read until the cap
        for _ in range(128):
            yield b" " * 65_536

    streamed, seconds = timed(client, chunks())
    assert streamed.status_code == 413
    assert seconds < 5


@pytest.mark.parametrize("body", [
    b"[" * 500_000,
    b'{"a":' * 150_000,
    b'{"order_id": "o", "user": ' + b'{"id": ' * 100_000 + b"1" + b"}" * 100_000 + b"}",
], ids=["500k-brackets", "150k-objects", "100k-deep-user"])
def test_deep_bodies_are_refused_quickly(client: httpx.Client, body: bytes) -> None:
    response, seconds = timed(client, body)
    assert response.status_code == 400
    assert "nesting" in response.json()["error"]["message"]
    assert seconds < 2


def test_wide_bodies_are_answered_without_a_5xx(client: httpx.Client) -> None:
    long_list = orjson.dumps({**EXAMPLE, "padding": list(range(150_000))})  # ~1 MB, 1 key
    response, seconds = timed(client, long_list)
    assert response.status_code == 200, response.text
    assert seconds < 3
    too_many = orjson.dumps({**EXAMPLE, "sub_orders": EXAMPLE["sub_orders"] * 5_000})
    response, seconds = timed(client, too_many)
    assert response.status_code == 422  # max 50 sub-orders
    assert seconds < 3
    top_level = b"[" + b"0," * 400_000 + b"0]"
    response, seconds = timed(client, top_level)
    assert response.status_code == 422
    assert seconds < 3


@pytest.mark.parametrize("value", [False, True, "42"])
def test_a_boolean_or_a_string_is_not_a_number(client: httpx.Client, value: object) -> None:
    body = {**EXAMPLE, "user": {**EXAMPLE["user"], "id": value}}
    response = client.post("/predict", content=orjson.dumps(body))
    assert response.status_code == 422
    assert "user.id" in response.text


def test_a_boolean_where_a_defaulted_number_belongs_takes_the_default(
        client: httpx.Client) -> None:
    sub_order = {**EXAMPLE["sub_orders"][0], "quantity": True}
    # a user of its own: schemathesis sent the example's user enough discounted orders to
    # use up that user's hourly guardrail, which would add ``guardrail_exceeded`` here
    body = {**EXAMPLE, "user": {**EXAMPLE["user"], "id": 4_999}, "sub_orders": [sub_order]}
    response = client.post("/predict", content=orjson.dumps(body))
    assert response.status_code == 200
    assert response.headers["x-fallback"] == "input_contract"


def test_unknown_keys_do_not_grow_the_metrics_without_bound(client: httpx.Client) -> None:
    keys = {f"k{index:05d}-{time.monotonic_ns()}": 0 for index in range(2_000)}
    response = client.post("/predict", content=orjson.dumps({**EXAMPLE, **keys}))
    assert response.status_code == 200
    metrics = client.get("/metrics").text
    series = [line for line in metrics.splitlines()
              if line.startswith("buttress_input_contract_violations_total{")]
    assert len(series) <= 200, f"{len(series)} series of contract violations"


@pytest.mark.parametrize("body", [
    ORDER.replace(b'"o-1"', b'"o-\xff\xfe"'),  # not UTF-8 at all
    ORDER.replace(b'"o-1"', b'"o-\xc0\xaf"'),  # an overlong encoding of "/"
    ORDER.replace(b'"o-1"', b'"o-\xe2\x82"'),  # a truncated 3-byte sequence
    ORDER.replace(b'"o-1"', b'"o-\xed\xa0\x80"'),  # a UTF-16 surrogate, UTF-8 encoded
    b"\xef\xbb\xbf" + ORDER,  # a byte order mark before the JSON
    ORDER.decode().encode("utf-16"),
], ids=["ff-fe", "overlong", "truncated", "surrogate", "bom", "utf-16"])
def test_bodies_that_are_not_utf8_get_400(client: httpx.Client, body: bytes) -> None:
    response = client.post("/predict", content=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["category"] == "input_invalid"


def test_an_escaped_lone_surrogate_is_no_5xx(client: httpx.Client) -> None:
    response = client.post("/predict", content=ORDER.replace(b'"o-1"', b'"o-\\ud800"'))
    assert response.status_code in (200, 400, 422), response.text


CONTENT_TYPES = [None, "application/json", "application/json; charset=latin-1", "text/plain",
                 "application/x-www-form-urlencoded", "application/xml",
                 "multipart/form-data; boundary=x", "garbage", ""]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_content_type_neither_helps_nor_breaks_a_request(
    client: httpx.Client, content_type: str | None
) -> None:
    """The body is JSON whatever the label on it (``curl -d`` says form-urlencoded, and the
    README's tour uses it): a valid body is served, an invalid one refused, never a 5xx."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    valid = client.post("/predict", content=ORDER, headers=headers)
    assert valid.status_code == 200
    assert valid.headers["content-type"] == "application/json"
    invalid = client.post("/predict", content=b"order_id=o-1&user=42", headers=headers)
    assert invalid.status_code == 400


# --- slow clients ------------------------------------------------------------------------------

def trickle(port: int, body: bytes, interval: float, stop: threading.Event) -> bytes:
    """Send a request whose body comes one byte per ``interval``; return what the server
    answered (b"" if it closed without answering)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        sock.settimeout(interval)
        for byte in body:
            if stop.is_set():
                return b"(gave up)"
            try:
                sock.sendall(bytes([byte]))
                answer = sock.recv(65_536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                return b""
            return answer
        sock.settimeout(10)
        try:
            return sock.recv(65_536)
        except (TimeoutError, ConnectionResetError):
            return b""


def test_trickling_clients_do_not_hold_the_server(demo: RunningServer,
                                                  client: httpx.Client) -> None:
    stop = threading.Event()
    with ThreadPoolExecutor(8) as pool:
        slow = [pool.submit(trickle, demo.port, ORDER, 0.2, stop) for _ in range(8)]
        time.sleep(0.5)  # all eight are now holding a connection, mid-body
        try:
            for _ in range(50):
                response, seconds = timed(client, ORDER)
                assert response.status_code == 200
                assert seconds < 1.0
        finally:
            stop.set()
        for future in slow:
            future.result(timeout=30)


def test_a_trickled_body_is_cut_within_read_timeout(tmp_path: Any) -> None:
    env = {"BUTTRESS_READ_TIMEOUT": "2s", "BUTTRESS_MAX_CONCURRENCY": "off"}
    with running_server(DEMO, tmp_path / "read-timeout", env=env) as server:
        stop = threading.Event()
        started = time.perf_counter()
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(trickle, server.port, ORDER, 0.5, stop)
            try:
                answer = future.result(timeout=6)
            finally:
                stop.set()
        seconds = time.perf_counter() - started
        # 408, or the connection closed, well before the body (~100 s at 2 bytes/s) is in
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert seconds < 2 + 2.5, f"cut after {seconds:.1f}s"
