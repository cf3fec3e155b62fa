"""One text, one answer, one set of limits on every path (handed field cases c14, c16, c17, c18, c20).

--local and --server (and --ray, in test_ray.py) refuse the same texts as bad rows and give
the same probability to every other one, whatever the precision and the batch-mates.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.__main__ import main
from client.backends import LocalBackend, ServerBackend
from client.scoring import ScoreOptions, score_file
from runtime.limits import MAX_CHARS_PER_TEXT
from tests.client.conftest import make_reviews, start_server
from tests.client.helpers import probability, read_rows, write_rows
from tests.conftest import REPO_ROOT

SHIPPED = REPO_ROOT / "models" / "imdb-lstm"
# c16: markup only, zero-width spaces only, a lone BOM, control characters, spaces; then more
# instances of the kind.
UNREADABLE = {"markup": "<br /><br /><br />", "zwsp": "\u200b\u200b\u200b", "bom": "\ufeff",
              "controls": "\u0001\u0002\u007f", "spaces": "   ", "tags": "<p><i></i></p>",
              "joiners": "\u2060\u00ad\u200c\u200d", "bidi": "\u202e\u2066\u2069", "tag-chars": "\U000e0041\ufe0f"}
# c17: reviews the int8 graph scored differently alone and in a batch (up to 1.1e-3).
C17 = ["An odd little film; the middle drags but the ending works.",
       "I wanted to like it. Some scenes are lovely, others fall flat.",
       "Not bad, not great. The lead is fine and the script is uneven.",
       "A mess of a plot rescued by a superb final act.",
       "Terrible. Absolutely the worst thing I have seen this year, avoid.",
       "Mediocre effects, decent acting, forgettable overall."]
needs_shipped = pytest.mark.skipif(not (SHIPPED / "1").is_dir(), reason="no shipped model in models/imdb-lstm/")


def score(backend, rows: list[dict], tmp_path: Path, name: str) -> tuple[dict, list[dict], list[dict]]:
    """Score ``rows`` (JSON Lines) with ``backend``: (summary, output rows, bad rows)."""
    source = write_rows(tmp_path / f"{name}.jsonl", rows)
    output = tmp_path / f"{name}.out.jsonl"
    summary = score_file(source, output, backend, ScoreOptions(progress=False, chunk_rows=8))
    bad_file = output.with_name(output.name + ".bad_rows.jsonl")
    bad = [json.loads(line) for line in bad_file.read_text().splitlines()] if bad_file.exists() else []
    return summary, read_rows(output), bad


def unreadable_rows() -> list[dict]:
    texts = make_reviews(12, seed=5)
    rows = [{"id": f"ok{i}", "review": t} for i, t in enumerate(texts)]
    for offset, (name, text) in enumerate(UNREADABLE.items()):
        rows.insert(2 * offset + 1, {"id": name, "review": text})
    return rows


@pytest.mark.parametrize("path", ["local", "server"])
def test_texts_with_nothing_to_read_are_bad_rows(tmp_path: Path, tiny_model: Path, server, local_backend,
                                                 reference, path: str) -> None:
    rows = unreadable_rows()
    backend = local_backend if path == "local" else ServerBackend(server.address, batch_size=4, concurrency=2)
    try:
        summary, out, bad = score(backend, rows, tmp_path, path)
    finally:
        if path == "server":
            backend.close()
    assert sorted(b["id"] for b in bad) == sorted(UNREADABLE)
    assert all("empty" in b["error"] or "has nothing to read" in b["error"] for b in bad), bad
    assert summary["bad_rows"] == len(UNREADABLE) and summary["scored"] == 12
    good = [r for r in out if r["id"].startswith("ok")]
    assert [r["probability"] for r in good] == pytest.approx(reference([r["review"] for r in good]), abs=1e-6)
    assert all(r["probability"] is None for r in out if not r["id"].startswith("ok"))


def test_predict_refuses_markup_only_over_grpc(server, capsys) -> None:
    assert main(["predict", "<br /><br />", "--server", server.address]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["local", "server"])
def test_the_character_limit_is_the_same_on_every_path(tmp_path: Path, server, local_backend, path: str) -> None:
    """c18: a review of 100,001 characters was scored by --local and refused by the server."""
    rows = [{"id": "short", "review": "a wonderful film"},
            {"id": "limit", "review": ("great fun " * 10_001)[:MAX_CHARS_PER_TEXT]},
            {"id": "over", "review": ("great fun " * 10_001)[:MAX_CHARS_PER_TEXT + 1]}]
    backend = local_backend if path == "local" else ServerBackend(server.address, batch_size=4)
    try:
        summary, out, bad = score(backend, rows, tmp_path, path)
    finally:
        if path == "server":
            backend.close()
    assert [b["id"] for b in bad] == ["over"] and f"{MAX_CHARS_PER_TEXT + 1} characters" in bad[0]["error"]
    assert str(MAX_CHARS_PER_TEXT) in bad[0]["error"].split("characters", 1)[1]
    assert [probability(r["probability"]) is None for r in out] == [False, False, True]


def test_long_texts_are_sent_in_requests_that_fit_the_servers_message_limit(tmp_path: Path, tiny_model: Path,
                                                                              local_backend) -> None:
    """c14: 64 long CJK reviews once made one message over the server's limit (RESOURCE_EXHAUSTED)."""
    base = "この映画は本当に素晴らしかった。俳優の演技も音楽も最高だった。"
    texts = [(base * 400)[:9000 + 37 * i] + f" great {i}" for i in range(24)]  # about 27 KB each as UTF-8
    small = start_server(tiny_model.parents[1], max_message_bytes=64 * 1024)
    backend = ServerBackend(small.address, batch_size=64, concurrency=2)
    try:
        assert backend.limits.max_message_bytes == 64 * 1024
        summary, out, bad = score(backend, [{"review": t} for t in texts], tmp_path, "cjk")
        too_big = "x" * (70 * 1024)  # alone over the message limit: a bad row, not a failed run
        _, _, refused, _ = backend.score([too_big, texts[0]])
    finally:
        backend.close()
        small.close()
    assert summary["bad_rows"] == 0 and not bad
    assert [r["probability"] for r in out] == pytest.approx(local_backend.local.score(texts).probabilities.tolist(),
                                                           abs=1e-6)
    assert refused[1] is None and "the server accepts messages of at most 65536 bytes" in refused[0]


@needs_shipped
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_local_and_server_give_one_answer_per_text(tmp_path: Path, precision: str) -> None:
    """c17 (int8: local batched, the server did not) and c20 (soft hyphens) on the shipped model."""
    plain = ["Excellent film, highly recommended.", "I loved it. Superb."]
    hyphenated = ["Ex\xadcel\xadlent film, high\xadly rec\xadom\xadmend\xaded.", "I lo\xadved it. Su\xadperb."]
    texts = C17 + make_reviews(40, seed=9) + plain + hyphenated
    local = LocalBackend(SHIPPED, threads=1, batch_size=64, precision=precision)
    alone = [float(local.local.score([t]).probabilities[0]) for t in texts]
    running = start_server(SHIPPED.parent, precision=precision, max_batch_size=16)
    backend = ServerBackend(running.address, batch_size=64, concurrency=2)
    try:
        _, via_local, _ = score(local, [{"review": t} for t in texts], tmp_path, "local")
        _, via_server, _ = score(backend, [{"review": t} for t in texts], tmp_path, "server")
    finally:
        backend.close()
        running.close()
    assert [r["probability"] for r in via_local] == pytest.approx(alone, abs=1e-6)
    assert [r["probability"] for r in via_server] == pytest.approx(alone, abs=1e-6)
    assert alone[-2:] == alone[-4:-2]  # soft hyphens change nothing
    assert min(alone[-4:]) > 0.9


@pytest.mark.parametrize("target", ["out.csv", "out.parquet", "out.jsonl"])
def test_scored_files_say_how_much_of_each_text_the_model_could_read(tmp_path: Path, server, local_backend,
                                                                     target: str) -> None:
    texts = ["a wonderful film with great acting", "zzqx wonderful qqqq vvkw", "\u200b"]
    source = write_rows(tmp_path / "in.jsonl", [{"review": t} for t in texts])
    expected = local_backend.local.score(texts[:2]).known_word_fractions.tolist()
    assert expected[0] > 0.8 > 0.5 > expected[1]
    backend = ServerBackend(server.address)
    try:
        for name, scorer in (("local", local_backend), ("server", backend)):
            output = tmp_path / f"{name}-{target}"
            score_file(source, output, scorer, ScoreOptions(progress=False))
            known = [probability(r["known_word_fraction"]) for r in read_rows(output)]
            assert known[:2] == pytest.approx(expected, abs=1e-6) and known[2] is None, name
    finally:
        backend.close()
