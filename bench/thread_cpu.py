"""Per-thread CPU of a server under closed-loop load (not a test): where the server's CPU goes, by thread.

    python bench/thread_cpu.py [--concurrency 32] [--per-request 1] [--seconds 8]
                               [--server-args --batching steps --workers 1 --intra-op-threads 2]

Starts ``python -m serve`` (bench/serve_bench.py's flags), warms it for 2 s, then drives the
load and reads every server thread's CPU time from ``/proc/<pid>/task/*/stat`` before and
after: prints texts/s, p99, the server's and this load generator's CPUs, and each busy thread's
CPU (CPU-seconds per second, busiest first; Python 3.11 does not name its threads for the OS,
so a thread is known by its share: the step loops and workers are the busiest, the event loop
next, then the tokenizing executor threads). A thread at 1.0 runs all the time; a step loop
well under 1.0 at full load is waiting (for the GIL, its other intra-op thread, or work).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serve_bench import add_server_options, cpu_seconds, drive, load_texts, start_server  # noqa: E402


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each thread of process ``pid``, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_options(parser)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--per-request", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    texts = load_texts(args.data, args.texts, seed=0)
    proc, port, _, _ = start_server(args)
    try:
        asyncio.run(drive(port, texts, args.concurrency, args.per_request, 2.0, 0.5))
        threads, server, client, began = (thread_cpu_seconds(proc.pid), cpu_seconds(proc.pid), time.process_time(),
                                          time.monotonic())
        row = asyncio.run(drive(port, texts, args.concurrency, args.per_request, args.seconds, 0.0))
        wall = time.monotonic() - began
        after = thread_cpu_seconds(proc.pid)
        server, client = (cpu_seconds(proc.pid) - server) / wall, (time.process_time() - client) / wall
    finally:
        proc.terminate()
        proc.wait(30)
    busy = sorted(((after[t] - threads.get(t, 0.0)) / wall for t in after), reverse=True)
    print(f"{args.concurrency} clients x {args.per_request} texts, server {' '.join(args.server_args) or 'defaults'}: "
          f"{row['texts_per_s']:.0f} texts/s, p99 {row['p99_ms']:.1f} ms; server {server:.2f} CPUs "
          f"({1000 * server / row['texts_per_s']:.2f} ms per text), load generator {client:.2f} CPUs")
    print("server threads, CPUs, busiest first:", " ".join(f"{u:.2f}" for u in busy if u >= 0.01))


if __name__ == "__main__":
    main()
