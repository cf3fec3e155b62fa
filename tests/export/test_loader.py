"""The repository loader refuses every kind of damaged version, naming the file and the problem."""

import json
import shutil

import pytest

from runtime.repository import RepositoryError, load_version, open_session


@pytest.fixture()
def repo(exported, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(exported.parent, root / "imdb-lstm")
    return root


def version_dir(repo):
    return repo / "imdb-lstm" / "1"


def test_intact_version_loads(repo):
    version = load_version(repo, "imdb-lstm")
    assert (version.version, version.labels) == (1, ("negative", "positive"))
    assert open_session(version, "int8").get_outputs()[0].name == "probability"


def test_corrupted_file(repo):
    path = version_dir(repo) / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RepositoryError, match=r"model\.onnx does not match its sha256"):
        load_version(repo, "imdb-lstm")


def test_truncated_file(repo):
    path = version_dir(repo) / "model.int8.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(RepositoryError, match=r"model\.int8\.onnx differs in size from metadata.json: truncated"):
        load_version(repo, "imdb-lstm")


def test_missing_file(repo):
    (version_dir(repo) / "tokenizer.json").unlink()
    with pytest.raises(RepositoryError, match=r"tokenizer\.json is missing"):
        load_version(repo, "imdb-lstm")


def test_missing_or_invalid_metadata(repo):
    meta = version_dir(repo) / "metadata.json"
    meta.write_text("{not json")
    with pytest.raises(RepositoryError, match="metadata.json is not valid JSON"):
        load_version(repo, "imdb-lstm")
    meta.unlink()
    with pytest.raises(RepositoryError, match="metadata.json is missing"):
        load_version(repo, "imdb-lstm")


def rewrite_metadata(repo, change):
    meta = version_dir(repo) / "metadata.json"
    data = json.loads(meta.read_text())
    change(data)
    meta.write_text(json.dumps(data))


def test_declared_inputs_must_match_the_graph(repo):
    rewrite_metadata(repo, lambda m: m["inputs"][0].update(name="tokens"))
    version = load_version(repo, "imdb-lstm")
    with pytest.raises(RepositoryError, match=r"model\.onnx: graph inputs .* differ"):
        open_session(version, "fp32")


def test_declared_dtype_must_match_the_graph(repo):
    rewrite_metadata(repo, lambda m: m["outputs"][0].update(datatype="INT64"))
    with pytest.raises(RepositoryError, match="output 'probability' is tensor\\(float\\)"):
        open_session(load_version(repo, "imdb-lstm"), "fp32")


def test_version_mismatch_and_unknown_version(repo):
    shutil.copytree(version_dir(repo), repo / "imdb-lstm" / "7")
    with pytest.raises(RepositoryError, match="describes 'imdb-lstm' version 1, but sits at imdb-lstm/7"):
        load_version(repo, "imdb-lstm")
    with pytest.raises(RepositoryError, match=r"no version 3; present: \[1, 7\]"):
        load_version(repo, "imdb-lstm", 3)


@pytest.mark.parametrize("name", ["../imdb-lstm", "/etc", "..", "a/b"])
def test_names_cannot_escape_the_repository(repo, name):
    with pytest.raises(RepositoryError, match="invalid model name"):
        load_version(repo, name)


def test_listed_file_outside_the_version_is_refused(repo):
    rewrite_metadata(repo, lambda m: m["files"].update({"../config.pbtxt": {"sha256": "0", "bytes": 1}}))
    with pytest.raises(RepositoryError, match="only plain file names"):
        load_version(repo, "imdb-lstm")
