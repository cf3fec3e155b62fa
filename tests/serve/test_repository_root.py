"""The repository root holds: symlinks out of it, odd version folder names, what errors reveal (issue 15).

Real repositories on disk (the tiny fixture model), real servers on loopback for the paths a
client reaches: KServe RepositoryIndex, ModelAdmin ReloadModel, Predict.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protos.inference import grpc_predict_v2_pb2 as kpb
from protos.inference import grpc_predict_v2_pb2_grpc as kpb_grpc
from protos.sentiment.v1 import admin_pb2 as apb
from protos.sentiment.v1 import admin_pb2_grpc as apb_grpc
from runtime.repository import (
    METADATA_FILE,
    PRECISION_FILES,
    TOKENIZER_FILE,
    RepositoryError,
    list_versions,
    load_version,
    open_session,
)
from serve.grpc.kserve_extensions import repository_index
from serve.lifecycle.reload import TRIGGER_ADMIN
from serve.ops.errors import ModelNotFound
from tests.fixtures.server_thread import ServerThread, make_settings
from tests.fixtures.tiny_repository import NAME, build_tiny_repository, write_metadata

TIMEOUT = 10.0
TOKEN = "tok-repository-root-0123456789"
HEX_DIGEST = re.compile(r"\b[0-9a-f]{64}\b")


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Versions 1 and 2 of the tiny model (different weights), to copy or link from."""
    root = tmp_path_factory.mktemp("root_templates")
    for version in (1, 2):
        build_tiny_repository(root, version=version, seed=version)
    return root


@pytest.fixture
def repo(templates: Path, tmp_path: Path) -> Path:
    """``tmp_path/repo`` with version 1 only; ``tmp_path/outside`` is a sibling folder, not in the root."""
    root = tmp_path / "repo"
    (root / NAME).mkdir(parents=True)
    shutil.copytree(templates / NAME / "1", root / NAME / "1")
    shutil.copy(templates / NAME / "config.pbtxt", root / NAME)
    (tmp_path / "outside").mkdir()
    return root


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.txt"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def running(repo: Path, token_file: Path) -> Iterator[ServerThread]:
    server = ServerThread(make_settings(repo, auth_token_file=token_file, repository_poll_s=0))
    yield server
    server.close()


AUTH = (("authorization", f"Bearer {TOKEN}"),)


def index_of(server: ServerThread) -> list[tuple[str, str]]:
    reply = kpb_grpc.GRPCInferenceServiceStub(server.channel).RepositoryIndex(
        kpb.RepositoryIndexRequest(), timeout=TIMEOUT, metadata=AUTH)
    return [(m.name, m.version) for m in reply.models]


def reload_over_grpc(server: ServerThread, version: int) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        apb_grpc.ModelAdminStub(server.channel).ReloadModel(apb.ReloadModelRequest(version=version),
                                                            timeout=TIMEOUT, metadata=AUTH)
    return caught.value


# -- symlinks out of the root


def test_a_version_folder_linked_outside_the_root_is_neither_listed_nor_served(
        repo: Path, templates: Path, running: ServerThread) -> None:
    outside = repo.parent / "outside"
    shutil.copytree(templates / NAME / "2", outside / "2")
    (repo / NAME / "2").symlink_to(outside / "2", target_is_directory=True)
    assert list_versions(repo, NAME) == [1]
    with pytest.raises(RepositoryError, match=r"version folder imdb-lstm/2 resolves outside the model repository"):
        load_version(repo, NAME, 2)
    assert load_version(repo, NAME).version == 1
    assert index_of(running) == [(NAME, "1")]
    with pytest.raises(ModelNotFound, match="resolves outside"):
        running.call(running.server.reloader.reload(2, TRIGGER_ADMIN))
    refused = reload_over_grpc(running, 2)
    assert refused.code() == grpc.StatusCode.NOT_FOUND and "resolves outside" in refused.details()
    assert str(outside) not in refused.details() and str(repo) not in refused.details()
    assert running.server.core.model.version == 1


def test_a_model_folder_linked_outside_the_root_is_refused(repo: Path, running: ServerThread) -> None:
    elsewhere = repo.parent / "outside" / "model"
    for version in ("1", "123", "4567"):
        (elsewhere / version).mkdir(parents=True)
    (repo / "linked").symlink_to(elsewhere, target_is_directory=True)
    (repo / "procs").symlink_to("/proc", target_is_directory=True)  # numbered folders: process ids
    for name in ("linked", "procs"):
        with pytest.raises(RepositoryError, match=f"model folder {name} resolves outside"):
            list_versions(repo, name)
    assert [(e.name, e.version) for e in repository_index(repo, (NAME, 1), ready_only=False)] == [(NAME, "1")]
    assert index_of(running) == [(NAME, "1")]


@pytest.mark.parametrize("filename", [TOKENIZER_FILE, PRECISION_FILES["fp32"], METADATA_FILE])
def test_a_file_linked_outside_the_root_is_refused(repo: Path, templates: Path, filename: str) -> None:
    version_dir = repo / NAME / "2"
    shutil.copytree(templates / NAME / "2", version_dir)
    outside = repo.parent / "outside" / filename
    shutil.move(version_dir / filename, outside)  # same bytes: size and checksum would pass
    (version_dir / filename).symlink_to(outside)
    with pytest.raises(RepositoryError, match=f"file imdb-lstm/2/{re.escape(filename)} resolves outside"):
        load_version(repo, NAME, 2)


def test_links_that_stay_inside_the_root_are_followed(repo: Path, templates: Path) -> None:
    version_dir = repo / NAME / "2"
    shutil.copytree(templates / NAME / "2", version_dir)
    shared = repo / "shared-files"
    shared.mkdir()
    shutil.move(version_dir / TOKENIZER_FILE, shared / TOKENIZER_FILE)
    (version_dir / TOKENIZER_FILE).symlink_to(Path("..", "..", "shared-files", TOKENIZER_FILE))
    assert load_version(repo, NAME, 2).version == 2


# -- version folder names


def test_version_folders_are_ascii_digits_and_others_are_ignored_once(
        repo: Path, templates: Path, token_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="serve.repository")
    for odd in ("²", "٣", "１", "v2", "0"):  # superscript, Arabic-Indic, fullwidth digits, a word, zero
        shutil.copytree(templates / NAME / "2", repo / NAME / odd)
    assert list_versions(repo, NAME) == [1]
    assert list_versions(repo, NAME) == [1]
    ignored = [r.entry for r in caplog.records if r.getMessage() == "ignoring an entry of the model folder"]
    assert sorted(ignored) == sorted(["²", "٣", "１", "v2", "0"])  # each once, though listed twice
    server = ServerThread(make_settings(repo, auth_token_file=token_file, repository_poll_s=0))
    try:  # starts, lists, reloads and polls without an error
        assert server.server.core.model.version == 1
        assert index_of(server) == [(NAME, "1")]
        attempt = server.call(server.server.reloader.reload(None, TRIGGER_ADMIN))
        assert attempt.outcome == "unchanged"
    finally:
        server.close()


# -- what errors show


def _damage(version_dir: Path, how: str) -> None:
    if how == "empty":
        for path in version_dir.iterdir():
            path.unlink()
    elif how == "size":
        with (version_dir / PRECISION_FILES["fp32"]).open("ab") as handle:
            handle.write(b"\0")
    elif how == "checksum":
        path = version_dir / TOKENIZER_FILE
        data = bytearray(path.read_bytes())
        data[-2] = ord(" ") if data[-2] != ord(" ") else ord("\n")
        path.write_bytes(bytes(data))
    elif how == "graph":
        (version_dir / PRECISION_FILES["fp32"]).write_bytes(b"not an onnx graph")
        metadata = __import__("json").loads((version_dir / METADATA_FILE).read_text())
        write_metadata(version_dir, NAME, 2, {k: metadata[k] for k in ("max_tokens", "head_tokens", "pad_id",
                                                                        "unk_id")})


@pytest.mark.parametrize(("how", "needle"), [
    ("empty", "imdb-lstm/2/metadata.json is missing"),
    ("size", "imdb-lstm/2/model.onnx differs in size from metadata.json"),
    ("checksum", "imdb-lstm/2/tokenizer.json does not match its sha256"),
    ("graph", "imdb-lstm/2/model.onnx: ONNX Runtime cannot load it"),
])
def test_errors_name_paths_inside_the_repository_without_sizes_or_digests(
        repo: Path, templates: Path, running: ServerThread, how: str, needle: str) -> None:
    version_dir = repo / NAME / "2"
    shutil.copytree(templates / NAME / "2", version_dir)
    _damage(version_dir, how)
    with pytest.raises(RepositoryError) as caught:
        model = load_version(repo, NAME, 2)
        open_session(model, "fp32")
    refused = reload_over_grpc(running, 2)
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    sizes = {str(p.stat().st_size) for p in (templates / NAME / "2").iterdir()}
    for message in (str(caught.value), refused.details()):
        assert needle in message
        assert str(repo) not in message and str(repo.resolve()) not in message and os.sep + "tmp" not in message
        assert not HEX_DIGEST.search(message), message
        assert not any(re.search(rf"\b{size}\b", message) for size in sizes), message
