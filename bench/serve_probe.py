"""One load row against a fresh server, with the server's own view of it (not a test).

    python bench/serve_probe.py [--concurrency 32] [--per-request 1] [--seconds 6] [--server-args ...]

Where ``serve_bench.py`` compares the server with in-process ONNX Runtime, this answers "where
did the time go" for one load shape in about 15 s, from the server's Prometheus metrics:
texts per batch, texts per model run, padding share, queue time, the model's time and CPU
time per text (tokenize + run + label, in the worker threads), and the server CPU spent per
call outside them (event loop, grpc's own threads). Quick enough to A/B two commits or two
flag values back to back, which is the only fair comparison on a noisy shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import DEFAULT_DATA  # noqa: E402
from bench.serve_bench import cpu_seconds, drive, load_texts, start_server  # noqa: E402


def scrape(metrics_port: int) -> dict[str, float]:
    """The server's metrics, summed over label sets: ``{series name: value}``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    values: dict[str, float] = {}
    for name, labels, value in re.findall(r"^(\w+)(\{[^}]*\})? (\S+)$", text, re.MULTILINE):
        key = name + ('{kind="padding"}' if 'kind="padding"' in labels else "")
        values[key] = values.get(key, 0.0) + float(value)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("IMDB_DATA", DEFAULT_DATA)))
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="server --workers")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--per-request", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--warmup-s", type=float, default=1.5)
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[], help="extra flags for python -m serve")
    args = parser.parse_args()
    args.max_batch_size, args.max_queue_delay_ms = None, 0.0  # the server's defaults unless --server-args says

    texts = load_texts(args.data, args.texts, seed=0)
    proc, port, metrics_port, _ = start_server(args)
    try:
        cpu, began = cpu_seconds(proc.pid), time.monotonic()
        row = asyncio.run(drive(port, texts, args.concurrency, args.per_request, args.seconds, args.warmup_s))
        row["server_cpus"] = (cpu_seconds(proc.pid) - cpu) / (time.monotonic() - began)
        m = scrape(metrics_port)
    finally:
        proc.terminate()
        proc.wait(30)
    scored = m["sentiment_texts_total"]  # warm-up included, like the server-side figures below
    padding = m['sentiment_tokens_total{kind="padding"}']
    row["server_side"] = {
        "texts_per_batch": scored / m["sentiment_batch_texts_count"],
        "texts_per_model_run": scored / m["sentiment_padding_fraction_count"],
        "padding_share": padding / m["sentiment_tokens_total"],
        "queue_ms_mean": 1000 * m["sentiment_queue_seconds_sum"] / m["sentiment_queue_seconds_count"],
        "model_ms_per_text": 1000 * m["sentiment_compute_seconds_sum"] / scored,
        "model_cpu_ms_per_text": 1000 * m["sentiment_compute_cpu_seconds_total"] / scored,
    }
    # Server CPU that the workers did not use: the event loop, grpc's threads, metrics (per call).
    calls = row["requests"] / args.seconds
    worker_cpus = m["sentiment_compute_cpu_seconds_total"] / scored * row["texts_per_s"]
    row["server_side"]["other_cpu_ms_per_call"] = 1000 * (row["server_cpus"] - worker_cpus) / calls
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
