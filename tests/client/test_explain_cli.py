"""``python -m client explain`` against a real server on the trained tiny model: the --json contract and the chart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.__main__ import main
from client.explain import probability_bar
from tests.fixtures.server_thread import ServerThread, make_settings
from tests.serve.test_explain import TURNING


@pytest.fixture(scope="module")
def server(trained_repository: Path) -> Iterator[ServerThread]:
    running = ServerThread(make_settings(trained_repository, max_explain_sentences=20))
    yield running
    running.close()


def test_json_is_one_object_with_probability_and_sentences_pointing_into_the_text(server, capsys) -> None:
    assert main(["explain", TURNING, "--server", server.address, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"probability", "sentences", "turning_point", "most_decisive", "label"} <= set(out)
    assert out["label"] == "negative" and out["turning_point"] == 3 and out["most_decisive"] == 3
    sentences = out["sentences"]
    assert len(sentences) == 4
    for s in sentences:
        assert {"text", "start", "end", "running_probability", "effect"} <= set(s)
        assert TURNING[s["start"]:s["end"]] == s["text"]
    assert sentences[-1]["running_probability"] == out["probability"]
    assert sentences[3]["effect"] < -0.5 < 0.5 < min(s["running_probability"] for s in sentences[:3])
    assert "token_steps" not in out


def test_the_chart_shows_every_sentence_and_marks_the_turn(server, capsys, tmp_path: Path) -> None:
    review = tmp_path / "review.txt"
    review.write_text(TURNING, encoding="utf-8")
    assert main(["explain", "--file", str(review), "--server", server.address]) == 0
    out = capsys.readouterr().out
    assert out.startswith("negative")
    assert "◆★" in out and out.count("█") > 3 * 30
    assert all(sentence.split(".")[0][:20] in out for sentence in TURNING.split(". "))


def test_text_and_file_are_exclusive(server, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["explain", "great", "--file", str(tmp_path / "x.txt"), "--server", server.address])
    assert raised.value.code == 2


def test_server_refusals_exit_1_with_the_servers_message(server, capsys) -> None:
    assert main(["explain", " ", "--server", server.address]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


@pytest.mark.parametrize(("p", "filled"), [(0.0, 0), (0.5, 20), (1.0, 40), (0.26, 10)])
def test_probability_bar(p: float, filled: int) -> None:
    bar = probability_bar(p)
    assert len(bar) == 40 and bar.count("█") == filled
    assert p >= 0.5 or bar[20] == "│"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_score_explain_adds_the_turning_point_and_the_most_decisive_sentence(server, tmp_path: Path,
                                                                             suffix: str) -> None:
    from tests.client.helpers import probability, read_rows, write_rows
    from tests.fixtures.trained_repository import PRAISE, review

    rows = [{"id": "turns", "review": TURNING}, {"id": "one", "review": review([PRAISE[0]])},
            {"id": "many", "review": " ".join(["It."] * 30)}]  # over the server's 20 sentences: no columns
    source = write_rows(tmp_path / f"in{suffix}", rows)
    output = tmp_path / f"out{suffix}"
    assert main(["score", str(source), "--output", str(output), "--server", server.address, "--explain",
                 "--no-progress"]) == 0
    out = {r["id"]: r for r in read_rows(output)}
    assert out["turns"]["turning_point"] == out["turns"]["most_decisive"] == "A complete waste of time."
    assert probability(out["turns"]["turning_point_swing"]) < -0.5
    assert probability(out["turns"]["most_decisive_effect"]) < -0.5
    assert out["one"]["turning_point"] in (None, "") and out["one"]["most_decisive"] == "A wonderful film."
    assert out["many"]["label"] and out["many"]["most_decisive"] in (None, "")


def test_score_explain_needs_the_server(tmp_path: Path, trained_repository: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("review\ngreat\n", encoding="utf-8")
    with pytest.raises(SystemExit) as raised:
        main(["score", str(source), "--output", str(tmp_path / "o.csv"), "--explain",
              "--local", str(trained_repository / "imdb-lstm")])
    assert raised.value.code == 2
