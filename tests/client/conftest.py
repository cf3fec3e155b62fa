"""Client fixtures: a tiny real model repository and review texts of varied lengths."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.tiny_repository import build_tiny_repository

WORDS = [
    "a", "wonderful", "moving", "film", "with", "great", "acting", "brilliant", "story", "funny", "loved", "it",
    "superb", "cast", "excellent", "dull", "boring", "mess", "awful", "terrible", "plot", "waste", "of", "time",
    "bad", "dialogue", "hated", "worst", "far", "too", "long",
]


def make_reviews(count: int, seed: int = 0) -> list[str]:
    """Reviews of 1..60 words (some with markup and non-ASCII), so batches need padding."""
    rng = random.Random(seed)
    reviews = []
    for i in range(count):
        words = rng.choices(WORDS, k=rng.randint(1, 60))
        if i % 7 == 0:
            words.insert(rng.randint(0, len(words)), "<br /><br />")
        if i % 11 == 0:
            words.append("très “bien”, naïve")
        reviews.append(" ".join(words))
    return reviews


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to a real (tiny) model version: ``<repo>/imdb-lstm/1``."""
    root = build_tiny_repository(tmp_path_factory.mktemp("client_repo"))
    return root / "imdb-lstm" / "1"


@pytest.fixture(scope="session")
def local_backend(tiny_model: Path):
    """One in-process backend for the whole session (one ORT thread: the machine is shared)."""
    from client.backends import LocalBackend

    backend = LocalBackend(tiny_model, threads=1, batch_size=16)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def reference(local_backend):
    """Probability of each text scored alone (batch of one): the ground truth for every path."""
    def score(texts: list[str]) -> list[float]:
        return [float(local_backend.local.probabilities([t])[0]) for t in texts]

    return score


class ServerThread:
    """A real ``serve.server`` on a free loopback port, running its asyncio loop in a thread."""

    def __init__(self, repository: Path, load: bool = True, **overrides: Any) -> None:
        from serve.settings import Settings

        self.settings = Settings(model_repository=repository, port=0, metrics_port=-1, intra_op_threads=1,
                                 inter_op_threads=1, grace_period_s=1.0, **overrides)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="client-test-server", daemon=True)
        self.thread.start()
        self.server, self.port = self.call(self._create())
        self.call(self.server.start())
        if load:
            self.load()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _create(self) -> tuple[Any, int]:
        from serve.server import create_server

        return create_server(self.settings)  # inside the loop: grpc.aio binds to the running loop

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def load(self) -> None:
        self.call(self.server.load())

    def close(self) -> None:
        self.call(self.server.stop(grace=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[ServerThread]:
    """A loaded server on the same tiny model as ``local_backend``."""
    running = ServerThread(tiny_model.parents[1])
    yield running
    running.close()
