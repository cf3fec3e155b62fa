"""A/B of ``--batching whole`` against ``--batching steps`` (not a test): same model, texts and load.

    python bench/steps_ab.py [--rounds 2] [--seconds 5] [--rows 1x1 8x1 32x1 1x8 8x8]
                             [--server-args --step-tokens 32 ...]

Each round starts a fresh server per mode (the order alternates between rounds, so drift in
the machine's load hits both alike), drives the load rows (``CxN``: concurrency C, N texts
per request; ``Predict`` for N = 1, else ``PredictBatch``) with serve_bench's closed loop, and
reads the server's metrics: for steps, rows per step, step size, padding share and joins per
step. Reports each mode's best round per row and the steps/whole ratio of texts/s. The model
repository must hold a version with a step graph (``models/`` does from version 2), else the
steps server falls back to whole and says so in its log.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import machine, write_results  # noqa: E402
from bench.serve_bench import add_server_options, cpu_seconds, drive, load_texts, start_server  # noqa: E402
from bench.serve_probe import scrape, step_figures  # noqa: E402

MODES = ("whole", "steps")


def one_server(args: argparse.Namespace, mode: str, texts: list[str]) -> dict[str, dict[str, Any]]:
    """Every load row against one fresh server in ``mode``."""
    server_args = argparse.Namespace(**{**vars(args), "server_args": ["--batching", mode, *args.server_args]})
    proc, port, metrics_port, cold = start_server(server_args)
    rows: dict[str, dict[str, Any]] = {}
    try:
        for row in args.rows:
            concurrency, per_request = (int(x) for x in row.split("x"))
            before_metrics, cpu, began = scrape(metrics_port), cpu_seconds(proc.pid), time.monotonic()
            result = asyncio.run(drive(port, texts, concurrency, per_request, args.seconds, args.warmup_s))
            result["server_cpus"] = (cpu_seconds(proc.pid) - cpu) / (time.monotonic() - began)
            after = scrape(metrics_port)
            result["server_side"] = step_figures({k: after[k] - before_metrics.get(k, 0.0) for k in after})
            rows[row] = result
    finally:
        proc.terminate()
        proc.wait(30)
    rows["cold_start_s"] = {"seconds": cold}
    return rows


def table(best: dict[str, dict[str, dict[str, Any]]], rows: list[str]) -> str:
    lines = ["| load (concurrency x texts/request) | whole texts/s | steps texts/s | steps / whole | whole p99 ms | "
             "steps p99 ms | steps rows/step | steps K | steps padding |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        w, s = best["whole"][row], best["steps"][row]
        side = {"rows_per_step": float("nan"), "step_tokens_mean": float("nan"), "padding_share": float("nan"),
                **s.get("server_side", {})}
        lines.append(f"| {row} | {w['texts_per_s']:.0f} | {s['texts_per_s']:.0f} | "
                     f"{s['texts_per_s'] / w['texts_per_s']:.2f} | {w['p99_ms']:.1f} | {s['p99_ms']:.1f} | "
                     f"{side['rows_per_step']:.1f} | {side['step_tokens_mean']:.0f} | {side['padding_share']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_options(parser)
    parser.add_argument("--rows", nargs="+", default=["1x1", "8x1", "32x1", "1x8", "8x8"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    texts = load_texts(args.data, args.texts, seed=0)
    rounds: list[dict[str, Any]] = []
    for index in range(args.rounds):
        order = MODES if index % 2 == 0 else MODES[::-1]
        rounds.append({mode: one_server(args, mode, texts) for mode in order})
    best = {mode: {row: max((r[mode][row] for r in rounds), key=lambda x: x["texts_per_s"]) for row in args.rows}
            for mode in MODES}
    markdown = table(best, args.rows)
    write_results(args.out, "steps_ab", {"machine": machine(), "command": "python bench/steps_ab.py " +
                                         " ".join(sys.argv[1:]), "rounds": rounds, "best": best}, markdown)


if __name__ == "__main__":
    main()
