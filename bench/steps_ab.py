"""A/B of ``--batching whole`` against ``--batching steps`` (not a test): same model, texts and load,
with a plain per-request server (bench/plain_server.py) and in-process padded batches as references.

    python bench/steps_ab.py [--rounds 2] [--seconds 5] [--rows 1x1 8x1 32x1 1x8 8x8]
                             [--modes whole steps plain steps-one-loop] [--server-args --step-tokens 32 ...]

Each round starts a fresh server per mode (the order alternates between rounds, so drift in
the machine's load hits every mode alike), drives the load rows (``CxN``: concurrency C, N texts
per request; ``Predict`` for N = 1, else ``PredictBatch``) with serve_bench's closed loop, and
reads the server's metrics: for steps, rows per step, step size, padding share and joins per
step. Reports each mode's best round per row, the steps/whole and steps/plain ratios of
texts/s, and for single-text rows the ratio to in-process ONNX Runtime on the same texts in
padded batches of the row's concurrency, in arrival order (one session, every thread; measured
between rounds, with no server running). The model repository must hold a version with a step
graph (``models/`` does from version 2), else the steps server falls back to whole and says so
in its log.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import free_port, machine, write_results  # noqa: E402
from bench.serve_bench import (  # noqa: E402
    add_server_options,
    cpu_seconds,
    drive,
    load_texts,
    start_server,
    wait_serving,
)
from bench.serve_probe import scrape, step_figures  # noqa: E402

MODES = ("whole", "steps", "plain", "steps-one-loop")
# python -m serve flags of each server mode (plain is bench/plain_server.py). steps-one-loop is the
# step path's design before 2026-12-08: one step loop whose session has every thread.
SERVER_FLAGS = {"whole": ["--batching", "whole"], "steps": ["--batching", "steps"],
                "steps-one-loop": ["--batching", "steps", "--workers", "1"]}


def start_plain(args: argparse.Namespace) -> tuple[subprocess.Popen, int, None, float]:
    """bench/plain_server.py on a free port, every CPU's thread in each run (ONNX Runtime's default)."""
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "plain_server.py"), "--model-repository",
                             str(args.model_repository), "--port", str(port)], cwd=ROOT,
                            env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(ROOT)))
    return proc, port, None, wait_serving(proc, port, started)


def one_server(args: argparse.Namespace, mode: str, texts: list[str]) -> dict[str, dict[str, Any]]:
    """Every load row against one fresh server in ``mode``."""
    if mode == "plain":
        proc, port, metrics_port, cold = start_plain(args)
    else:
        server_args = argparse.Namespace(**{**vars(args), "server_args": [*SERVER_FLAGS[mode], *args.server_args]})
        proc, port, metrics_port, cold = start_server(server_args)
    rows: dict[str, dict[str, Any]] = {}
    try:
        for row in args.rows:
            concurrency, per_request = (int(x) for x in row.split("x"))
            before_metrics = scrape(metrics_port) if metrics_port else {}
            cpu, began = cpu_seconds(proc.pid), time.monotonic()
            result = asyncio.run(drive(port, texts, concurrency, per_request, args.seconds, args.warmup_s))
            result["server_cpus"] = (cpu_seconds(proc.pid) - cpu) / (time.monotonic() - began)
            if metrics_port:
                after = scrape(metrics_port)
                result["server_side"] = step_figures({k: after[k] - before_metrics.get(k, 0.0) for k in after})
            rows[row] = result
    finally:
        proc.terminate()
        proc.wait(30)
    rows["cold_start_s"] = {"seconds": cold}
    return rows


def in_process_padded(args: argparse.Namespace, texts: list[str], batch: int, seconds: float) -> float:
    """Texts/s of tokenize + one ONNX Runtime run per ``batch`` texts taken in arrival order (padded to the
    longest), one session with every usable CPU's thread, for about ``seconds``."""
    import onnxruntime as ort

    from runtime.preprocessing import encode_texts, pad_batch
    from runtime.repository import load_version, open_session

    model = load_version(args.model_repository, "imdb-lstm")
    tokenizer = model.load_tokenizer()
    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    session = open_session(model, "fp32", options)
    done, position, began = 0, 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        chunk = [texts[(position + k) % len(texts)] for k in range(batch)]
        position += batch
        input_ids, lengths = pad_batch(encode_texts(tokenizer, chunk, model.max_tokens, model.head_tokens,
                                                    model.unk_id), model.pad_id)
        session.run(["probability"], {"input_ids": input_ids, "lengths": lengths})
        done += batch
    return done / (time.perf_counter() - began)


def table(best: dict[str, dict[str, dict[str, Any]]], rows: list[str], padded: dict[str, float]) -> str:
    def rate(mode: str, row: str) -> float:
        return best[mode][row]["texts_per_s"] if mode in best else float("nan")

    lines = ["| load (concurrency x texts/request) | whole texts/s | steps texts/s | plain texts/s | steps / whole | "
             "steps / plain | in-process padded texts/s | steps / padded | whole p99 ms | steps p99 ms | "
             "steps rows/step | steps K | steps padding | steps, one loop texts/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        w, s = best["whole"][row], best["steps"][row]
        side = {"rows_per_step": float("nan"), "step_tokens_mean": float("nan"), "padding_share": float("nan"),
                **s.get("server_side", {})}
        reference = padded.get(row, float("nan"))
        lines.append(f"| {row} | {rate('whole', row):.0f} | {rate('steps', row):.0f} | {rate('plain', row):.0f} | "
                     f"{rate('steps', row) / rate('whole', row):.2f} | {rate('steps', row) / rate('plain', row):.2f} | "
                     f"{reference:.0f} | {rate('steps', row) / reference:.2f} | {w['p99_ms']:.1f} | "
                     f"{s['p99_ms']:.1f} | {side['rows_per_step']:.1f} | {side['step_tokens_mean']:.0f} | "
                     f"{side['padding_share']:.3f} | {rate('steps-one-loop', row):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_options(parser)
    parser.add_argument("--rows", nargs="+", default=["1x1", "8x1", "32x1", "1x8", "8x8"])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="servers to compare (whole and steps always run)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--name", default="steps_ab", help="results file stem under --out")
    args = parser.parse_args()

    texts = load_texts(args.data, args.texts, seed=0)
    modes = [m for m in MODES if m in {"whole", "steps", *args.modes}]
    singles = sorted({int(row.split("x")[0]) for row in args.rows if row.endswith("x1")})
    rounds: list[dict[str, Any]] = []
    padded_rounds: list[dict[str, float]] = []
    for index in range(args.rounds):
        order = modes if index % 2 == 0 else modes[::-1]
        rounds.append({mode: one_server(args, mode, texts) for mode in order})
        padded_rounds.append({f"{c}x1": in_process_padded(args, texts, c, args.seconds) for c in singles})
    best = {mode: {row: max((r[mode][row] for r in rounds), key=lambda x: x["texts_per_s"]) for row in args.rows}
            for mode in modes}
    padded = {row: max(r[row] for r in padded_rounds) for row in padded_rounds[0]}
    markdown = table(best, args.rows, padded)
    write_results(args.out, args.name, {"machine": machine(), "command": "python bench/steps_ab.py " +
                                        " ".join(sys.argv[1:]), "rounds": rounds, "best": best,
                                        "in_process_padded": padded_rounds}, markdown)


if __name__ == "__main__":
    main()
