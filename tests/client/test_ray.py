"""--ray on a local Ray cluster (2 CPUs, started here): same rows, same order, same scores as --local."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.client.conftest import make_reviews
from tests.client.helpers import probability, read_rows, write_rows
from tests.conftest import fabricated_reviews, write_archive

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.mark.parametrize(("source", "target"), [("in.parquet", "out.parquet"), ("in.csv", "out.jsonl")])
def test_ray_matches_local(ray_cluster, tmp_path: Path, tiny_model: Path, reference, source: str,
                           target: str) -> None:
    from client.ray_scoring import score_with_ray
    from client.scoring import ScoreOptions

    texts = make_reviews(300, seed=7)
    texts[17] = "   "  # a bad row: kept, unscored, reported
    rows = [{"id": f"r{i}", "review": t, "sentiment": "positive" if i % 3 else "negative"}
            for i, t in enumerate(texts)]
    output = tmp_path / target
    summary = score_with_ray(write_rows(tmp_path / source, rows), output, tiny_model,
                             ScoreOptions(progress=False), threads=1, batch_size=16)
    out = read_rows(output)
    assert [r["id"] for r in out] == [r["id"] for r in rows]  # every row, in input order
    assert [r["review"] for r in out] == texts
    expected = reference(texts)
    for i, (row, p) in enumerate(zip(out, expected, strict=True)):
        if i == 17:
            assert probability(row["probability"]) is None and row["label"] is None
        else:
            assert probability(row["probability"]) == pytest.approx(p, abs=1e-6)
            assert row["label"] == ("positive" if p >= 0.5 else "negative")
    assert summary["rows"] == 300 and summary["bad_rows"] == 1 and summary["evaluation"]["evaluated"] == 299
    bad = [json.loads(line) for line in (tmp_path / f"{target}.bad_rows.jsonl").read_text().splitlines()]
    assert bad == [{"row": 18, "error": "empty text", "id": "r17"}]
    assert not (tmp_path / f"{target}.partial").exists()


def test_ray_resume_after_stop(ray_cluster, tmp_path: Path, tiny_model: Path, reference) -> None:
    """A run stopped part-way (--fail-on-bad-rows) resumes under --ray: no row lost, none twice."""
    from client.ray_scoring import score_with_ray
    from client.scoring import BadRowsError, ScoreOptions

    texts = make_reviews(120, seed=3)
    texts[70] = ""
    rows = [{"id": f"r{i}", "review": t} for i, t in enumerate(texts)]
    source, output = write_rows(tmp_path / "in.parquet", rows), tmp_path / "out.csv"
    with pytest.raises(BadRowsError, match="row 71"):
        score_with_ray(source, output, tiny_model, ScoreOptions(progress=False, chunk_rows=32,
                                                                fail_on_bad_rows=True), threads=1)
    assert not output.exists() and len(list((tmp_path / "out.csv.partial").glob("part-*.csv"))) == 2
    summary = score_with_ray(source, output, tiny_model, ScoreOptions(progress=False, chunk_rows=32, resume=True),
                             threads=1)
    out = read_rows(output)
    assert [r["id"] for r in out] == [r["id"] for r in rows]
    assert summary["resumed_at_row"] == 64 and summary["rows_this_run"] == 56 and summary["bad_rows"] == 1
    expected = reference(texts)
    assert all(probability(row["probability"]) == pytest.approx(p, abs=1e-6)
               for i, (row, p) in enumerate(zip(out, expected, strict=True)) if i != 70)


def test_ray_scores_an_aclimdb_archive_like_local(ray_cluster, tmp_path: Path, tiny_model: Path,
                                                  local_backend) -> None:
    """aclImdb has no Ray reader: the driver feeds it to the actors; rows, order, bad rows as --local."""
    from client.ray_scoring import score_with_ray
    from client.scoring import ScoreOptions, score_file

    members: dict[str, str | bytes] = dict(fabricated_reviews(per_label=5))
    members["aclImdb/test/neg/999_1.txt"] = b"caf\xe9 au lait, awful"  # Latin-1: undecodable as UTF-8
    source = write_archive(tmp_path / "aclImdb.tar.gz", members)
    ray_summary = score_with_ray(source, tmp_path / "ray.csv", tiny_model, ScoreOptions(progress=False), threads=1)
    local_summary = score_file(source, tmp_path / "local.csv", local_backend, ScoreOptions(progress=False))
    assert read_rows(tmp_path / "ray.csv") == read_rows(tmp_path / "local.csv")
    assert ray_summary["rows"] == local_summary["rows"] == 21 and ray_summary["bad_rows"] == 1
    assert ray_summary["bad_row_examples"] == local_summary["bad_row_examples"]
    assert ray_summary["evaluation"] == local_summary["evaluation"]


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("dup.csv", b"review,note,note\ngreat,a,b\n", "repeats column name"),
    ("surrogate.jsonl", b'{"review": "fine"}\n{"review": "half \\ud83d"}\n', "row 2 holds text that is not valid"),
    ("latin1.csv", b"review\ncaf\xe9\n", "read as cp1252; --ray reads UTF-8 only"),
])
def test_ray_refuses_inputs_its_readers_would_read_differently(tmp_path: Path, tiny_model: Path, name: str,
                                                               content: bytes, reason: str) -> None:
    """Refused before any cluster starts, with the reason; --local/--server score these (test_field_cases)."""
    pytest.importorskip("ray")
    from client.formats import FormatError
    from client.ray_scoring import score_with_ray
    from client.scoring import ScoreOptions

    source = tmp_path / name
    source.write_bytes(content)
    options = ScoreOptions(progress=False, encoding="cp1252" if name.startswith("latin1") else None)
    with pytest.raises(FormatError, match=reason):
        score_with_ray(source, tmp_path / "out.csv", tiny_model, options)


def test_ray_refuses_what_local_and_the_server_refuse(ray_cluster, tmp_path: Path, tiny_model: Path,
                                                      reference) -> None:
    """c16 and c18 under --ray: nothing to read after cleaning, or over the character limit, is a bad row."""
    from client.ray_scoring import score_with_ray
    from client.scoring import ScoreOptions
    from runtime.limits import MAX_CHARS_PER_TEXT

    texts = make_reviews(20, seed=11)
    refused = {3: "<br /><br /><br />", 5: "\u200b\u200b\u200b", 8: "\ufeff", 13: "\u0001\u0002\u007f",
               17: "a" * (MAX_CHARS_PER_TEXT + 1)}
    for row, text in refused.items():
        texts[row] = text
    output = tmp_path / "out.jsonl"
    summary = score_with_ray(write_rows(tmp_path / "in.jsonl", [{"id": i, "review": t} for i, t in enumerate(texts)]),
                             output, tiny_model, ScoreOptions(progress=False), threads=1, batch_size=4)
    out = read_rows(output)
    bad = [json.loads(line) for line in (tmp_path / "out.jsonl.bad_rows.jsonl").read_text().splitlines()]
    assert [b["id"] for b in bad] == sorted(refused) and summary["bad_rows"] == len(refused)
    assert all("has nothing to read" in b["error"] for b in bad[:4])
    assert f"has {MAX_CHARS_PER_TEXT + 1} characters; at most {MAX_CHARS_PER_TEXT} accepted" in bad[4]["error"]
    good = [i for i in range(20) if i not in refused]
    assert [out[i]["probability"] for i in good] == pytest.approx(reference([texts[i] for i in good]), abs=1e-6)
    assert all(out[i]["probability"] is None for i in refused)
