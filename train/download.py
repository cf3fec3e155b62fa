"""Downloading the official aclImdb archive: resumable, sha256-verified, with progress."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

OFFICIAL_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
OFFICIAL_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """The download failed or its checksum does not match."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, partial: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``partial``, restarting cleanly if the server ignores Range."""
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # already complete (or bigger than the file): start over
            partial.unlink()
            return _fetch(url, partial, timeout)
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"cannot reach {url}: {exc}; check the network or pass --url to a mirror") from exc
    with response:
        resumed = offset and response.status == 206
        if not resumed:
            offset = 0
        total = response.headers.get("Content-Length")
        total = int(total) + offset if total else None
        with partial.open("ab" if resumed else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=partial.name.removesuffix(".part")) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                bar.update(len(block))


def download(url: str, destination: Path, sha256: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``destination``, resuming a ``.part`` file, and verify its sha256.

    A finished file with the right checksum is kept as is. A checksum mismatch deletes the
    partial file and raises :class:`DownloadError`.
    """
    destination = Path(destination)
    if destination.exists() and sha256_of(destination) == sha256:
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    _fetch(url, partial, timeout)
    actual = sha256_of(partial)
    if actual != sha256:
        partial.unlink()
        raise DownloadError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}; "
                            "the partial file was deleted, run the command again")
    os.replace(partial, destination)
    return destination
