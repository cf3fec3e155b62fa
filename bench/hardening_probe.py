"""What a client without a token can make a token-protected server hold (issue 15; not a test).

    python bench/hardening_probe.py REPOSITORY [--probe unauth|streams|idle|metrics ...]

Starts ``python -m serve`` on loopback with ``--auth-token-file`` and only flags that every
version of the server knows (so the same command measures a commit before and after the
hardening), then, one fresh server per probe:

- ``unauth``: 16 and 32 parallel 16 MiB ``Predict`` calls without a token; the server's peak
  RSS growth (VmHWM after, reset before the calls, minus VmRSS before).
- ``streams``: 2,000 ``Health.Watch`` calls on one connection; how many the server holds open,
  how many were refused, its RSS, and what is left on the server after they are cancelled.
- ``idle``: the server's open-file limit set to 256, then 300 idle HTTP/2 connections; whether
  an authenticated ``Predict`` and ``/metrics`` still answer, how many idle ones were closed,
  and how long until ``Predict`` answers again while they stay open on the client side (90 s at most).
- ``metrics``: 200 idle TCP connections to the metrics port; the server's thread count, the
  ``Server:`` header, whether a scrape answers once the idle ones have timed out.

Prints one JSON line per probe. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from protos.sentiment.v1 import sentiment_pb2 as pb  # noqa: E402
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc  # noqa: E402

TOKEN = "probe-token-0123456789"
# An HTTP/2 client preface, an empty SETTINGS frame and the ACK of the server's: a connection past its
# handshake, as a real client leaves it, then silent.
H2_PREFACE = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
              + b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
WATCH = "/grpc.health.v1.Health/Watch"


class Server:
    """``python -m serve`` with a token file; ``nofile`` sets its open-file limit (soft and hard)."""

    def __init__(self, repository: str, nofile: int | None = None) -> None:
        folder = Path(tempfile.mkdtemp(prefix="probe-"))
        tokens = folder / "tokens"
        tokens.write_text(TOKEN + "\n")
        tokens.chmod(0o600)

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serve", "--model-repository", repository, "--port", "0", "--metrics-port", "0",
             "--intra-op-threads", "1", "--auth-token-file", str(tokens)],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, preexec_fn=limit)
        self.log: list[dict] = []
        listening = self._wait("listening")
        self.port = int(re.search(r":(\d+)$", listening["address"]).group(1))
        self.metrics_port = int(listening["metrics_port"])
        self._wait("serving")
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait(self, message: str) -> dict:
        assert self.proc.stderr is not None
        for _ in range(1000):
            line = self.proc.stderr.readline()
            if not line:
                raise SystemExit(f"server exited: {self.log}")
            entry = json.loads(line) if line.startswith("{") else {"msg": line.rstrip()}
            self.log.append(entry)
            if entry.get("msg") == message:
                return entry
        raise SystemExit(f"no {message!r} line")

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(json.loads(line) if line.startswith("{") else {"msg": line.rstrip()})

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def status(self) -> dict[str, int]:
        """VmRSS and VmHWM in MiB, and the thread count."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        values = {key: int(re.search(rf"^{key}:\s+(\d+)", text, re.MULTILINE).group(1))
                  for key in ("VmRSS", "VmHWM", "Threads")}
        return {"rss_mib": values["VmRSS"] // 1024, "peak_mib": values["VmHWM"] // 1024, "threads": values["Threads"]}

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux)

    def gauge(self, name: str, method: str) -> float | None:
        page = scrape(self.metrics_port)
        if page is None:
            return None
        found = re.search(rf'^{name}\{{method="{re.escape(method)}"\}} (\S+)$', page, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


def scrape(port: int, timeout: float = 5.0) -> str | None:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout).read().decode()
    except OSError:
        return None


def predict(address: str, text: str = "a fine film", timeout: float = 5.0, token: str | None = TOKEN) -> str:
    """The status code name of one Predict call on a fresh channel."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(address, [("grpc.max_send_message_length", 64 << 20)]) as channel:
        try:
            pb_grpc.SentimentServiceStub(channel).Predict(pb.PredictRequest(text=text), timeout=timeout,
                                                          metadata=metadata)
        except grpc.RpcError as exc:
            return exc.code().name
    return "OK"


def probe_unauth(repository: str) -> dict:
    rows = {}
    for calls in (16, 32):
        server = Server(repository)
        try:
            text = "x" * (16 * 1024 * 1024 - 64)
            time.sleep(1)
            server.reset_peak()
            before = server.status()
            codes: list[str] = []

            def send(address: str = server.address, payload: str = text, out: list[str] = codes) -> None:
                out.append(predict(address, payload, 60, None))

            threads = [threading.Thread(target=send) for _ in range(calls)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            time.sleep(1)
            after = server.status()
            rows[calls] = {"rss_before_mib": before["rss_mib"], "peak_after_mib": after["peak_mib"],
                           "rss_after_mib": after["rss_mib"], "peak_growth_mib": after["peak_mib"] - before["rss_mib"],
                           "codes": sorted(set(codes))}
        finally:
            server.close()
    return {"probe": "unauth", "calls": rows}


def probe_streams(repository: str, calls: int = 2000) -> dict:
    server = Server(repository)
    try:
        before = server.status()

        async def run() -> dict:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                streams = [stub.Watch(health_pb2.HealthCheckRequest(service="")) for _ in range(calls)]

                async def first(stream) -> str:
                    try:
                        await asyncio.wait_for(stream.read(), 10)
                        return "open"
                    except TimeoutError:
                        return "waiting"
                    except grpc.aio.AioRpcError as exc:
                        return exc.code().name

                outcomes = await asyncio.gather(*(first(s) for s in streams))
                held = await asyncio.to_thread(server.gauge, "sentiment_requests_in_flight", WATCH)
                during = server.status()
                for stream in streams:
                    stream.cancel()
                await asyncio.sleep(2)
                return {"outcomes": {o: outcomes.count(o) for o in sorted(set(outcomes))},
                        "server_in_flight_watch": held, "rss_during_mib": during["rss_mib"]}

        result = asyncio.run(run())
        time.sleep(1)
        result["server_in_flight_watch_after_cancel"] = server.gauge("sentiment_requests_in_flight", WATCH)
        result["rss_before_mib"] = before["rss_mib"]
        result["rss_after_cancel_mib"] = server.status()["rss_mib"]
        return {"probe": "streams", "calls_on_one_connection": calls, **result}
    finally:
        server.close()


def probe_idle(repository: str, sockets: int = 300, nofile: int = 256) -> dict:
    server = Server(repository, nofile=nofile)
    idle: list[socket.socket] = []
    try:
        for _ in range(sockets):
            try:
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sock.sendall(H2_PREFACE)
                idle.append(sock)
            except OSError:
                break
        time.sleep(2)
        closed = 0
        for sock in idle:
            sock.settimeout(0.01)
            try:
                while sock.recv(65536):
                    pass
                closed += 1  # EOF: the server closed it
            except TimeoutError:
                pass
            except OSError:
                closed += 1
        result = {"probe": "idle", "open_file_limit": nofile, "idle_connections_opened": len(idle),
                  "closed_by_server": closed, "predict": predict(server.address),
                  "metrics_answers": scrape(server.metrics_port) is not None,
                  "server_log_lines_about_limits": [e.get("msg") for e in server.log
                                                    if "limit" in str(e.get("msg", ""))][:3]}
        started = time.monotonic()
        while time.monotonic() - started < 90 and predict(server.address, timeout=2) != "OK":
            time.sleep(1)
        recovered = predict(server.address) == "OK"
        result["predict_ok_after_s"] = round(time.monotonic() - started, 1) if recovered else None
        return result
    finally:
        for sock in idle:
            sock.close()
        server.close()


def probe_metrics(repository: str, sockets: int = 200) -> dict:
    server = Server(repository)
    idle: list[socket.socket] = []
    try:
        time.sleep(0.5)
        before = server.status()["threads"]
        for _ in range(sockets):
            idle.append(socket.create_connection(("127.0.0.1", server.metrics_port), timeout=5))
        time.sleep(1)
        during = server.status()["threads"]
        time.sleep(6)  # past a 5 s idle timeout, where there is one
        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as reply:
            banner = reply.headers.get("Server")
        return {"probe": "metrics", "idle_connections": sockets, "threads_before": before,
                "threads_with_idle_connections": during, "threads_after_7s": server.status()["threads"],
                "server_header": banner}
    finally:
        for sock in idle:
            sock.close()
        server.close()


PROBES = {"unauth": probe_unauth, "streams": probe_streams, "idle": probe_idle, "metrics": probe_metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repository")
    parser.add_argument("--probe", choices=sorted(PROBES), action="append")
    args = parser.parse_args()
    for name in args.probe or list(PROBES):
        print(json.dumps(PROBES[name](args.repository)), flush=True)


if __name__ == "__main__":
    main()
