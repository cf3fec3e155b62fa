from pathlib import Path

import pytest

from export.pipeline import ExportOptions, export_version


@pytest.fixture(scope="session")
def exported(smoke_run: Path, imdb_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke checkpoint exported end to end into a fresh repository; returns the version folder."""
    repository = tmp_path_factory.mktemp("repository")
    options = ExportOptions(checkpoint=smoke_run / "best.pt", repository=repository, name="imdb-lstm",
                            version=None, data=imdb_data, eval_limit=1000, parity_limit=500, bench_texts=200,
                            threads=1, max_batch_size=256)
    return export_version(options)


@pytest.fixture(scope="session")
def test_reviews(imdb_data: Path):
    from train.data import read_reviews, stratified_subset

    return stratified_subset(read_reviews(imdb_data, ("test",))["test"], 1000, seed=3)
