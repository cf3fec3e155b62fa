import tarfile

import pytest

from tests.conftest import fabricated_reviews, write_archive, write_folder
from train.data import DatasetError, read_reviews, stratified_split


def test_reads_archive_with_ids_ratings_labels(tiny_archive):
    data = read_reviews(tiny_archive)
    assert {split: len(items) for split, items in data.items()} == {"train": 24, "test": 24}
    first_pos = next(r for r in data["train"] if r.label == 1)
    assert (first_pos.id, first_pos.rating, first_pos.split) == (0, 9, "train")
    assert {r.rating for r in data["test"] if r.label == 0} == {2}


def test_folder_and_archive_agree(tmp_path, tiny_archive):
    folder = write_folder(tmp_path / "extracted", fabricated_reviews())
    assert read_reviews(folder) == read_reviews(tiny_archive)
    assert read_reviews(folder / "aclImdb", ("test",))["test"] == read_reviews(tiny_archive)["test"]


def test_corrupt_archive_is_a_clear_error(tmp_path, tiny_archive):
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(tiny_archive.read_bytes()[:300])
    with pytest.raises(DatasetError, match="cannot read archive .*truncated.tar.gz"):
        read_reviews(truncated)


def test_wrong_layout_is_a_clear_error(tmp_path):
    archive = write_archive(tmp_path / "other.tar.gz", {"reviews/good/1.txt": "fine"})
    with pytest.raises(DatasetError, match=r"no review under aclImdb/train"):
        read_reviews(archive)


def test_missing_path_names_it(tmp_path):
    with pytest.raises(DatasetError, match="no dataset at .*nowhere"):
        read_reviews(tmp_path / "nowhere")


def test_undecodable_review_names_the_member(tmp_path):
    archive = write_archive(tmp_path / "bad.tar.gz", {"aclImdb/train/pos/1_9.txt": b"\xff\xfe bad"})
    with pytest.raises(DatasetError, match="1_9.txt is not valid UTF-8"):
        read_reviews(archive, ("train",))


def test_not_a_tar_at_all(tmp_path):
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"this is not an archive")
    with pytest.raises(DatasetError):
        read_reviews(bogus)
    assert not tarfile.is_tarfile(bogus)


def test_stratified_split_is_seeded_and_balanced(tiny_archive):
    train = read_reviews(tiny_archive)["train"]
    keep, held = stratified_split(train, 0.25, seed=7)
    assert (keep, held) == stratified_split(train, 0.25, seed=7)
    assert sum(r.label for r in held) == len(held) / 2 == 3
    assert not {r.id for r in keep if r.label} & {r.id for r in held if r.label}
    assert stratified_split(train, 0.25, seed=8)[1] != held
