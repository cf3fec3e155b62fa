"""The server under NVIDIA's perf_analyzer, the load tester Triton users already run (not a test).

    python bench/perf_analyzer_bench.py [--concurrency 1 8 32] [--seconds 6] [--streaming]
                                        [--server-args ...]

Starts ``python -m serve`` on the shipped model, writes ``--texts`` IMDB test reviews as
perf_analyzer input data (one review per request, drawn in turn), and runs perf_analyzer
over gRPC at each concurrency. Its client-side throughput and latencies come with the
server's own queue and compute split, which it reads from our ``ModelStatistics``. Then,
as ``serve_bench.py`` does, in-process ONNX Runtime on the same texts and CPUs gives the
ceiling each row is compared with. A second opinion on ``serve_bench.py``'s figures, from a
C++ client nobody here wrote.

perf_analyzer ships in the ``tritonclient`` wheel (x86-64 Linux); it loads the CUDA runtime
from the ``nvidia-cuda-runtime-cu12`` wheel (both in the ``dev`` extra) and Debian's
``libb64-0d``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import machine, write_results  # noqa: E402

PERF_ANALYZER = Path(sys.executable).parent / "perf_analyzer"


def perf_analyzer_env() -> dict[str, str]:
    """This environment, with the CUDA runtime library of the nvidia-cuda-runtime wheel on the loader's path."""
    env = dict(os.environ)
    try:
        import nvidia.cuda_runtime
    except ImportError:
        return env
    lib = [str(Path(path) / "lib") for path in nvidia.cuda_runtime.__path__]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*lib, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    return env


def input_data(texts: list[str], path: Path) -> Path:
    """perf_analyzer's JSON input: one request of one review per entry."""
    path.write_text(json.dumps({"data": [{"text": {"content": [text], "shape": [1]}} for text in texts]}))
    return path


def run(address: str, data: Path, concurrency: int, seconds: float, streaming: bool, csv_path: Path) -> dict:
    """One perf_analyzer measurement at ``concurrency``; its CSV row (microseconds, infer/s) as a dict."""
    command = [str(PERF_ANALYZER), "-m", "imdb-lstm", "-i", "grpc", "-u", address, "--input-data", str(data),
               "--concurrency-range", str(concurrency), "-p", str(int(seconds * 1000)), "--max-trials", "5",
               "-f", str(csv_path), *(["--streaming"] if streaming else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60 + 10 * seconds, env=perf_analyzer_env())
    if done.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    with csv_path.open() as handle:
        return next(csv.DictReader(handle))


def markdown(results: dict) -> str:
    lines = [f"Machine: {results['machine']}; {results['texts']} IMDB test reviews, one per request; "
             f"`{results['command']}`", "",
             "| concurrency | texts/s | vs in-process ceiling | p50 ms | p99 ms | server queue ms | "
             "server compute ms (input + infer + output) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    ceiling = results["onnxruntime_in_process"]["ceiling_texts_per_s"]
    for row in results["rows"]:
        compute = sum(float(row[k]) for k in ("Server Compute Input", "Server Compute Infer", "Server Compute Output"))
        lines.append(f"| {row['Concurrency']} | {float(row['Inferences/Second']):.0f} | "
                     f"{float(row['Inferences/Second']) / ceiling:.2f}x | "
                     f"{float(row['p50 latency']) / 1000:.2f} | {float(row['p99 latency']) / 1000:.2f} | "
                     f"{float(row['Server Queue']) / 1000:.2f} | {compute / 1000:.2f} |")
    lines.append(f"\nIn-process ceiling: {ceiling:.0f} texts/s "
                 f"({results['onnxruntime_in_process']['ceiling_config']}).")
    return "\n".join(lines)


def main() -> None:
    from bench.serve_bench import add_server_options, load_texts, ort_in_process, start_server

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_options(parser)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=6.0, help="perf_analyzer's measurement window")
    parser.add_argument("--streaming", action="store_true", help="ModelStreamInfer instead of ModelInfer")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # in-process figures tokenize as the server does
    if not PERF_ANALYZER.exists():
        sys.exit(f"no perf_analyzer beside {sys.executable}: install the dev extra (tritonclient ships it)")

    texts = load_texts(args.data, args.texts, seed=0)
    proc, port, _, _ = start_server(args)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as scratch:
            data = input_data(texts, Path(scratch) / "reviews.json")
            for concurrency in args.concurrency:
                row = run(f"127.0.0.1:{port}", data, concurrency, args.seconds, args.streaming,
                          Path(scratch) / f"c{concurrency}.csv")
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        proc.terminate()
        proc.wait(30)
    results = {"machine": machine(), "texts": len(texts), "streaming": args.streaming,
               "command": " ".join(["python bench/perf_analyzer_bench.py", *sys.argv[1:]]),
               "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows,
               "onnxruntime_in_process": ort_in_process(args, texts)}
    write_results(args.out, "perf_analyzer" + ("_streaming" if args.streaming else ""), results, markdown(results))


if __name__ == "__main__":
    main()
