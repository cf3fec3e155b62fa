"""Reliability benchmark (not a test): soak, overload and SIGKILL/restart against the shipped model.

    python bench/reliability_bench.py [--soak-seconds 60] [--clients 32] [--threads 2]
        [--scenarios soak overload restart] [--out DIR] [--server-args FLAG ...]

1. Soak: ``--clients`` closed-loop clients mixing both APIs (Predict, PredictBatch of 8,
   KServe ModelInfer of 4, two-message PredictStream; bench/load.py) for ``--soak-seconds``;
   requests, failures, p50/p99 latency, and server RSS at start, after warm-up (a quarter of
   the run) and at the end, with the growth from warm-up to the end.
2. Overload: a server with ``--queue`` texts of queue, ``--overload-clients`` clients each
   sending PredictBatch of 8 texts (far above capacity); refusals (RESOURCE_EXHAUSTED) and
   their latency, admitted requests and theirs, then one plain call right after.
3. SIGKILL and restart: ``--restart-clients`` threads of ``client.api.SentimentClient``
   (its default retry policy) call Predict; the server is killed with SIGKILL and
   restarted on the same port; time from kill to SERVING, failed calls, the longest call.

Servers are ``python -m serve`` on free loopback ports with ``--workers --threads`` and
``--server-args`` (bench/serve_bench.py's start_server); texts are IMDB test reviews (``--data``). Results:
bench/results/reliability.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import closed_loop, metric, percentiles_ms, rss_growth, summarize  # noqa: E402
from bench.machine import free_port, machine, write_results  # noqa: E402
from bench.serve_bench import RssSampler, add_server_options, load_texts, rss_mb, start_server  # noqa: E402

RESTART_RETRY = {"attempts": 10, "initial_backoff_s": 0.2, "max_backoff_s": 2.0}  # RetryPolicy() defaults, recorded


def server_args(args: argparse.Namespace, *extra: str) -> argparse.Namespace:
    """The namespace serve_bench.start_server reads, with extra ``python -m serve`` flags."""
    return argparse.Namespace(model_repository=args.model_repository, threads=args.threads,
                              max_batch_size=args.max_batch_size, max_queue_delay_ms=args.max_queue_delay_ms,
                              server_args=["--intra-op-threads", "1", *args.server_args, *extra])


def stop_server(proc) -> int:  # noqa: ANN001 - subprocess.Popen
    proc.terminate()
    return proc.wait(30)


def soak(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    proc, port, _, cold = start_server(server_args(args))
    sampler = RssSampler(proc.pid)
    try:
        start_mb = rss_mb(proc.pid)
        sampler.start()
        started = time.monotonic()
        outcomes = asyncio.run(closed_loop(f"127.0.0.1:{port}", texts, args.clients, args.soak_seconds,
                                           max_requests=1_000_000))
        wall = time.monotonic() - started
        sampler.halt.set()
        sampler.join()
    finally:
        sampler.halt.set()
        exit_code = stop_server(proc)
    summary = summarize(outcomes)
    memory = rss_growth(sampler.samples, started, warmup_s=args.soak_seconds / 4)
    return {"clients": args.clients, "seconds": wall, "cold_start_s": cold, **summary,
            "requests_per_s": len(outcomes) / wall,
            "by_kind": {kind: summarize([o for o in outcomes if o.kind == kind]) for kind in
                        sorted({o.kind for o in outcomes})},
            "rss_mb": {"start": start_mb, **memory,
                       "samples": [round(mb, 1) for _, mb in sampler.samples[::8]]},
            "server_exit_code": exit_code}


def overload(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    import grpc

    from protos.sentiment.v1 import sentiment_pb2 as pb
    from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc

    queue = str(args.queue)
    proc, port, metrics_port, _ = start_server(server_args(args, "--max-queue-size", queue,
                                                          "--max-texts-per-request", queue))
    try:
        outcomes = asyncio.run(closed_loop(f"127.0.0.1:{port}", texts, args.overload_clients, args.overload_seconds,
                                           max_requests=200_000, kinds=[("PredictBatch", 8)],
                                           pause_after_refusal_s=0.02))
        depth = metric(f"http://127.0.0.1:{metrics_port}/metrics", "sentiment_queue_depth")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            started = time.monotonic()
            try:
                pb_grpc.SentimentServiceStub(channel).Predict(pb.PredictRequest(text=texts[0]), timeout=30)
                after = "OK"
            except grpc.RpcError as exc:
                after = exc.code().name
            after_ms = (time.monotonic() - started) * 1000
    finally:
        exit_code = stop_server(proc)
    refusals = [o.details for o in outcomes if o.code == "RESOURCE_EXHAUSTED"]
    return {"queue_texts": args.queue, "clients": args.overload_clients, "texts_per_request": 8,
            "seconds": args.overload_seconds, **summarize(outcomes),
            "refusal_message_example": refusals[0] if refusals else None,
            "queue_depth_after": depth, "first_call_after": {"code": after, "ms": after_ms},
            "server_exit_code": exit_code}


def restart(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    import grpc

    from client.api import RetryPolicy, SentimentClient

    port = free_port()
    proc, _, _, _ = start_server(server_args(args), port)
    stop = threading.Event()
    calls: list[tuple[float, float, str]] = []  # (started, seconds, code)

    def caller(index: int) -> None:
        with SentimentClient(f"127.0.0.1:{port}", timeout_s=30, retry=RetryPolicy(**RESTART_RETRY)) as client:
            position = index
            while not stop.is_set() and len(calls) < 200_000:
                started = time.monotonic()
                try:
                    client.predict(texts[position % len(texts)])
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                calls.append((started, time.monotonic() - started, code))
                position += args.restart_clients

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(args.restart_clients)]
    second = None
    try:
        for thread in threads:
            thread.start()
        time.sleep(args.restart_phase_s)
        killed = time.monotonic()
        proc.kill()
        proc.wait(30)
        second, _, _, cold = start_server(server_args(args), port)
        serving = time.monotonic()
        time.sleep(args.restart_phase_s)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        stop_server(proc) if proc.poll() is None else None
        exit_code = stop_server(second) if second is not None else None
    codes: dict[str, int] = {}
    for _, _, code in calls:
        codes[code] = codes.get(code, 0) + 1
    across = [seconds for started, seconds, _ in calls if started < serving and started + seconds > killed]
    return {"clients": args.restart_clients, "retry_policy": RESTART_RETRY, "requests": len(calls), "codes": codes,
            "failed": sum(n for code, n in codes.items() if code != "OK"),
            "kill_to_serving_s": serving - killed, "restart_cold_start_s": cold,
            "calls_across_the_outage": len(across), "longest_call_s": max(s for _, s, _ in calls),
            "latency": percentiles_ms([s for _, s, code in calls if code == "OK"]),
            "server_exit_code": exit_code}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _soak_row(s: dict[str, Any]) -> str:
    rss = s["rss_mb"]
    return (f"| soak: {s['clients']} clients, {s['seconds']:.0f} s, both APIs | {s['requests']} | {s['failed']} | "
            f"{_ms(s['ok_latency']['p50_ms'])} | {_ms(s['ok_latency']['p99_ms'])} | {s['requests_per_s']:.0f} req/s; "
            f"RSS {rss['start']:.0f} MB at start, {rss['after_warmup_mb']:.0f} after warm-up, {rss['end_mb']:.0f} "
            f"at the end ({100 * rss['growth']:+.1f}%), peak {rss['peak_mb']:.0f} |")


def _overload_row(o: dict[str, Any]) -> str:
    return (f"| overload: {o['clients']} clients x {o['texts_per_request']} texts, queue {o['queue_texts']} texts, "
            f"{o['seconds']:.0f} s | {o['requests']} | {o['failed']} refused | {_ms(o['ok_latency']['p50_ms'])} | "
            f"{_ms(o['ok_latency']['p99_ms'])} | refusals (RESOURCE_EXHAUSTED): p50 "
            f"{_ms(o['refusal_latency']['p50_ms'])} ms, p99 {_ms(o['refusal_latency']['p99_ms'])} ms; codes "
            f"{o['codes']}; first call after: {o['first_call_after']['code']} in "
            f"{o['first_call_after']['ms']:.1f} ms |")


def _restart_row(r: dict[str, Any]) -> str:
    return (f"| SIGKILL + restart, same port: {r['clients']} SentimentClient threads | {r['requests']} | "
            f"{r['failed']} | {_ms(r['latency']['p50_ms'])} | {_ms(r['latency']['p99_ms'])} | kill to SERVING "
            f"{r['kill_to_serving_s']:.2f} s; {r['calls_across_the_outage']} calls spanned it, longest "
            f"{r['longest_call_s']:.2f} s |")


def markdown(results: dict[str, Any]) -> str:
    """The scenarios that ran, as a Markdown table under a line on the machine and command."""
    lines = [f"Machine: {results['machine']}; load average before/after: {results['load_average_before'][0]:.2f}/"
             f"{results['load_average_after'][0]:.2f}; server workers: {results['threads']} x 1 thread; "
             f"{results['texts']} IMDB test reviews; {results['when']}; `{results['command']}`", "",
             "| scenario | requests | failed | p50 ms | p99 ms | notes |", "|---|---:|---:|---:|---:|---|"]
    lines += [row(results[name]) for name, row in (("soak", _soak_row), ("overload", _overload_row),
                                                   ("restart", _restart_row)) if name in results]
    if "soak" in results:
        lines += ["", "Soak by request kind (p99 ms): " + ", ".join(
            f"{kind} {_ms(v['ok_latency']['p99_ms'])}" for kind, v in results["soak"]["by_kind"].items()) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_options(parser)
    parser.add_argument("--clients", type=int, default=32, help="soak clients")
    parser.add_argument("--soak-seconds", type=float, default=60.0)
    parser.add_argument("--queue", type=int, default=16, help="overload server's --max-queue-size (texts)")
    parser.add_argument("--overload-clients", type=int, default=64)
    parser.add_argument("--overload-seconds", type=float, default=10.0)
    parser.add_argument("--restart-clients", type=int, default=8)
    parser.add_argument("--restart-phase-s", type=float, default=5.0, help="load before the kill and after SERVING")
    parser.add_argument("--scenarios", nargs="+", default=["soak", "overload", "restart"],
                        choices=("soak", "overload", "restart"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    texts = load_texts(args.data, args.texts, seed=0)
    results: dict[str, Any] = {
        "machine": machine(), "threads": args.threads, "texts": len(texts),
        "command": "python bench/reliability_bench.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_before": os.getloadavg(),  # other work on the machine skews every figure
    }
    for name, scenario in (("soak", soak), ("overload", overload), ("restart", restart)):
        if name not in args.scenarios:
            continue
        results[name] = scenario(args, texts)
        print(name, json.dumps({k: v for k, v in results[name].items() if k not in ("by_kind", "rss_mb")}),
              flush=True)
    results["load_average_after"] = os.getloadavg()
    write_results(args.out, "reliability", results, markdown(results))


if __name__ == "__main__":
    main()
