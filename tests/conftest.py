"""Fixtures shared by every test folder: the real IMDB archive, fabricated archives, a smoke model."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "aclImdb_v1.tar.gz"

# Tests share two cores with whatever else runs: keep every library to explicit thread counts.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def imdb_data() -> Path:
    """The real aclImdb archive, with its unlabelled reviews (env IMDB_DATA, else ../shared/data/)."""
    path = Path(os.environ.get("IMDB_DATA", DEFAULT_DATA))
    if not path.exists():
        pytest.fail(f"IMDB data not found: looked at {path} (set IMDB_DATA to the aclImdb folder or "
                    f"aclImdb_v1.tar.gz; `python -m train download` fetches it)")
    return path


POSITIVE = ["a wonderful, moving film<br /><br />great acting", "brilliant and funny, loved it",
            "superb story, excellent cast", "great fun, a delight to watch"]
NEGATIVE = ["a dull, boring mess<br />awful acting", "terrible plot and worse dialogue",
            "waste of time, bad and boring", "awful film, I hated it"]


def fabricated_reviews(per_label: int = 12) -> dict[str, str]:
    """Archive member name -> text, in the official layout, for train and test."""
    members = {}
    for split in ("train", "test"):
        for polarity, texts, rating in (("pos", POSITIVE, 9), ("neg", NEGATIVE, 2)):
            for i in range(per_label):
                text = f"{texts[i % len(texts)]} review {i}"
                members[f"aclImdb/{split}/{polarity}/{i}_{rating}.txt"] = text
    return members


def write_archive(path: Path, members: dict[str, str | bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in members.items():
            data = text.encode("utf-8") if isinstance(text, str) else text
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def write_folder(root: Path, members: dict[str, str]) -> Path:
    for name, text in members.items():
        file = root / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_archive(tmp_path_factory.mktemp("tiny") / "aclImdb_tiny.tar.gz", fabricated_reviews())


@pytest.fixture(scope="session")
def smoke_run(imdb_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke-preset training run on the real data (about half a minute); returns its folder."""
    import torch

    from train.config import preset
    from train.pipeline import run_training

    out = tmp_path_factory.mktemp("smoke_run")
    run_training(imdb_data, out, preset("smoke", threads=2), torch.device("cpu"), resume=False)
    return out


@pytest.fixture(scope="session")
def trained_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SentimentLSTM trained on templated reviews, exported with its step graph (tests/fixtures)."""
    from tests.fixtures.trained_repository import build_trained_repository

    return build_trained_repository(tmp_path_factory.mktemp("trained_repo"))
