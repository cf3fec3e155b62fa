"""known_word_fraction over the IMDB test reviews with the shipped tokenizer (no model run needed).

    python bench/known_words.py $IMDB_DATA      (docs/model-repository.md quotes its output)
"""

from __future__ import annotations

import sys

import numpy as np

from runtime.preprocessing import Vocabulary, encode_for_model
from runtime.repository import load_version
from train.data import read_reviews


def main(data: str) -> None:
    model = load_version("models", "imdb-lstm")
    tokenizer = model.load_tokenizer()
    vocabulary = Vocabulary.of(tokenizer, model.unk_id)
    texts = [r.text for r in read_reviews(data, ("test",))["test"]]
    inputs = encode_for_model(tokenizer, vocabulary, texts, model.max_tokens, model.head_tokens)
    known = np.array([x.known_word_fraction for x in inputs if x is not None])
    print({"reviews": len(known), "median": round(float(np.median(known)), 4),
           "p1": round(float(np.percentile(known, 1)), 4), "min": round(float(known.min()), 4),
           "below_0.8": int((known < 0.8).sum())})


if __name__ == "__main__":
    main(sys.argv[1])
