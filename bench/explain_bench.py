"""Explain vs Predict cost on ~250-word IMDB test reviews (issue target: Explain <= 3x Predict).

    python bench/explain_bench.py --model-repository REPO [--reviews 30] [--rounds 3]

``REPO`` must serve a version exported with a step graph (``steps`` in metadata.json). Two
measurements, same reviews (test split, ``--words`` +- 10%, seeded sample):

1. In process, one ONNX Runtime thread: CPU time (``thread_time``) of Predict's work for one
   review (tokenize, run the whole graph) against Explain's (split sentences, tokenize with
   offsets, running pass and batched effect pass on the step graph), best of ``--rounds``
   per review. CPU time rather than wall time: the machine may be shared.
2. Through the server (``python -m serve``, one worker, one thread, one Explain worker): lone
   ``Predict`` and ``Explain`` calls, alternated review by review, ``--rounds`` times; the
   server process's CPU seconds per call (from /proc) and the client's median latency.

Results: a Markdown table on stdout and JSON + Markdown under ``--out`` (default bench/results/).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import machine, write_results  # noqa: E402
from bench.serve_bench import add_server_options, cpu_seconds, start_server  # noqa: E402


def reviews_of_about(data: Path, words: int, count: int, seed: int) -> list[str]:
    """``count`` test reviews of ``words`` +- 10% words, seeded sample."""
    from train.data import read_reviews

    pool = [r.text for r in read_reviews(data, ("test",))["test"] if abs(len(r.text.split()) - words) <= words / 10]
    return random.Random(seed).sample(pool, min(count, len(pool)))


def best_cpu(call: Any, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        began = time.thread_time()
        call()
        times.append(time.thread_time() - began)
    return min(times)


def in_process(repository: Path, texts: list[str], rounds: int) -> dict[str, Any]:
    """Per review: Predict's and Explain's CPU seconds on one thread, and the sentence count."""
    import onnxruntime as ort

    from runtime.explain import explain_ids
    from runtime.preprocessing import encode_texts, encode_with_offsets, pad_batch
    from runtime.repository import load_version, open_session
    from runtime.sentences import split_sentences
    from runtime.step_runner import open_step_runner

    model = load_version(repository, "imdb-lstm")
    tokenizer = model.load_tokenizer()
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    whole, runner = open_session(model, "fp32", options), open_step_runner(model, options)
    if runner is None:
        raise SystemExit(f"{model.path}: no step graph; export one (docs/model-repository.md)")

    def predict(text: str) -> float:
        ids = encode_texts(tokenizer, [text], model.max_tokens, model.head_tokens, model.unk_id)
        input_ids, lengths = pad_batch(ids, model.pad_id)
        return float(whole.run(None, {"input_ids": input_ids, "lengths": lengths})[0][0])

    def explain(text: str) -> Any:
        ids, offsets = encode_with_offsets(tokenizer, text)
        return explain_ids(runner, ids, offsets, split_sentences(text), max_tokens=model.max_tokens,
                           head_tokens=model.head_tokens, unk_id=model.unk_id)

    rows = []
    for text in texts:
        explanation = explain(text)
        assert abs(explanation.probability - predict(text)) <= 1e-5
        rows.append({"words": len(text.split()), "sentences": len(explanation.sentences),
                     "tokens_read": explanation.tokens_read,
                     "predict_cpu_ms": 1e3 * best_cpu(lambda t=text: predict(t), rounds),
                     "explain_cpu_ms": 1e3 * best_cpu(lambda t=text: explain(t), rounds)})
    return summary(rows, "predict_cpu_ms", "explain_cpu_ms")


def summary(rows: list[dict[str, Any]], predict_key: str, explain_key: str) -> dict[str, Any]:
    ratios = [r[explain_key] / r[predict_key] for r in rows]
    return {"reviews": len(rows), "median_sentences": statistics.median(r["sentences"] for r in rows),
            f"median_{predict_key}": statistics.median(r[predict_key] for r in rows),
            f"median_{explain_key}": statistics.median(r[explain_key] for r in rows),
            "ratio_of_totals": sum(r[explain_key] for r in rows) / sum(r[predict_key] for r in rows),
            "median_ratio": statistics.median(ratios), "max_ratio": max(ratios), "rows": rows}


def through_server(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    """Lone Predict and Explain calls, alternated; server CPU seconds per call and client latency."""
    import grpc

    from protos.sentiment.v1 import sentiment_pb2 as pb
    from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc

    proc, port, _, _ = start_server(args)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.SentimentServiceStub(channel)
        calls = {"predict": lambda t: stub.Predict(pb.PredictRequest(text=t), timeout=30),
                 "explain": lambda t: stub.Explain(pb.ExplainRequest(text=t), timeout=30)}
        for text in texts[:3]:  # warm both paths (the step graph opens on first use)
            calls["predict"](text), calls["explain"](text)
        cpu = {name: 0.0 for name in calls}
        latency: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for text in texts:
                for name, call in calls.items():
                    before, began = cpu_seconds(proc.pid), time.perf_counter()
                    call(text)
                    latency[name].append(time.perf_counter() - began)
                    cpu[name] += cpu_seconds(proc.pid) - before
        channel.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    n = args.rounds * len(texts)
    out = {f"{name}_server_cpu_ms_per_call": 1e3 * cpu[name] / n for name in calls}
    out.update({f"{name}_p50_latency_ms": 1e3 * statistics.median(latency[name]) for name in calls})
    out["cpu_ratio"] = cpu["explain"] / cpu["predict"]
    out["p50_latency_ratio"] = out["explain_p50_latency_ms"] / out["predict_p50_latency_ms"]
    out["calls_each"] = n
    return out


def markdown(results: dict[str, Any]) -> str:
    local, served = results["in_process"], results["server"]
    return "\n".join([
        f"Explain vs Predict, {local['reviews']} IMDB test reviews of {results['words']} +- 10% words "
        f"(median {local['median_sentences']} sentences); {results['machine']}",
        "",
        "| measure | Predict | Explain | Explain / Predict |",
        "|---|---:|---:|---:|",
        f"| in-process CPU per review, 1 thread (median, ms) | {local['median_predict_cpu_ms']:.2f} | "
        f"{local['median_explain_cpu_ms']:.2f} | {local['median_ratio']:.2f} (totals {local['ratio_of_totals']:.2f},"
        f" worst {local['max_ratio']:.2f}) |",
        f"| server CPU per lone call (ms) | {served['predict_server_cpu_ms_per_call']:.2f} | "
        f"{served['explain_server_cpu_ms_per_call']:.2f} | {served['cpu_ratio']:.2f} |",
        f"| client latency per lone call (p50, ms) | {served['predict_p50_latency_ms']:.2f} | "
        f"{served['explain_p50_latency_ms']:.2f} | {served['p50_latency_ratio']:.2f} |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_options(parser)
    parser.add_argument("--words", type=int, default=250, help="review length in words (+- 10%%)")
    parser.add_argument("--reviews", type=int, default=30, help="reviews sampled")
    parser.add_argument("--rounds", type=int, default=3, help="repeats per review")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    args.threads = 1  # one worker: lone calls, as the target is per review
    args.server_args = ["--intra-op-threads", "1", "--repository-poll-s", "0", *args.server_args]
    texts = reviews_of_about(args.data, args.words, args.reviews, args.seed)
    results = {"machine": machine(), "words": args.words, "rounds": args.rounds,
               "command": "python " + " ".join(sys.argv),
               "in_process": in_process(args.model_repository, texts, args.rounds),
               "server": through_server(args, texts)}
    write_results(args.out, "explain_bench", results, markdown(results))


if __name__ == "__main__":
    main()
