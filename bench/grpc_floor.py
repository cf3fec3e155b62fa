"""The transport's own cost per call (not a test): bare gRPC echo servers, and our server's lightest RPC.

    python bench/grpc_floor.py [--seconds 5] [--concurrency 32] [--payload-bytes 1300] [--rounds 2]

``serve_probe.py`` reports how much server CPU a scoring call costs outside the model
(``other_cpu_ms_per_call``). This answers how much of that any Python gRPC server would pay:
the same grpc.aio client, one channel, ``--concurrency`` callers, drives for ``--seconds``

* ``bare-aio``: a grpc.aio server whose one unary method returns the request's bytes (the
  server kind ``serve/`` is built on);
* ``bare-sync``: the same method on grpc's thread-pool server (``--sync-threads`` threads);
* ``serve-ServerLive``: this project's server on the shipped model, ``ServerLive``: the whole
  stack (interceptors, metrics, servicer) without the model or the batcher.

Each row reports calls/s and the server process's CPU milliseconds per call, and the load
generator's. Rows alternate, ``--rounds`` times, so that drift on a shared machine touches
every kind alike. Results: a Markdown table on stdout, JSON + Markdown under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import free_port, machine, write_results  # noqa: E402
from bench.serve_bench import add_server_options, cpu_seconds, measure_calls, start_server  # noqa: E402

ECHO_SERVICE, ECHO_METHOD = "bench.Echo", "Call"
SERVER_LIVE = "/inference.GRPCInferenceService/ServerLive"


def _echo_handler(behaviour) -> grpc.GenericRpcHandler:
    method = grpc.unary_unary_rpc_method_handler(behaviour, request_deserializer=None, response_serializer=None)
    return grpc.method_handlers_generic_handler(ECHO_SERVICE, {ECHO_METHOD: method})


def serve_echo(kind: str, port: int, sync_threads: int) -> None:
    """Run a bare echo server of ``kind`` (``bare-aio`` or ``bare-sync``) until terminated."""
    address = f"127.0.0.1:{port}"
    if kind == "bare-sync":
        server = grpc.server(ThreadPoolExecutor(max_workers=sync_threads))
        server.add_generic_rpc_handlers((_echo_handler(lambda request, context: request),))
        server.add_insecure_port(address)
        server.start()
        server.wait_for_termination()
        return

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def run() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_echo_handler(echo),))
        server.add_insecure_port(address)
        await server.start()
        await server.wait_for_termination()

    asyncio.run(run())


def start_echo(kind: str, sync_threads: int) -> tuple[subprocess.Popen, int]:
    """An echo server subprocess of ``kind``, answering on its port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port),
                             "--sync-threads", str(sync_threads)])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
    return proc, port


async def measure(pid: int, port: int, method: str, payload: bytes, args: argparse.Namespace) -> dict[str, float]:
    """One row: calls/s and CPU ms per call of the server ``pid`` and of this load generator."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(method)

        async def send(worker: int, index: int) -> None:
            await call(payload, timeout=10)

        await measure_calls(send, args.concurrency, 1.0, 0.0)  # warm-up: connection, code paths
        server_cpu, own_cpu = cpu_seconds(pid), time.process_time()
        latencies, errors, elapsed = await measure_calls(send, args.concurrency, args.seconds, 0.0)
        server_cpu, own_cpu = cpu_seconds(pid) - server_cpu, time.process_time() - own_cpu
    calls = len(latencies)
    return {"calls_per_s": calls / elapsed, "errors": errors,
            "server_cpu_ms_per_call": 1000 * server_cpu / calls, "loadgen_cpu_ms_per_call": 1000 * own_cpu / calls}


def run_row(kind: str, args: argparse.Namespace) -> dict[str, float]:
    if kind == "serve-ServerLive":
        proc, port, _, _ = start_server(args)
        method, payload = SERVER_LIVE, b""  # an empty ServerLiveRequest
    else:
        proc, port = start_echo(kind, args.sync_threads)
        method, payload = f"/{ECHO_SERVICE}/{ECHO_METHOD}", b"x" * args.payload_bytes
    try:
        return asyncio.run(measure(proc.pid, port, method, payload, args))
    finally:
        proc.terminate()
        proc.wait(30)


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Machine: {results['machine']}; concurrency {results['concurrency']}, one channel, "
             f"{results['seconds']} s per row, {results['rounds']} round(s), median shown; "
             f"`{results['command']}`", "",
             "| server | calls/s | server CPU ms per call | load-generator CPU ms per call |",
             "|---|---:|---:|---:|"]
    for kind, row in results["median"].items():
        lines.append(f"| {kind} | {row['calls_per_s']:.0f} | {row['server_cpu_ms_per_call']:.3f} | "
                     f"{row['loadgen_cpu_ms_per_call']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_options(parser)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--payload-bytes", type=int, default=1300, help="echo payload (about one IMDB review)")
    parser.add_argument("--sync-threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kinds", nargs="+", default=["bare-sync", "bare-aio", "serve-ServerLive"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--serve", choices=["bare-aio", "bare-sync"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_echo(args.serve, args.port, args.sync_threads)
        return

    rows: dict[str, list[dict[str, float]]] = {kind: [] for kind in args.kinds}
    for round_index in range(args.rounds):
        for kind in args.kinds:
            rows[kind].append(run_row(kind, args))
            print(f"round {round_index + 1}, {kind}: {rows[kind][-1]}", file=sys.stderr)
    median = {kind: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
              for kind, runs in rows.items()}
    results = {"machine": machine(), "concurrency": args.concurrency, "seconds": args.seconds, "rounds": args.rounds,
               "payload_bytes": args.payload_bytes, "sync_threads": args.sync_threads,
               "command": "python " + " ".join(["bench/grpc_floor.py", *sys.argv[1:]]), "runs": rows,
               "median": median}
    write_results(args.out, "grpc_floor", results, markdown(results))


if __name__ == "__main__":
    main()
