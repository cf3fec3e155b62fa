"""int8 texts/s with --local: one text per run (every path now) vs batches of 64 (--local before).

    python bench/int8_rows.py $IMDB_DATA      (docs/serving.md quotes its output)

1,000 IMDB test reviews, one ONNX Runtime thread, best of 3 alternating rounds.
"""

from __future__ import annotations

import sys
import time

from client.backends import LocalModel
from train.data import read_reviews


def main(data: str) -> None:
    texts = [r.text for r in read_reviews(data, ("test",))["test"][::25][:1000]]
    model = LocalModel("models/imdb-lstm", threads=1, batch_size=64, precision="int8")
    best = {1: 0.0, 64: 0.0}
    for _ in range(3):
        for rows in best:
            model.rows_per_run = rows
            started = time.perf_counter()
            model.score(texts)
            best[rows] = max(best[rows], len(texts) / (time.perf_counter() - started))
    print({f"rows_per_run={rows}": round(rate, 1) for rows, rate in best.items()})


if __name__ == "__main__":
    main(sys.argv[1])
