"""Serve fixtures: a tiny real model repository and real servers on free loopback ports.

The server harness itself lives in tests/fixtures/server_thread.py (shared with client tests).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from serve.preprocessing import encode_texts, pad_batch
from serve.repository import load_version, open_session
from tests.fixtures.server_thread import ServerThread, make_settings
from tests.fixtures.tiny_repository import build_tiny_repository

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the machine is shared: no extra pools in tests

REVIEWS = [
    "A wonderful, moving film.<br /><br />Great acting and a brilliant story!",
    "dull",
    "Waste of time: bad dialogue, I hated it, and the ending was worse than the worst film of the year. " * 3,
    "brilliant and funny, I loved it",
    "the worst film I have seen this year, boring and far too long",
    "très “bien”, naïve et drôle",
    "<br />",
    "great fun, a delight to watch with friends " * 6,
]


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real model repository (fp32 and int8 graphs) shared by every serve test."""
    return build_tiny_repository(tmp_path_factory.mktemp("serve_repo"), int8=True)


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerThread]:
    """A loaded, SERVING server with default limits, one per test module."""
    running = ServerThread(make_settings(repository))
    yield running
    running.close()


@pytest.fixture(scope="session")
def reference(repository: Path):
    """P(positive) of each text scored alone, in-process (batch of one): the ground truth."""
    return alone_scorer(repository)


def alone_scorer(repository: Path):
    """``score(texts, precision='fp32')``: P(positive) of each text scored alone by ``repository``'s whole graph."""
    model = load_version(repository, "imdb-lstm")
    tokenizer = model.load_tokenizer()
    sessions = {}

    def score(texts: list[str], precision: str = "fp32") -> np.ndarray:
        if precision not in sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            sessions[precision] = open_session(model, precision, options)
        ids = encode_texts(tokenizer, texts, model.max_tokens, model.head_tokens, model.unk_id)
        out = []
        for row in ids:
            input_ids, lengths = pad_batch([row], model.pad_id)
            out.append(sessions[precision].run(None, {"input_ids": input_ids, "lengths": lengths})[0][0])
        return np.array(out, dtype=np.float32)

    return score
