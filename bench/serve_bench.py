"""Serving benchmark (not a test): the gRPC server under load vs in-process ONNX Runtime and PyTorch.

    python bench/serve_bench.py [--model-repository models] [--threads 2] [--seconds 8]

1. Starts ``python -m serve`` on the shipped model (free loopback ports) and times the cold
   start: process start to health SERVING.
2. Drives it with a bounded closed-loop load generator (grpc.aio, one channel) at
   concurrency 1, 8 and 32, sending single texts (``Predict``) and 32 texts per request
   (``PredictBatch``), each for ``--seconds`` after a short warm-up; reports texts/s and
   p50/p99 request latency, and samples the server's RSS all along.
3. Measures in the same process, with the same texts and thread count:
   * ONNX Runtime single review: tokenize + run one text at a time, back to back (the latency
     floor for concurrency 1), on ``--threads`` threads and on one thread;
   * ONNX Runtime ceiling: tokenize + run all texts sorted by length (minimal padding), the
     best of one run at a time on all threads or one single-threaded run per CPU, over run
     sizes 4..64: the most this machine does in-process;
   * PyTorch eager (the training model from ``--checkpoint``, ``torch.set_num_threads``
     = the same CPUs), single and length-sorted batches of 16 and 64.

Texts are IMDB test reviews (``--data``, seeded sample). Results: a Markdown table on stdout
and JSON + Markdown under ``--out`` (default bench/results/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import DEFAULT_DATA, free_port, machine, write_results  # noqa: E402
from runtime.preprocessing import encode_texts, pad_batch  # noqa: E402


def load_texts(data: Path, count: int, seed: int) -> list[str]:
    from train.data import read_reviews

    reviews = read_reviews(data, ("test",))["test"]
    return [r.text for r in random.Random(seed).sample(reviews, count)]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler(threading.Thread):
    """Samples a process's RSS every ``period`` seconds until stopped."""

    def __init__(self, pid: int, period: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.period, self.samples = pid, period, []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.period):
            self.samples.append((time.monotonic(), rss_mb(self.pid)))


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The flags :func:`start_server` reads and the review sample, for every benchmark that starts a server."""
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("IMDB_DATA", DEFAULT_DATA)))
    parser.add_argument("--texts", type=int, default=2000, help="reviews sampled from the test split")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="server --workers (and in-process threads where measured)")
    parser.add_argument("--max-batch-size", type=int, default=None, help="server flag (default: the server's)")
    parser.add_argument("--max-queue-delay-ms", type=float, default=0.0, help="server flag")
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[], help="extra flags for python -m serve")


def start_server(args: argparse.Namespace, port: int | None = None) -> tuple[subprocess.Popen, int, int, float]:
    """Start ``python -m serve`` (on ``port``, else a free one); returns the process, gRPC port, metrics port
    and seconds to SERVING."""
    port, metrics_port = port or free_port(), free_port()
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "serve", "--model-repository", str(args.model_repository), "--port", str(port),
               "--metrics-port", str(metrics_port), "--workers", str(args.threads),
               *(["--max-batch-size", str(args.max_batch_size)] if args.max_batch_size else []),
               "--max-queue-delay-ms", str(args.max_queue_delay_ms),
               "--log-level", "warning",
               *([] if "--http-port" in args.server_args else ["--http-port", str(free_port())]), *args.server_args]
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=ROOT, env=env)
    return proc, port, metrics_port, wait_serving(proc, port, started)


def wait_serving(proc: subprocess.Popen, port: int, started: float) -> float:
    """Poll the gRPC health service on ``port`` until SERVING; seconds since ``started`` (time.monotonic).

    Raises RuntimeError if ``proc`` exits first or 60 s pass.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                break
        except grpc.RpcError:
            pass
        if time.monotonic() - started > 60:
            raise RuntimeError("server not SERVING after 60 s")
        time.sleep(0.005)
    cold = time.monotonic() - started
    channel.close()
    return cold


async def measure_calls(send: Callable[[int, int], Awaitable[Any]], concurrency: int, seconds: float,
                      warmup_s: float, failures: tuple[type[BaseException], ...] | None = None
                      ) -> tuple[list[float], int, float]:
    """``concurrency`` workers await ``send(worker, call)`` back to back (``call`` counts that worker's calls).

    Returns the latencies (s) of the calls that finished within the measured ``seconds``
    after ``warmup_s``, the count of calls that failed with one of ``failures`` (default: a
    gRPC error), and the measured wall time.
    """
    import grpc

    failures = failures or (grpc.aio.AioRpcError,)
    latencies: list[float] = []
    errors, measuring = 0, False
    stop = asyncio.Event()

    async def worker(index: int) -> None:
        nonlocal errors
        call = 0
        while not stop.is_set():
            started = time.perf_counter()
            try:
                await send(index, call)
            except failures:
                errors += 1
                continue
            finally:
                call += 1
            if measuring:
                latencies.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    await asyncio.sleep(warmup_s)
    measuring, began = True, time.perf_counter()
    await asyncio.sleep(seconds)
    measuring, wall = False, time.perf_counter() - began
    stop.set()
    await asyncio.gather(*tasks)
    return latencies, errors, wall


def load_row(latencies: list[float], errors: int, wall: float, texts_per_request: int) -> dict[str, Any]:
    """Requests, errors, texts/s and p50/p99 (ms) of one closed-loop row."""
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": errors, "texts_per_s": len(latencies) * texts_per_request / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


async def drive(port: int, texts: list[str], concurrency: int, per_request: int, seconds: float,
                warmup_s: float) -> dict[str, Any]:
    """Closed-loop load: ``concurrency`` workers send Predict (or PredictBatch) back to back for ``seconds``."""
    import grpc

    from protos.sentiment.v1 import sentiment_pb2 as pb
    from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 1 << 26)])
    stub = pb_grpc.SentimentServiceStub(channel)

    async def send(worker: int, call: int) -> None:
        position = worker * 997 + call * per_request * concurrency
        batch = [texts[(position + k) % len(texts)] for k in range(per_request)]
        if per_request == 1:
            await stub.Predict(pb.PredictRequest(text=batch[0]), timeout=30)
        else:
            await stub.PredictBatch(pb.PredictBatchRequest(texts=batch), timeout=30)

    measured = await measure_calls(send, concurrency, seconds, warmup_s)
    await channel.close()
    return {"concurrency": concurrency, "texts_per_request": per_request, **load_row(*measured, per_request)}


def ort_in_process(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    """Tokenize + ONNX Runtime in this process on the same CPUs as the server.

    The ceiling is the best of several ways to use those CPUs: one run at a time with all
    threads, or one single-threaded run per CPU in parallel, each over run sizes 4..64 of
    length-sorted texts.
    """
    from runtime.repository import load_version
    from runtime.session import load_runner
    from serve.ops.settings import Settings

    model = load_version(args.model_repository, "imdb-lstm")
    tokenizer = model.load_tokenizer()

    def encode(batch: list[str]) -> list[list[int]]:
        return encode_texts(tokenizer, batch, model.max_tokens, model.head_tokens, model.unk_id)

    single_runners: dict[int, Any] = {}  # one session per thread count, reused across measurements

    def single_review_times(threads: int, pause_s: float = 0.0) -> list[float]:
        """Seconds per review, tokenize + run one text at a time for ``args.seconds``, ``pause_s`` apart."""
        if threads not in single_runners:
            single_runners[threads] = load_runner(model, Settings(model_repository=args.model_repository, workers=1,
                                                                  intra_op_threads=threads))
            single_runners[threads].warm_up(8)
        runner = single_runners[threads]
        times: list[float] = []
        deadline = time.perf_counter() + args.seconds
        while time.perf_counter() < deadline:
            if pause_s:
                time.sleep(pause_s)
            started = time.perf_counter()
            runner.run(*pad_batch(encode([texts[len(times) % len(texts)]]), model.pad_id))
            times.append(time.perf_counter() - started)
        return times

    singles = single_review_times(args.threads)
    # A lone review is a chain of small products: one thread is faster than several (the
    # server runs it so); reported beside the same-thread-count figure the issue compares to.
    singles_1 = single_review_times(1) if args.threads > 1 else singles
    # What a server sees at concurrency 1: the CPU idles while each answer travels. Pausing
    # 1 ms between reviews shows what idling alone costs on this machine, with no RPC at all.
    paused_1 = single_review_times(1, pause_s=0.001)
    configs = {}
    for callers, threads in ((1, args.threads), (args.threads, 1)):
        runner = load_runner(model, Settings(model_repository=args.model_repository, workers=callers,
                                             intra_op_threads=threads))
        runner.warm_up(8)
        for rows in (4, 8, 16, 32, 64):
            configs[f"{callers} run(s) x {threads} thread(s), {rows} rows"] = throughput(
                lambda chunk, runner=runner: runner.run(*pad_batch(encode(chunk), model.pad_id)), texts, tokenizer,
                model, rows, callers)
    best = max(configs, key=configs.get)
    return {"single_p50_ms": float(np.median(singles) * 1000), "single_texts_per_s": len(singles) / sum(singles),
            "single_p50_ms_1_thread": float(np.median(singles_1) * 1000),
            "single_p50_ms_1_thread_1ms_pauses": float(np.median(paused_1) * 1000),
            "ceiling_texts_per_s": configs[best], "ceiling_config": best, "configs": configs}


def throughput(score, texts: list[str], tokenizer, model, rows: int, callers: int = 1) -> float:
    """Texts/s scoring ``texts`` sorted by token length in chunks of ``rows``, ``callers`` at once (best of 2)."""
    from concurrent.futures import ThreadPoolExecutor

    lengths = [len(x) for x in encode_texts(tokenizer, texts, model.max_tokens, model.head_tokens, model.unk_id)]
    ordered = [texts[i] for i in np.argsort(lengths, kind="stable")]
    chunks = [ordered[start:start + rows] for start in range(0, len(ordered), rows)]
    best = 0.0
    with ThreadPoolExecutor(callers) as pool:
        for _ in range(2):
            started = time.perf_counter()
            list(pool.map(score, chunks))
            best = max(best, len(ordered) / (time.perf_counter() - started))
    return best


def torch_in_process(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    """PyTorch eager with the training model (bench only: serving never imports torch)."""
    import torch

    from runtime.repository import load_version
    from train.batching import pad_batch as pad_batch_torch
    from train.checkpoint import load_checkpoint, restore_model

    torch.set_num_threads(args.threads)
    model, tokenizer = restore_model(load_checkpoint(args.checkpoint))
    model.eval()
    meta = load_version(args.model_repository, "imdb-lstm")

    @torch.inference_mode()
    def score(chunk: list[str]) -> None:
        ids = encode_texts(tokenizer, chunk, meta.max_tokens, meta.head_tokens, meta.unk_id)
        input_ids, lengths = pad_batch_torch(ids, meta.pad_id)
        torch.sigmoid(model(input_ids, lengths))

    singles = []
    deadline = time.perf_counter() + args.seconds
    i = 0
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        score([texts[i % len(texts)]])
        singles.append(time.perf_counter() - started)
        i += 1
    return {"single_p50_ms": float(np.median(singles) * 1000), "single_texts_per_s": len(singles) / sum(singles),
            "batched_texts_per_s": max(throughput(score, texts, tokenizer, meta, rows) for rows in (16, 64)),
            "threads": args.threads}


def markdown(results: dict[str, Any]) -> str:
    ort_, torch_ = results["onnxruntime_in_process"], results.get("pytorch_in_process")
    lines = [f"Machine: {results['machine']}; load average before/after: "
             f"{results['load_average_before'][0]:.2f}/{results['load_average_after'][0]:.2f}; "
             f"CPUs used: {results['threads']}; "
             f"{results['texts']} IMDB test reviews; {results['seconds']} s per row; `{results['command']}`", "",
             "| load | server texts/s | p50 ms | p99 ms | vs in-process ceiling | server CPUs | load-generator CPUs |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in results["server"]:
        load = f"c={row['concurrency']}, {row['texts_per_request']} text(s)/request"
        lines.append(f"| {load} | {row['texts_per_s']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                     f"{row['texts_per_s'] / ort_['ceiling_texts_per_s']:.2f}x | {row.get('server_cpus', 0):.2f} | "
                     f"{row.get('loadgen_cpus', 0):.2f} |")
    lines += ["", "| in-process | single review p50 ms | single texts/s | best batched texts/s (length-sorted) |",
              "|---|---:|---:|---:|",
              f"| ONNX Runtime | {ort_['single_p50_ms']:.2f} | {ort_['single_texts_per_s']:.0f} | "
              f"{ort_['ceiling_texts_per_s']:.0f} |"]
    if torch_:
        lines.append(f"| PyTorch eager | {torch_['single_p50_ms']:.2f} | {torch_['single_texts_per_s']:.0f} | "
                     f"{torch_['batched_texts_per_s']:.0f} |")
    lines.append(f"\nONNX Runtime ceiling configuration: {ort_['ceiling_config']}. ONNX Runtime single review "
                 f"p50 on one thread: {ort_['single_p50_ms_1_thread']:.2f} ms back to back, "
                 f"{ort_['single_p50_ms_1_thread_1ms_pauses']:.2f} ms with 1 ms pauses between reviews.")
    rss = results["server_rss_mb"]
    lines += ["", f"Cold start (process start to SERVING): {results['cold_start_s']:.2f} s. Server RSS: "
              f"{rss['after_start']:.0f} MB after start, {rss['peak']:.0f} MB peak under load, "
              f"{rss['first_load_row_end']:.0f} MB after the first load row, {rss['end']:.0f} MB at the end."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_options(parser)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "best.pt")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per load row")
    parser.add_argument("--warmup-s", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--per-request", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    # The in-process figures tokenize as the server does (python -m serve turns the tokenizer's
    # thread pool off), which is also the faster setting in-process on this machine.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    texts = load_texts(args.data, args.texts, seed=0)
    load_before = os.getloadavg()
    proc, port, _, cold = start_server(args)
    sampler = RssSampler(proc.pid)
    rss_start = rss_mb(proc.pid)
    sampler.start()
    rows, first_row_end = [], None
    try:
        for per_request in args.per_request:
            for concurrency in args.concurrency:
                server_cpu, own_cpu, began = cpu_seconds(proc.pid), time.process_time(), time.monotonic()
                row = asyncio.run(drive(port, texts, concurrency, per_request, args.seconds, args.warmup_s))
                # Where the two CPUs went during the row (warm-up included): the server process,
                # this load generator, and what is left (idle, or other work on the machine).
                wall = time.monotonic() - began
                row["server_cpus"] = (cpu_seconds(proc.pid) - server_cpu) / wall
                row["loadgen_cpus"] = (time.process_time() - own_cpu) / wall
                print(json.dumps(row), flush=True)
                rows.append(row)
                first_row_end = first_row_end or rss_mb(proc.pid)
    finally:
        sampler.halt.set()
        sampler.join()
        rss_end = rss_mb(proc.pid)
        proc.terminate()
        proc.wait(30)
    results: dict[str, Any] = {
        "machine": machine(), "threads": args.threads, "texts": len(texts), "seconds": args.seconds,
        "max_batch_size": args.max_batch_size, "max_queue_delay_ms": args.max_queue_delay_ms,
        "command": "python bench/serve_bench.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cold_start_s": cold, "server": rows,
        "server_rss_mb": {"after_start": rss_start, "peak": max(mb for _, mb in sampler.samples),
                          "first_load_row_end": first_row_end, "end": rss_end,
                          "samples": [round(mb, 1) for _, mb in sampler.samples[::4]]},
        "server_exit_code": proc.returncode,
        "load_average_before": load_before,  # other work on the machine skews every figure alike
    }
    results["onnxruntime_in_process"] = ort_in_process(args, texts)
    if not args.no_torch:
        results["pytorch_in_process"] = torch_in_process(args, texts)
    results["load_average_after"] = os.getloadavg()
    write_results(args.out, "serve_bench", results, markdown(results))


if __name__ == "__main__":
    main()
