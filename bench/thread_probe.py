"""Where a lone review's and the step scheduler's time goes (not a test): the in-process figures
behind docs/serving.md's step-batching notes.

    python bench/thread_probe.py [--texts 300]

1. One review at a time through the whole graph: 1 thread, or 2 threads with ONNX Runtime's
   spinning on, on with ``session.force_spinning_stop``, and off; back to back and sparse (one
   review every 20 ms), with the process's CPU per review and its CPU in the second after.
2. The step scheduler alone (no gRPC, texts tokenized beforehand), 8 and 32 closed-loop clients,
   on one session with 1 or 2 threads: texts/s and CPUs used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import DEFAULT_DATA  # noqa: E402
from bench.serve_bench import load_texts  # noqa: E402
from runtime.preprocessing import encode_texts, pad_batch  # noqa: E402
from runtime.repository import load_version, open_session  # noqa: E402
from runtime.step_runner import open_step_runner  # noqa: E402
from serve.engine.scheduler import StepPolicy, StepScheduler  # noqa: E402


def options(threads: int, spin: bool, stop: bool = False) -> ort.SessionOptions:
    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    o.add_session_config_entry("session.force_spinning_stop", "1" if stop else "0")
    return o


def lone_reviews(model, ids: list[list[int]]) -> None:
    for threads, spin, stop in ((1, False, False), (2, False, False), (2, True, False), (2, True, True)):
        session = open_session(model, "fp32", options(threads, spin, stop))

        def run(x: list[int], session: ort.InferenceSession = session) -> None:
            input_ids, lengths = pad_batch([x], model.pad_id)
            session.run(None, {"input_ids": input_ids, "lengths": lengths})

        for x in ids[:10]:
            run(x)
        cpu, wall = time.process_time(), time.perf_counter()
        for x in ids:
            run(x)
        back = (time.perf_counter() - wall) / len(ids) * 1e3
        cpu = (time.process_time() - cpu) / len(ids) * 1e3
        idle = time.process_time()
        time.sleep(1.0)
        idle = time.process_time() - idle
        latencies, sparse_cpu = [], time.process_time()
        for x in ids[:50]:
            began = time.perf_counter()
            run(x)
            latencies.append(time.perf_counter() - began)
            time.sleep(0.02)
        sparse_cpu = (time.process_time() - sparse_cpu) / 50 * 1e3
        print(f"{threads} thread(s), spin {spin}, stop {stop}: back to back {back:.2f} ms ({cpu:.2f} ms CPU) per "
              f"review, CPU in the second after {idle:.3f} s; sparse p50 {np.median(latencies) * 1e3:.2f} ms, "
              f"{sparse_cpu:.2f} ms CPU per review")


async def closed_loop(scheduler: StepScheduler, ids: list[np.ndarray], clients: int, seconds: float) -> float:
    done, stop = 0, time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal done
        n = i
        while time.perf_counter() < stop:
            await scheduler.submit([ids[(n * 37) % len(ids)]])
            n, done = n + clients, done + 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    await scheduler.close()
    return done / seconds


def scheduler_alone(model, ids: list[list[int]], seconds: float) -> None:
    arrays = [np.asarray(x, dtype=np.int64) for x in ids]
    for threads in (1, 2):
        for clients in (8, 32):
            runner = open_step_runner(model, options(threads, spin=False))
            scheduler = StepScheduler(runner, list, policy=StepPolicy(32, 32), max_queue_size=10_000)
            cpu, wall = time.process_time(), time.perf_counter()
            rate = asyncio.run(closed_loop(scheduler, arrays, clients, seconds))
            cpus = (time.process_time() - cpu) / (time.perf_counter() - wall)
            print(f"scheduler alone, one {threads}-thread session, {clients} clients: {rate:.0f} texts/s, "
                  f"{cpus:.2f} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("IMDB_DATA", DEFAULT_DATA)))
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    model = load_version(args.model_repository, "imdb-lstm")
    tokenizer = model.load_tokenizer()
    texts = load_texts(args.data, args.texts, seed=0)
    ids = encode_texts(tokenizer, texts, model.max_tokens, model.head_tokens, model.unk_id)
    lone_reviews(model, ids)
    scheduler_alone(model, ids, args.seconds)


if __name__ == "__main__":
    main()
