"""One load row against a fresh server, with the server's own view of it (not a test).

    python bench/serve_probe.py [--concurrency 32] [--per-request 1] [--seconds 6] [--bulk-texts N]
                                [--server-args ...]

Where ``serve_bench.py`` compares the server with in-process ONNX Runtime, this answers "where
did the time go" for one load shape in about 15 s, from the server's Prometheus metrics:
texts per batch, texts per model run, padding share, queue time, the model's time and CPU
time per text (tokenize + run + label, in the worker threads), and the server CPU spent per
call outside them (event loop, grpc's own threads). Quick enough to A/B two commits or two
flag values back to back, which is the only fair comparison on a noisy shared machine.

``--bulk-texts N`` adds one more client that sends PredictBatch requests of N texts back to
back for the whole row (a bulk job beside the apps): the row's latencies then show what the
other callers wait behind it, and ``bulk`` reports its own throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serve_bench import add_server_options, cpu_seconds, drive, load_texts, start_server  # noqa: E402


def scrape(metrics_port: int) -> dict[str, float]:
    """The server's metrics, summed over label sets: ``{series name: value}``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    values: dict[str, float] = {}
    for name, labels, value in re.findall(r"^(\w+)(\{[^}]*\})? (\S+)$", text, re.MULTILINE):
        key = name + ('{kind="padding"}' if 'kind="padding"' in labels else "")
        values[key] = values.get(key, 0.0) + float(value)
    return values


def step_figures(m: dict[str, float]) -> dict[str, float]:
    """What the steps path did, from its metrics (empty on the whole path)."""
    steps = m.get("sentiment_steps_total", 0.0)
    if not steps:
        return {}
    return {"rows_per_step": m["sentiment_step_rows_sum"] / steps,
            "step_tokens_mean": m["sentiment_step_tokens_sum"] / steps,
            "joins_per_step": m["sentiment_step_joins_sum"] / steps,
            "padding_share": m['sentiment_tokens_total{kind="padding"}'] / m["sentiment_tokens_total"],
            "model_ms_per_text": 1000 * m["sentiment_compute_seconds_sum"] / m["sentiment_texts_total"]}


async def bulk_client(port: int, texts: list[str], size: int, stop: asyncio.Event) -> dict[str, float]:
    """PredictBatch of ``size`` texts back to back until ``stop``; texts/s and requests done."""
    import grpc

    from protos.sentiment.v1 import sentiment_pb2 as pb
    from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 1 << 26)])
    stub = pb_grpc.SentimentServiceStub(channel)
    done, began, position = 0, time.perf_counter(), 0
    while not stop.is_set():
        batch = [texts[(position + k) % len(texts)] for k in range(size)]
        position += size
        await stub.PredictBatch(pb.PredictBatchRequest(texts=batch), timeout=120)
        done += 1
    await channel.close()
    return {"texts": size, "requests": done, "texts_per_s": done * size / (time.perf_counter() - began)}


async def load_row(args: argparse.Namespace, port: int, texts: list[str]) -> dict:
    """The measured row, with the bulk client running beside it when asked."""
    if not args.bulk_texts:
        return await drive(port, texts, args.concurrency, args.per_request, args.seconds, args.warmup_s)
    stop = asyncio.Event()
    bulk = asyncio.create_task(bulk_client(port, texts, args.bulk_texts, stop))
    row = await drive(port, texts, args.concurrency, args.per_request, args.seconds, args.warmup_s)
    stop.set()
    row["bulk"] = await bulk
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_options(parser)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--per-request", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--warmup-s", type=float, default=1.5)
    parser.add_argument("--bulk-texts", type=int, default=0, help="one extra client's PredictBatch size (0: none)")
    args = parser.parse_args()

    texts = load_texts(args.data, args.texts, seed=0)
    proc, port, metrics_port, _ = start_server(args)
    try:
        cpu, began = cpu_seconds(proc.pid), time.monotonic()
        row = asyncio.run(load_row(args, port, texts))
        row["server_cpus"] = (cpu_seconds(proc.pid) - cpu) / (time.monotonic() - began)
        m = scrape(metrics_port)
    finally:
        proc.terminate()
        proc.wait(30)
    scored = m["sentiment_texts_total"]  # warm-up included, like the server-side figures below
    if m.get("sentiment_steps_total"):  # --batching steps: no batches, steps
        row["server_side"] = step_figures(m)
        print(json.dumps(row, indent=1))
        return
    padding = m['sentiment_tokens_total{kind="padding"}']
    row["server_side"] = {
        "texts_per_batch": scored / m["sentiment_batch_texts_count"],
        "texts_per_model_run": scored / m["sentiment_padding_fraction_count"],
        "padding_share": padding / m["sentiment_tokens_total"],
        "queue_ms_mean": 1000 * m["sentiment_queue_seconds_sum"] / m["sentiment_queue_seconds_count"],
        "model_ms_per_text": 1000 * m["sentiment_compute_seconds_sum"] / scored,
        # Every RPC as the server times it (health checks of the start included: a handful).
        "server_ms_per_request": 1000 * m["sentiment_request_seconds_sum"] / m["sentiment_request_seconds_count"],
    }
    worker_cpu = m.get("sentiment_compute_cpu_seconds_total")  # absent before 2026-11-26: A/B with older commits
    if worker_cpu is not None:
        row["server_side"]["model_cpu_ms_per_text"] = 1000 * worker_cpu / scored
        # Server CPU that the workers did not use: the event loop, grpc's threads, metrics (per call).
        calls = row["requests"] / args.seconds
        worker_cpus = worker_cpu / scored * row["texts_per_s"]
        row["server_side"]["other_cpu_ms_per_call"] = 1000 * (row["server_cpus"] - worker_cpus) / calls
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
