"""What a client, with or without a token, can make the server hold (issue 15; docs/security.md).

Real servers on loopback (in-process, or ``python -m serve`` where memory is measured), raw
sockets where a client would misbehave below gRPC. Every wait is bounded; where a test checks
that something does *not* happen (a queued call is not answered), it cannot happen until the
test itself frees a slot, so a slow machine cannot make it fail.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from serve.ops.errors import ConfigurationError
from serve.ops.security import check_token_file_mode
from serve.ops.settings import Settings
from serve.server import RESERVED_FDS, connection_cap, warn_if_exposed
from tests.fixtures.server_thread import ServerThread, make_settings
from tests.serve.test_process import ServeProcess

TIMEOUT = 10.0
TOKEN = "tok-limits-0123456789abcdef"
WRONG = "tok-limits-wrong-5555555555"
# An HTTP/2 client preface, an empty SETTINGS frame and the ACK of the server's: a connection past its
# handshake, as a real client leaves it, that then stays silent.
H2_PREFACE = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
              + b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
WATCH = "/grpc.health.v1.Health/Watch"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("limits-auth") / "tokens.txt"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def guarded(repository: Path, token_file: Path) -> Iterator[ServerThread]:
    running = ServerThread(make_settings(repository, auth_token_file=token_file))
    yield running
    running.close()


def until(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def closed_by_peer(sock: socket.socket, timeout: float = TIMEOUT) -> tuple[bool, int]:
    """(whether the server closed the connection within ``timeout``, bytes it sent before)."""
    sock.settimeout(timeout)
    received = 0
    try:
        while chunk := sock.recv(65536):
            received += len(chunk)
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        pass
    return True, received


def metric(server: ServerThread, name: str, labels: str) -> float:
    page = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=TIMEOUT).read()
    found = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", page.decode(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


# -- refused before the message is read


def test_an_unauthenticated_message_is_never_parsed(guarded: ServerThread) -> None:
    """Bytes that are no protobuf at all: a server that parsed them first would say INVALID_ARGUMENT."""
    garbage = b"\xff\xff\xff\xff\x0f"
    for method in ("/sentiment.v1.SentimentService/Predict", "/inference.GRPCInferenceService/ModelInfer"):
        call = guarded.channel.unary_unary(method)  # no serializers: raw bytes go out as they are
        with pytest.raises(grpc.RpcError) as caught:
            call(garbage, timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value.details()
    stream = guarded.channel.stream_stream("/sentiment.v1.SentimentService/PredictStream")
    assert code_of(lambda: list(stream(iter([garbage] * 3), timeout=TIMEOUT))) == grpc.StatusCode.UNAUTHENTICATED
    # With the token the same bytes reach the parser, which refuses them as bad input.
    call = guarded.channel.unary_unary("/sentiment.v1.SentimentService/Predict")
    assert code_of(lambda: call(garbage, timeout=TIMEOUT, metadata=(("authorization", f"Bearer {TOKEN}"),))) \
        == grpc.StatusCode.INVALID_ARGUMENT


def rss_mib(pid: int) -> dict[str, float]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {key: int(re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE).group(1)) / 1024
            for key in ("VmRSS", "VmHWM")}


def test_unauthenticated_16_mib_calls_do_not_grow_the_server(repository: Path, token_file: Path) -> None:
    """16 parallel 16 MiB Predict calls without a token: the server's peak RSS barely moves.

    Reading the messages before refusing them took 300-370 MiB here (issue 15); refused on
    arrival, what remains is grpc's per-stream flow-control buffering (tens of MiB).
    """
    process = ServeProcess(["--model-repository", str(repository), "--port", "0", "--metrics-port", "-1",
                            "--intra-op-threads", "1", "--auth-token-file", str(token_file)])
    try:
        port = re.search(r":(\d+)$", process.wait_log("listening")["address"]).group(1)
        process.wait_log("serving")
        pid = process.proc.pid
        text = "x" * (16 * MIB - 64)
        codes: list[grpc.StatusCode] = []

        def send() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{port}", [("grpc.max_send_message_length", 32 * MIB)]) as channel:
                codes.append(code_of(lambda: pb_grpc.SentimentServiceStub(channel).Predict(
                    pb.PredictRequest(text=text), timeout=60)))

        send()  # one first, so that grpc's own start-up allocations are not counted
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak := current (VmHWM reset)
        before = rss_mib(pid)["VmRSS"]
        threads = [threading.Thread(target=send) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        growth = rss_mib(pid)["VmHWM"] - before
        assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 17
        assert growth < 128, f"peak RSS grew by {growth:.0f} MiB for 16 refused calls of 16 MiB"
    finally:
        process.kill()


# -- calls in flight, streams per connection


def test_calls_in_flight_are_capped_and_freed_when_they_end(repository: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="serve.security")
    running = ServerThread(make_settings(repository, max_calls_in_flight=3, max_open_calls_in_flight=2))
    try:
        health = health_pb2_grpc.HealthStub(running.channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(2)]
        for watch in watches:
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            next(health.Watch(health_pb2.HealthCheckRequest(), timeout=TIMEOUT))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-open-calls-in-flight" in caught.value.details()
        # Health Check is open too, and so over its own cap; a guarded call still has room.
        stub = pb_grpc.SentimentServiceStub(running.channel)
        assert stub.Predict(pb.PredictRequest(text="great"), timeout=TIMEOUT).prediction.label

        release = threading.Event()

        def held() -> Iterator[pb.PredictStreamRequest]:
            yield pb.PredictStreamRequest(id="held", texts=["great"])
            release.wait(TIMEOUT)

        stream = stub.PredictStream(held(), timeout=60)
        assert next(stream).id == "held"  # three calls in flight now: the global cap
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(pb.PredictRequest(text="x" * MIB), timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-calls-in-flight" in caught.value.details()
        limit_lines = [r for r in caplog.records if r.getMessage().startswith("call limit reached")]
        assert len(limit_lines) == 1, "one line per interval, however many refusals"
        assert limit_lines[0].peer.startswith("ipv") and "127.0.0.1" in limit_lines[0].peer
        assert metric(running, "sentiment_limit_refusals_total", 'limit="calls"') == 1
        assert metric(running, "sentiment_limit_refusals_total", 'limit="open_calls"') == 1

        for watch in watches:
            watch.cancel()
        release.set()
        assert [r.id for r in stream] == []
        # Ended calls give their places back: the server answers again.
        until(lambda: _ok(lambda: stub.Predict(pb.PredictRequest(text="great"), timeout=TIMEOUT)), "a free place")
        until(lambda: _ok(lambda: next(health.Watch(health_pb2.HealthCheckRequest(), timeout=TIMEOUT))),
              "a free open place")
    finally:
        running.close()


def _ok(call) -> bool:
    try:
        call()
    except grpc.RpcError:
        return False
    return True


def test_streams_per_connection_are_bounded_and_given_back(repository: Path) -> None:
    running = ServerThread(make_settings(repository, max_streams_per_connection=4))
    waiter = ThreadPoolExecutor(1)
    try:
        with grpc.insecure_channel(running.address) as channel:  # one connection
            health = health_pb2_grpc.HealthStub(channel)
            # Connected first, so the client knows the server's limit and queues the excess itself.
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status
            calls = [health.Watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(6)]
            for call in calls[:4]:
                assert next(call).status == health_pb2.HealthCheckResponse.SERVING
            fifth = waiter.submit(next, calls[4])
            with pytest.raises(FutureTimeout):  # it waits at the client for a free stream, however long
                fifth.result(timeout=1.0)
            calls[0].cancel()  # a place frees: the queued stream proceeds
            assert fifth.result(timeout=TIMEOUT).status == health_pb2.HealthCheckResponse.SERVING
            for call in calls:
                call.cancel()
        # Cancelled streams are gone from the server too.
        until(lambda: metric(running, "sentiment_requests_in_flight", f'method="{WATCH}"') == 0, "watches to end")
    finally:
        waiter.shutdown(wait=False, cancel_futures=True)
        running.close()


# -- connections


def test_idle_and_silent_connections_are_closed(repository: Path) -> None:
    running = ServerThread(make_settings(repository, connection_idle_s=0.3, handshake_timeout_s=0.3), load=False)
    try:
        idle = socket.create_connection(("127.0.0.1", running.port), timeout=TIMEOUT)
        idle.sendall(H2_PREFACE)  # a finished handshake, then no call
        silent = socket.create_connection(("127.0.0.1", running.port), timeout=TIMEOUT)  # never says anything
        half = socket.create_connection(("127.0.0.1", running.port), timeout=TIMEOUT)
        half.sendall(H2_PREFACE[:10])  # half a preface, then nothing
        for sock in (idle, silent, half):
            closed, _ = closed_by_peer(sock)
            assert closed
            sock.close()
        health = health_pb2_grpc.HealthStub(running.channel)  # clients still get in (and reconnect after idling)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status is not None
    finally:
        running.close()


def test_connections_beyond_the_cap_are_closed_on_arrival(repository: Path) -> None:
    running = ServerThread(make_settings(repository, max_connections=2, connection_idle_s=0), load=False)
    held = [socket.create_connection(("127.0.0.1", running.port), timeout=TIMEOUT) for _ in range(2)]
    try:
        for sock in held:
            sock.sendall(H2_PREFACE)
            sock.settimeout(TIMEOUT)
            assert sock.recv(9)  # the server's SETTINGS: this one was accepted
        extra = socket.create_connection(("127.0.0.1", running.port), timeout=TIMEOUT)
        extra.sendall(H2_PREFACE)
        assert closed_by_peer(extra) == (True, 0)  # closed without a byte, before any handshake
        extra.close()
        for sock in held:
            sock.close()
        health = health_pb2_grpc.HealthStub(running.channel)
        until(lambda: _ok(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)), "a free place")
    finally:
        for sock in held:
            sock.close()
        running.close()


def test_the_connection_cap_is_lowered_to_fit_the_open_file_limit(repository: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="serve.server")
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no open-file limit to fit")
    assert connection_cap(make_settings(repository, max_connections=10)) == 10
    assert connection_cap(make_settings(repository, max_connections=hard * 2)) == hard - RESERVED_FDS
    assert any(r.getMessage().startswith("--max-connections lowered") for r in caplog.records)


# -- the metrics endpoint


def test_the_metrics_endpoint_holds_few_threads_closes_idle_connections_and_names_no_software(
        repository: Path) -> None:
    running = ServerThread(make_settings(repository, metrics_max_connections=2, metrics_timeout_s=0.5), load=False)
    idle: list[socket.socket] = []
    try:
        port = running.server.metrics_port
        threads_before = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(10)]
        outcomes = [closed_by_peer(sock) for sock in idle]  # all closed: 8 at once, 2 after the timeout
        assert outcomes == [(True, 0)] * 10
        assert threading.active_count() - threads_before <= 2
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as reply:
            headers = dict(reply.headers)
            page = reply.read().decode()
        assert "Server" not in headers and "python" not in str(headers).lower()
        assert re.search(r'^sentiment_limit_refusals_total\{limit="metrics_connections"\} ([1-9]\d*)\.0$', page,
                         re.MULTILINE)
    finally:
        for sock in idle:
            sock.close()
        running.close()


# -- failed authentication


def test_failed_authentication_is_counted_and_logged_once_with_the_peer(
        guarded: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="serve.security")
    stub = pb_grpc.SentimentServiceStub(guarded.channel)
    before = {kind: metric(guarded, "sentiment_auth_failures_total", f'kind="{kind}"') for kind in ("invalid",
                                                                                                     "missing")}
    for _ in range(50):
        assert code_of(lambda: stub.Predict(pb.PredictRequest(text="great"), timeout=TIMEOUT,
                                            metadata=(("authorization", f"Bearer {WRONG}"),))) \
            == grpc.StatusCode.UNAUTHENTICATED
    for _ in range(5):
        assert code_of(lambda: stub.Predict(pb.PredictRequest(text="great"), timeout=TIMEOUT)) \
            == grpc.StatusCode.UNAUTHENTICATED
    until(lambda: metric(guarded, "sentiment_auth_failures_total", 'kind="missing"') == before["missing"] + 5,
          "failures to be counted")
    assert metric(guarded, "sentiment_auth_failures_total", 'kind="invalid"') == before["invalid"] + 50
    lines = [r for r in caplog.records if r.getMessage() == "authentication failed"]
    assert len(lines) <= 1  # the module's server may have logged its one line for this interval already
    if lines:
        assert "127.0.0.1" in lines[0].peer and lines[0].reason in ("invalid", "missing")
        assert WRONG not in str(vars(lines[0])) and TOKEN not in str(vars(lines[0]))


def test_the_first_failed_authentication_is_logged_at_the_default_level(
        repository: Path, token_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="serve")
    running = ServerThread(make_settings(repository, auth_token_file=token_file), load=False)
    try:
        stub = pb_grpc.SentimentServiceStub(running.channel)
        for _ in range(20):
            code_of(lambda: stub.Predict(pb.PredictRequest(text="great"), timeout=TIMEOUT,
                                         metadata=(("authorization", f"Bearer {WRONG}"),)))
        until(lambda: any(r.getMessage() == "authentication failed" for r in caplog.records), "the warning")
        (line,) = [r for r in caplog.records if r.getMessage() == "authentication failed"]
        assert line.levelno == logging.WARNING and "127.0.0.1" in line.peer
        assert line.method == "/sentiment.v1.SentimentService/Predict" and line.reason == "invalid"
    finally:
        running.close()


# -- configuration


def test_a_token_file_readable_by_everyone_is_warned_about_or_refused(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="serve.security")
    path = tmp_path / "tokens.txt"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    check_token_file_mode(path, strict=True)
    assert not caplog.records
    path.chmod(0o644)
    check_token_file_mode(path, strict=False)
    assert [r.getMessage() for r in caplog.records] == ["token file readable by every user"]
    with pytest.raises(ConfigurationError, match=r"readable by every user .*chmod o-rwx"):
        check_token_file_mode(path, strict=True)


def test_listening_beyond_loopback_without_protection_is_warned_about(
        tmp_path: Path, token_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="serve.server")
    assert Settings().exposed_without_protection == []
    assert Settings(host="::1", metrics_host="localhost").exposed_without_protection == []
    exposed = Settings(host="0.0.0.0").exposed_without_protection
    assert exposed == ["--host 0.0.0.0 without TLS", "--host 0.0.0.0 without token auth",
                       "--metrics-host 0.0.0.0 (plain, unauthenticated HTTP)"]
    # Tokens alone still leave plaintext; the metrics page then defaults to loopback.
    assert Settings(host="0.0.0.0", auth_token_file=token_file).exposed_without_protection == [
        "--host 0.0.0.0 without TLS"]
    warn_if_exposed(Settings(host="10.1.2.3", metrics_port=-1))
    assert [r.exposed for r in caplog.records] == ["--host 10.1.2.3 without TLS", "--host 10.1.2.3 without token auth"]
    assert all(r.levelno == logging.WARNING and "BEYOND LOOPBACK" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", ["max_calls_in_flight", "max_open_calls_in_flight", "max_streams_per_connection",
                                  "max_connections", "metrics_max_connections"])
def test_limits_must_be_positive(name: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{name} must be >= 1"):
        Settings(**{name: 0})
