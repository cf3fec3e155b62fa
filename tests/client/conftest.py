"""Client fixtures: a tiny real model repository and review texts of varied lengths."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.server_thread import ServerThread, make_settings
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
        return [float(local_backend.local.score([t]).probabilities[0]) for t in texts]

    return score


def start_server(repository: Path, load: bool = True, **overrides: Any) -> ServerThread:
    """A real server on the tiny model (no metrics port: client tests do not read it)."""
    return ServerThread(make_settings(repository, metrics_port=-1, grace_period_s=1.0, **overrides), load=load)


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[ServerThread]:
    """A loaded server on the same tiny model as ``local_backend``."""
    running = start_server(tiny_model.parents[1])
    yield running
    running.close()
