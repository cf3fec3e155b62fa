"""HTTP/REST against gRPC on one server (not a test): same process, same model, same load.

    python bench/http_bench.py [--seconds 10] [--concurrency 8]

Starts ``python -m serve`` on the shipped model with both ports, then drives it with the same
closed loop (:func:`bench.serve_bench.measure_calls`: ``--concurrency`` callers, one review
per request, back to back, for ``--seconds`` after a warm-up) over each way in turn:

- KServe v2 infer: gRPC ``ModelInfer`` (grpc.aio, one channel) and REST
  ``POST /v2/models/imdb-lstm/infer`` with JSON tensors (aiohttp client, one connection pool);
- our own API: gRPC ``Predict`` and REST ``POST /v1/predict``.

Rows alternate gRPC and REST so drift on a shared machine falls on both alike. Before the
load, a sample of reviews is scored both ways and the answers must be equal. Reports
texts/s, p50/p99 latency and the server's CPU per request; results under ``--out``
(default bench/results/http_bench.{json,md}).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import free_port, machine, write_results  # noqa: E402
from bench.serve_bench import (  # noqa: E402
    add_server_options,
    cpu_seconds,
    load_row,
    load_texts,
    measure_calls,
    start_server,
)

MODEL = "imdb-lstm"
WAYS = ("grpc ModelInfer", "rest infer", "grpc Predict", "rest /v1/predict")


class HttpStatusError(Exception):
    """A non-200 answer (counted as an error by the load loop)."""


async def clients(grpc_port: int, http_port: int, concurrency: int):
    """One grpc.aio channel and one aiohttp session (a connection per caller), and a ``send`` per way."""
    import aiohttp
    import grpc

    from protos.inference import grpc_predict_v2_pb2 as kpb
    from protos.inference import grpc_predict_v2_pb2_grpc as kpb_grpc
    from protos.sentiment.v1 import sentiment_pb2 as spb
    from protos.sentiment.v1 import sentiment_pb2_grpc as spb_grpc

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    session = aiohttp.ClientSession(f"http://127.0.0.1:{http_port}",
                                    connector=aiohttp.TCPConnector(limit=concurrency))
    kserve, sentiment = kpb_grpc.GRPCInferenceServiceStub(channel), spb_grpc.SentimentServiceStub(channel)

    async def grpc_infer(text: str) -> float:
        request = kpb.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(text.encode())
        reply = await kserve.ModelInfer(request, timeout=30)
        return reply.outputs[0].contents.fp32_contents[0]

    async def rest_infer(text: str) -> float:
        body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]}
        async with session.post(f"/v2/models/{MODEL}/infer", json=body) as response:
            if response.status != 200:
                raise HttpStatusError(f"{response.status}: {await response.text()}")
            return (await response.json())["outputs"][0]["data"][0]

    async def grpc_predict(text: str) -> float:
        return (await sentiment.Predict(spb.PredictRequest(text=text), timeout=30)).prediction.probability

    async def rest_predict(text: str) -> float:
        async with session.post("/v1/predict", json={"text": text}) as response:
            if response.status != 200:
                raise HttpStatusError(f"{response.status}: {await response.text()}")
            return (await response.json())["prediction"]["probability"]

    sends: dict[str, Callable[[str], Awaitable[float]]] = dict(zip(
        WAYS, (grpc_infer, rest_infer, grpc_predict, rest_predict), strict=True))

    async def close() -> None:
        await session.close()
        await channel.close()

    return sends, close


async def same_answers(grpc_port: int, http_port: int, sample: list[str]) -> bool:
    """Every way gives every review of ``sample`` the same probability."""
    sends, close = await clients(grpc_port, http_port, 1)
    try:
        answers = {way: [await send(text) for text in sample] for way, send in sends.items()}
    finally:
        await close()
    return len({tuple(values) for values in answers.values()}) == 1


async def drive(way: str, grpc_port: int, http_port: int, texts: list[str], concurrency: int, seconds: float,
                warmup_s: float) -> dict[str, Any]:
    import aiohttp
    import grpc

    sends, close = await clients(grpc_port, http_port, concurrency)
    send_text = sends[way]

    async def send(worker: int, call: int) -> None:
        await send_text(texts[(worker * 997 + call * concurrency) % len(texts)])

    try:
        measured = await measure_calls(send, concurrency, seconds, warmup_s,
                                       failures=(grpc.aio.AioRpcError, aiohttp.ClientError, HttpStatusError))
    finally:
        await close()
    return {"way": way, "concurrency": concurrency, **load_row(*measured, 1)}


def loop_thread_cpu_seconds(pid: int) -> float:
    """CPU time of the server's main thread, which runs the asyncio event loop (``python -m serve``)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def markdown(results: dict[str, Any]) -> str:
    rows = {row["way"]: row for row in results["rows"]}
    lines = [f"Machine: {results['machine']} (shared with other work: figures are noisy); "
             f"{results['texts']} IMDB test reviews, one per request, concurrency {results['concurrency']}, "
             f"{results['seconds']:g} s per row; `{results['command']}` at {results['when']}.", "",
             "| way | texts/s | p50 ms | p99 ms | errors | server CPU ms/request (of which its event-loop thread) "
             "| server CPUs busy | load generator CPU ms/request | vs gRPC |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["rows"]:
        base = rows.get("grpc ModelInfer" if "infer" in row["way"] or "Infer" in row["way"] else "grpc Predict", row)
        lines.append(f"| {row['way']} | {row['texts_per_s']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                     f"{row['errors']} | {row['server_cpu_ms_per_request']:.2f} "
                     f"({row['server_loop_thread_cpu_ms_per_request']:.2f}) | {row['server_cpus']:.2f} | "
                     f"{row['loadgen_cpu_ms_per_request']:.2f} | "
                     f"{row['texts_per_s'] / base['texts_per_s']:.2f}x |")
    lines += ["", f"Answers equal on every way for a sample of {results['sample']} reviews: {results['same_answers']}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_options(parser)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per row")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS), help="rows to run, in this order")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    http_port = free_port()
    args.server_args = ["--http-port", str(http_port), *args.server_args]
    texts = load_texts(args.data, args.texts, seed=0)
    load_before = os.getloadavg()
    proc, port, _, _ = start_server(args)
    rows = []
    try:
        equal = asyncio.run(same_answers(port, http_port, texts[:50]))
        for way in args.ways:
            server_cpu, own_cpu, began = cpu_seconds(proc.pid), time.process_time(), time.monotonic()
            loop_cpu = loop_thread_cpu_seconds(proc.pid)
            row = asyncio.run(drive(way, port, http_port, texts, args.concurrency, args.seconds, args.warmup_s))
            # CPU per request of the server and of this load generator (both on the same CPUs), over
            # the whole row; the warm-up's calls are estimated at the measured rate.
            requests_sent = row["requests"] * (1 + args.warmup_s / args.seconds)
            row["server_cpu_ms_per_request"] = (cpu_seconds(proc.pid) - server_cpu) * 1000 / requests_sent
            row["loadgen_cpu_ms_per_request"] = (time.process_time() - own_cpu) * 1000 / requests_sent
            row["server_loop_thread_cpu_ms_per_request"] = ((loop_thread_cpu_seconds(proc.pid) - loop_cpu) * 1000
                                                            / requests_sent)
            row["server_cpus"] = (cpu_seconds(proc.pid) - server_cpu) / (time.monotonic() - began)
            row["wall_s"] = time.monotonic() - began
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        proc.terminate()
        proc.wait(30)
    results = {"machine": machine(), "threads": args.threads, "texts": len(texts), "seconds": args.seconds,
               "concurrency": args.concurrency, "sample": 50, "same_answers": equal, "rows": rows,
               "command": "python bench/http_bench.py " + " ".join(sys.argv[1:]),
               "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "load_average_before": load_before, "load_average_after": os.getloadavg()}
    write_results(args.out, "http_bench", results, markdown(results))


if __name__ == "__main__":
    main()
