"""Serve fixtures: a tiny real model repository and real servers on free loopback ports.

Each server runs its own asyncio loop in a daemon thread, so tests talk to it with plain
blocking gRPC stubs (and tritonclient, in a subprocess) exactly as outside clients would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from serve.preprocessing import encode_texts, pad_batch
from serve.repository import load_version, open_session
from serve.server import Server, create_server
from serve.settings import Settings
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


def make_settings(repository: Path, **overrides: Any) -> Settings:
    """Settings for a test server: free ports, one ORT thread, small limits where asked."""
    base = Settings(model_repository=repository, port=0, metrics_port=0, intra_op_threads=1,
                    inter_op_threads=1, grace_period_s=2.0)
    return dataclasses.replace(base, **overrides)




class ServerThread:
    """A real ``serve.server`` on its own event loop thread."""

    def __init__(self, settings: Settings, load: bool = True) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-server", daemon=True)
        self.thread.start()
        self.server: Server
        self.port: int
        self.server, self.port = self.call(self._create())
        self.call(self.server.start())
        if load:
            self.call(self.server.load())
        self.channel = grpc.insecure_channel(self.address)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _create(self) -> tuple[Server, int]:
        return create_server(self.settings)  # inside the loop: grpc.aio binds to the running loop

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        """Run ``coroutine`` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.channel.close()
        self.call(self.server.stop(grace=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


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
