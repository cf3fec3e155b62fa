"""``python -m export.compare``: in-process throughput of model versions, side by side in one run.

Each version scores the same review texts with its own tokenizer and truncation; rounds
interleave the versions so drift in machine load hits all of them alike (the best round of
each is reported, as in ``metadata.json``'s throughput). Tokenization is not timed: this is the
model's cost per text, which is what a change of architecture changes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from export.measure import cpu_session, score_onnx
from runtime.preprocessing import encode_texts
from runtime.repository import load_version
from train.data import read_reviews, stratified_subset


def compare(versions: list[Path], texts: list[str], precisions: tuple[str, ...], threads: int,
            rounds: int = 3) -> dict[str, dict[str, float]]:
    """``{version folder: {precision: texts/s}}`` for each version folder (``<repo>/<name>/<n>``)."""
    runs = []
    for folder in versions:
        folder = folder.resolve()
        version = load_version(folder.parent.parent, folder.parent.name, int(folder.name))
        ids = encode_texts(version.load_tokenizer(), texts, version.max_tokens, version.head_tokens, version.unk_id)
        for precision in precisions:
            runs.append((str(folder), precision, cpu_session(str(version.model_path(precision)), threads), ids,
                         version.pad_id))
    best: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for folder, precision, session, ids, pad_id in runs:
            started = time.perf_counter()
            score_onnx(session, ids, pad_id)
            rate = len(ids) / (time.perf_counter() - started)
            best.setdefault(folder, {})[precision] = max(best.get(folder, {}).get(precision, 0.0), rate)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.compare", description=__doc__)
    parser.add_argument("versions", nargs="+", type=Path, help="version folders, e.g. models/imdb-lstm/1")
    parser.add_argument("--data", required=True, type=Path, help="aclImdb folder or .tar.gz (test reviews)")
    parser.add_argument("--texts", type=int, default=1000, help="test reviews to score (stratified, seed 0)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--precision", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    args = parser.parse_args(argv)
    reviews = stratified_subset(read_reviews(args.data, ("test",))["test"], args.texts, seed=0)
    texts = [reviews[i].text for i in np.random.default_rng(0).permutation(len(reviews))]
    result = compare(args.versions, texts, tuple(args.precision), args.threads)
    print(json.dumps({"texts": len(texts), "threads": args.threads, "batch_size": 64, "texts_per_s": result},
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
