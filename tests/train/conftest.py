"""Fixtures for the training tests: a small slice of the real full archive, with unlabelled reviews."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_archive
from train.data import UNSUP, read_reviews

TRAIN_PER_LABEL, TEST_PER_LABEL, UNSUP_REVIEWS = 4000, 500, 1500


@pytest.fixture(scope="session")
def imdb_slice(imdb_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .tar.gz in the official layout with the first reviews of each folder of the real archive.

    Enough for the smoke presets (train 6,000 + validation 1,000, test 1,000, 1,500 unlabelled),
    and quick to read again. Needs the full archive (with train/unsup/): set IMDB_DATA to it.
    """
    reviews = read_reviews(imdb_data, ("train", "test", UNSUP))
    members = {}
    for split, per_label in (("train", TRAIN_PER_LABEL), ("test", TEST_PER_LABEL)):
        for label, folder in ((0, "neg"), (1, "pos")):
            for review in [r for r in reviews[split] if r.label == label][:per_label]:
                members[f"aclImdb/{split}/{folder}/{review.id}_{review.rating}.txt"] = review.text
    for review in reviews[UNSUP][:UNSUP_REVIEWS]:
        members[f"aclImdb/train/unsup/{review.id}_0.txt"] = review.text
    return write_archive(tmp_path_factory.mktemp("imdb_slice") / "aclImdb_slice.tar.gz", members)
