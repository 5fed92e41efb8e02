"""The transport against clients that are slow, silent, too many or too large: the read
deadline, the connection cap, and a 413 that clients get to read.

A real ``buttress serve`` process with ``read_timeout=1s``: raw sockets play the slow and
silent clients, since HTTP client libraries send whole requests.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.servers import FAULTY, RunningServer, metric_value, running_server

pytestmark = pytest.mark.slow

READ_TIMEOUT = 1.0
MARGIN = 1.5  # scheduling noise on a shared 2-core machine
MAX_CONNECTIONS = 20
CLOSED = "buttress_connections_closed_total"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {"BUTTRESS_READ_TIMEOUT": "1s", "BUTTRESS_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
    with running_server(FAULTY, tmp_path_factory.mktemp("connections"), env=env) as running:
        yield running


def connect(server: RunningServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic()


def closed_count(server: RunningServer, reason: str) -> float:
    return metric_value(server.metrics(), CLOSED, reason=reason)


def test_silent_connections_are_closed_after_the_read_timeout(server: RunningServer) -> None:
    before = closed_count(server, "read_timeout")
    opened = time.monotonic()
    sockets = [connect(server) for _ in range(5)]
    for sock in sockets:
        received, closed = read_until_closed(sock)  # held for >= 30 s before
        sock.close()
        assert received == b""
        assert closed - opened < READ_TIMEOUT + MARGIN
    assert closed_count(server, "read_timeout") - before == 5


def test_headers_sent_byte_by_byte_are_cut_off(server: RunningServer) -> None:
    sock = connect(server)
    opened = time.monotonic()
    sock.settimeout(0.3)
    request = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n"
    closed_at = None
    for byte in request:
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(1) == b"":
                closed_at = time.monotonic()
                break
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            closed_at = time.monotonic()
            break
    sock.close()
    assert closed_at is not None, "the server waited for the whole trickled header"
    assert closed_at - opened < READ_TIMEOUT + MARGIN


def test_a_trickled_body_gets_a_408_and_is_counted(server: RunningServer) -> None:
    before = closed_count(server, "read_timeout")
    body = orjson.dumps({"id": "trickle", "padding": "x" * 200})
    sock = connect(server)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"X-Request-Id: trickle-1\r\nContent-Length: %d\r\n\r\n" % len(body))
    started = time.monotonic()
    sock.settimeout(0.25)
    received = b""
    for byte in body:  # 4 bytes a second: the whole body would take a minute
        try:
            sock.sendall(bytes([byte]))
            received += sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if received:
            break
    sock.settimeout(5)
    rest, closed = read_until_closed(sock)
    sock.close()
    received += rest
    assert received.startswith(b"HTTP/1.1 408 "), received
    head, _, payload = received.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    error = orjson.loads(payload)["error"]
    assert error["category"] == "input_invalid"
    assert "read_timeout" in error["message"]
    assert closed - started < READ_TIMEOUT + MARGIN
    assert closed_count(server, "read_timeout") - before == 1
    text = server.metrics()
    assert metric_value(text, "buttress_requests_total", status="408") >= 1


def test_a_slow_body_within_the_timeout_is_served(server: RunningServer) -> None:
    body = orjson.dumps({"id": "slow-but-fine"})
    sock = connect(server)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body))
    time.sleep(READ_TIMEOUT / 3)
    sock.sendall(body[:5])
    time.sleep(READ_TIMEOUT / 3)
    sock.sendall(body[5:])
    sock.settimeout(5)
    response = sock.recv(65536)
    sock.close()
    assert response.startswith(b"HTTP/1.1 200 "), response


def test_keep_alive_requests_each_get_the_whole_timeout(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=5) as http:
        for i in range(3):  # one connection, requests READ_TIMEOUT apart: none is cut off
            assert http.post("/predict", json={"id": f"k{i}"}).status_code == 200
            time.sleep(READ_TIMEOUT * 0.6)


def test_connections_past_the_cap_are_closed_at_once(server: RunningServer) -> None:
    before = closed_count(server, "max_connections")
    held = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # all accepted
        extra = connect(server)
        extra.settimeout(READ_TIMEOUT / 2)  # closed at once, not by the read deadline
        received, _ = read_until_closed(extra)
        extra.close()
        assert received == b""
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert closed_count(server, "max_connections") - before >= 1
    with httpx.Client(base_url=server.base_url, timeout=5) as http:  # room again
        assert http.post("/predict", json={"id": "after"}).status_code == 200


# --- bodies over max_body_bytes ---------------------------------------------------------------

TOO_LARGE = 20 * 1024 * 1024


def test_urllib_posting_20_mb_reads_its_413(server: RunningServer) -> None:
    """urllib sends the whole body before reading: the server closing at once reset the
    connection under it ("Connection reset by peer") instead of showing it the 413."""
    body = b'{"id": "' + b"x" * TOO_LARGE + b'"}'
    request = urllib.request.Request(f"{server.base_url}/predict", data=body,
                                     headers={"Content-Type": "application/json"})
    for _ in range(2):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 413
        error = orjson.loads(caught.value.read())["error"]
        assert error["category"] == "input_invalid"
        assert "larger than" in error["message"]


def test_a_chunked_body_over_the_cap_reads_its_413(server: RunningServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    chunks = (b"x" * 65536 for _ in range(TOO_LARGE // 65536))
    connection.request("POST", "/predict", body=chunks, encode_chunked=True,
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 413
    assert orjson.loads(response.read())["error"]["category"] == "input_invalid"
    connection.close()


def test_a_client_waiting_for_100_continue_gets_the_413_without_sending(
        server: RunningServer) -> None:
    sock = connect(server)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 b"Content-Length: %d\r\n\r\n" % TOO_LARGE)
    sock.settimeout(READ_TIMEOUT / 2)  # answered at once, not after a read deadline
    response = sock.recv(65536)
    sock.close()
    assert response.startswith(b"HTTP/1.1 413 "), response
