"""Batch-scoring benchmarks (not a test): throughput of each backend, and memory as files grow.

    python bench/score_bench.py throughput [--model models/imdb-lstm/1] [--threads 2]
    python bench/score_bench.py memory --rows 100000 1000000 [--model models/imdb-lstm/1]

``throughput`` scores the 25,000 IMDB test reviews (a Parquet file made from the labelled
archive) with ``--local``, ``--server`` (a real ``python -m serve`` subprocess on a free
loopback port) and ``--ray`` (a local Ray cluster), next to the in-process ceiling: the
same ONNX Runtime session scoring the same texts with no file I/O at all (all 25,000 sorted
by length, so padding is minimal). Every backend gets the same CPU threads.

``memory`` writes CSV files of N rows sampled (with replacement, seeded) from the 50,000
labelled reviews, runs ``python -m client score`` on each as a subprocess, and reports its
peak resident memory (``ru_maxrss``) with RSS samples over the run: flat memory means the
peak does not grow with N.

Generated files live under ``--workdir`` (default /tmp/score_bench), never in the repository.
Results are printed as a Markdown table and written to ``<workdir>/results-<kind>.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from bench.machine import DEFAULT_DATA, free_port, machine  # noqa: E402


def test_split_parquet(data: Path, workdir: Path, limit: int | None = None) -> Path:
    """The 25,000 test reviews (or the first ``limit``) as Parquet (id, review, sentiment), made once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from train.data import read_reviews

    path = workdir / (f"imdb_test-{limit}.parquet" if limit else "imdb_test.parquet")
    if not path.exists():
        reviews = read_reviews(data, ("test",))["test"][:limit]
        table = pa.table({"id": [f"{r.id}_{r.rating}" for r in reviews], "review": [r.text for r in reviews],
                          "sentiment": ["positive" if r.label else "negative" for r in reviews]})
        pq.write_table(table, path, row_group_size=4096)
    return path


def ceiling(model: str, texts: list[str], threads: int, batch_size: int) -> dict[str, Any]:
    from client.backends import LocalModel

    local = LocalModel(model, threads, batch_size)
    local.score(texts[:256])  # warm-up
    started = time.perf_counter()
    local.score(texts)
    seconds = time.perf_counter() - started
    return {"backend": "in-process ceiling", "texts": len(texts), "seconds": seconds,
            "texts_per_s": len(texts) / seconds}


def run_local(model: str, source: Path, workdir: Path, threads: int, batch_size: int) -> dict[str, Any]:
    from client.backends import LocalBackend
    from client.scoring import ScoreOptions, score_file

    backend = LocalBackend(model, threads=threads, batch_size=batch_size)
    started = time.perf_counter()
    summary = score_file(source, workdir / "local.parquet", backend, ScoreOptions(progress=False))
    return _result("score --local", summary, time.perf_counter() - started)


def run_server(model: str, source: Path, workdir: Path, threads: int, batch_size: int,
               concurrency: int) -> dict[str, Any]:
    from client.api import RetryPolicy, SentimentClient
    from client.backends import ServerBackend, split_model_path
    from client.scoring import ScoreOptions, score_file

    repository, name, version = split_model_path(model)
    port = free_port()
    command = [sys.executable, "-m", "serve", "--model-repository", str(repository), "--model", name,
               "--version", str(version or "latest"), "--port", str(port), "--metrics-port", "-1",
               "--http-port", "0", "--intra-op-threads", str(threads), "--max-batch-size", str(batch_size)]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with SentimentClient(f"127.0.0.1:{port}", retry=RetryPolicy(attempts=30, max_backoff_s=1)) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.health() == "SERVING":
                        break
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {server.stderr.read() if server.stderr else ''}")
                time.sleep(0.2)
        backend = ServerBackend(f"127.0.0.1:{port}", batch_size=batch_size, concurrency=concurrency)
        started = time.perf_counter()
        summary = score_file(source, workdir / "server.parquet", backend, ScoreOptions(progress=False))
        seconds = time.perf_counter() - started
        backend.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    return _result(f"score --server (concurrency {concurrency})", summary, seconds)


def run_ray(model: str, source: Path, workdir: Path, threads: int, batch_size: int) -> dict[str, Any]:
    import ray

    from client.ray_scoring import score_with_ray
    from client.scoring import ScoreOptions

    # One single-threaded actor per CPU, plus one logical CPU for Ray's read and write tasks.
    ray.init(num_cpus=threads + 1, include_dashboard=False, log_to_driver=False)
    try:
        started = time.perf_counter()
        summary = score_with_ray(source, workdir / "ray.parquet", model, ScoreOptions(progress=False),
                                 actors=threads, threads=1, batch_size=batch_size)
        seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
    return _result(f"score --ray ({threads} actors x 1 thread)", summary, seconds)


def _result(name: str, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    evaluation = summary.get("evaluation") or {}
    return {"backend": name, "texts": summary["rows"], "seconds": seconds, "texts_per_s": summary["rows"] / seconds,
            "accuracy": evaluation.get("accuracy")}


def throughput(args: argparse.Namespace) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    source = test_split_parquet(args.data, args.workdir, args.limit)
    texts = pq.read_table(source, columns=["review"]).column("review").to_pylist()
    results = [ceiling(args.model, texts, args.threads, args.batch_size)]
    del texts
    runs = {"local": lambda: run_local(args.model, source, args.workdir, args.threads, args.batch_size),
            "server": lambda: run_server(args.model, source, args.workdir, args.threads, args.batch_size,
                                         args.concurrency),
            "ray": lambda: run_ray(args.model, source, args.workdir, args.threads, args.batch_size)}
    for name in args.backends:
        results.append(runs[name]())
        print(json.dumps(results[-1]), flush=True)
    top = results[0]["texts_per_s"]
    for result in results:
        result["vs_ceiling"] = result["texts_per_s"] / top
    return results


def synthetic_csv(data: Path, workdir: Path, rows: int, seed: int = 0) -> Path:
    """``rows`` reviews sampled with replacement from the 50,000 labelled ones."""
    path = workdir / f"reviews-{rows}.csv"
    if path.exists():
        return path
    from train.data import read_reviews

    pool = [r for split in read_reviews(data).values() for r in split]
    rng = random.Random(seed)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "review", "sentiment"])
        for i in range(rows):
            review = pool[rng.randrange(len(pool))]
            writer.writerow([i, review.text, "positive" if review.label else "negative"])
    tmp.rename(path)
    return path


def peak_rss(command: list[str], sample_every_s: float = 1.0) -> dict[str, Any]:
    """Run ``command``; its peak RSS (ru_maxrss) and RSS samples over time, in MiB."""
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    samples: list[tuple[float, float]] = []
    while True:
        # wait4 (not Popen.poll, which would reap the child first) gives the child's ru_maxrss.
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            text = Path(f"/proc/{proc.pid}/status").read_text()
            kib = int(next(line.split()[1] for line in text.splitlines() if line.startswith("VmRSS:")))
            samples.append((round(time.monotonic() - started, 1), round(kib / 1024, 1)))
        except (OSError, StopIteration):
            pass
        time.sleep(sample_every_s)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with status {proc.returncode}")
    return {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "seconds": time.monotonic() - started,
            "rss_samples_mib": samples}


def memory(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for rows in args.rows:
        source = synthetic_csv(args.data, args.workdir, rows)
        output = args.workdir / f"scored-{rows}.csv"
        command = [sys.executable, "-m", "client", "score", str(source), "--output", str(output), "--local",
                   args.model, "--threads", str(args.threads), "--batch-size", str(args.batch_size),
                   "--precision", args.precision, "--no-progress"]
        measured = peak_rss(command)
        samples = [mib for _, mib in measured.pop("rss_samples_mib")]
        tail = samples[len(samples) // 10:] or samples  # after start-up
        result = {"rows": rows, "input_mib": round(source.stat().st_size / 2**20, 1), **measured,
                  "rows_per_s": rows / measured["seconds"], "rss_min_after_startup_mib": min(tail, default=None),
                  "rss_max_after_startup_mib": max(tail, default=None), "command": " ".join(command)}
        results.append(result)
        print(json.dumps(result), flush=True)
        output.unlink(missing_ok=True)
        if not args.keep:
            source.unlink()
    return results


def table(results: list[dict[str, Any]]) -> str:
    keys = [k for k in results[0] if k not in ("command",)]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for result in results:
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) and v < 10 else
                                        f"{v:.1f}" if isinstance(v, float) else str(v)
                                        for v in (result[k] for k in keys)) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("throughput", "memory"), help="which benchmark")
    parser.add_argument("--model", default=str(ROOT / "models" / "imdb-lstm" / "1"), help="model version path")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("IMDB_DATA", DEFAULT_DATA)),
                        help="labelled aclImdb archive or folder")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/score_bench"), help="generated files")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="CPU threads per backend")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per model run / request")
    parser.add_argument("--concurrency", type=int, default=4, help="server requests in flight")
    parser.add_argument("--backends", nargs="+", default=["local", "server", "ray"], choices=("local", "server", "ray"))
    parser.add_argument("--limit", type=int, default=None, help="throughput: first N test reviews (smoke runs)")
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="memory: file sizes")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="memory: model graph")
    parser.add_argument("--keep", action="store_true", help="memory: keep the generated inputs")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args.workdir.mkdir(parents=True, exist_ok=True)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    results = throughput(args) if args.kind == "throughput" else memory(args)
    # Other work on a shared machine skews every figure: the load averages say whether it ran.
    report = {"kind": args.kind, "machine": machine(), "model": args.model, "threads": args.threads,
              "loadavg_before": load_before, "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
              "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]), "results": results}
    (args.workdir / f"results-{args.kind}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\n{report['machine']}; model {args.model}; {args.threads} thread(s); load average "
          f"{' '.join(report['loadavg_before'])} before, {' '.join(report['loadavg_after'])} after\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
