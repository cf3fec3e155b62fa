"""Reading the Large Movie Review Dataset (aclImdb) and carving the validation split.

The official layout is ``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``, plus the 50,000
unlabelled reviews ``aclImdb/train/unsup/<id>_0.txt`` of the full archive (read as the
pseudo-split ``"unsup"``, label :data:`UNLABELLED`). It is read
either from the extracted folder or straight from the ``.tar.gz``, streaming members one
by one, so nothing is unpacked to disk.
"""

from __future__ import annotations

import random
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "test")
UNSUP = "unsup"  # the unlabelled reviews of aclImdb/train/unsup/ (full archive only)
UNLABELLED = -1
LABELS = {"neg": 0, "pos": 1, UNSUP: UNLABELLED}
_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")


class DatasetError(ValueError):
    """The data path is missing, unreadable, or not in the aclImdb layout."""


@dataclass(frozen=True)
class Review:
    """One review: ``label`` is 1 for positive, 0 for negative, -1 (unlabelled) in split "unsup"."""

    id: int
    rating: int
    label: int
    text: str
    split: str


def _parse_member(name: str) -> tuple[str, int, int, int] | None:
    match = _MEMBER.search(name.replace("\\", "/"))
    if match is None:
        return None
    split, polarity, review_id, rating = match.groups()
    if polarity == UNSUP:
        split = UNSUP if split == "train" else None
    return (split, int(review_id), int(rating), LABELS[polarity]) if split else None


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{where} is not valid UTF-8 ({exc}); is the archive damaged?") from exc


def _iter_archive(path: Path, splits: set[str]) -> Iterator[Review]:
    try:
        with tarfile.open(path, mode="r:*") as archive:  # members read in order, one pass
            for member in archive:
                parsed = _parse_member(member.name) if member.isfile() else None
                if parsed is None or parsed[0] not in splits:
                    continue
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                text = _decode(handle.read(), f"{path}:{member.name}")
                yield Review(parsed[1], parsed[2], parsed[3], text, parsed[0])
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"cannot read archive {path}: {exc}. Re-download it "
                           "(python -m train download) or point --data at the extracted folder.") from exc


def _iter_folder(root: Path, splits: set[str]) -> Iterator[Review]:
    base = root / "aclImdb" if (root / "aclImdb").is_dir() else root
    folders = [(split, polarity) for split in sorted(splits - {UNSUP}) for polarity in ("neg", "pos")]
    folders += [("train", UNSUP)] if UNSUP in splits else []
    for split, polarity in folders:
        for file in sorted((base / split / polarity).glob("*.txt")):
            parsed = _parse_member(f"aclImdb/{split}/{polarity}/{file.name}")
            if parsed is not None:
                text = _decode(file.read_bytes(), str(file))
                yield Review(parsed[1], parsed[2], parsed[3], text, parsed[0])


def read_reviews(path: str | Path, splits: tuple[str, ...] = SPLITS) -> dict[str, list[Review]]:
    """Read the requested splits (``"train"``, ``"test"``, ``"unsup"``) from an aclImdb folder or archive.

    Returns ``{split: [Review, ...]}`` sorted by (label, id) so the order does not depend on
    the archive's member order. Raises :class:`DatasetError` naming the path when it is
    missing, damaged, or holds no review in the expected layout.
    """
    path = Path(path)
    wanted = set(splits)
    if not path.exists():
        raise DatasetError(f"no dataset at {path}: pass --data (or set IMDB_DATA) to the "
                           "aclImdb folder or aclImdb_v1.tar.gz; `python -m train download` fetches it")
    reviews = _iter_folder(path, wanted) if path.is_dir() else _iter_archive(path, wanted)
    by_split: dict[str, list[Review]] = {split: [] for split in splits}
    for review in reviews:
        by_split[review.split].append(review)
    for split, items in by_split.items():
        if not items and split == UNSUP:
            raise DatasetError(f"{path} holds no unlabelled review under aclImdb/train/unsup/; language-model "
                               "pretraining needs the full archive aclImdb_v1.tar.gz (`python -m train download`), "
                               "not the labelled-only one")
        if not items:
            raise DatasetError(f"{path} holds no review under aclImdb/{split}/{{pos,neg}}/<id>_<rating>.txt; "
                               "is it the Large Movie Review Dataset?")
        items.sort(key=lambda r: (r.label, r.id))
    return by_split


def stratified_split(reviews: list[Review], fraction: float, seed: int) -> tuple[list[Review], list[Review]]:
    """Split into (keep, held_out) with ``fraction`` of each label held out, reproducibly."""
    rng = random.Random(seed)
    keep: list[Review] = []
    held: list[Review] = []
    for label in sorted({r.label for r in reviews}):
        group = [r for r in reviews if r.label == label]
        rng.shuffle(group)
        cut = round(len(group) * fraction)
        held.extend(group[:cut])
        keep.extend(group[cut:])
    return keep, held


def stratified_subset(reviews: list[Review], count: int, seed: int) -> list[Review]:
    """A reproducible, label-balanced subset of ``count`` reviews (all if fewer)."""
    if count >= len(reviews):
        return list(reviews)
    _, subset = stratified_split(reviews, count / len(reviews), seed)
    return subset
