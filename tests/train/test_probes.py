"""The behavioural probe sets and their runner."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.tiny_repository import build_tiny_repository
from train import probe_sets
from train.__main__ import main
from train.probes import TARGETS, format_report, run_probes

EXPECTED_SETS = ["memory_0", "memory_50", "memory_100", "memory_200", "memory_400", "negation", "one_sentence",
                 "verdict_at_end"]


def test_stored_probe_files_are_what_the_generator_makes():
    generated = probe_sets.generate()
    for name, items in generated.items():
        assert (probe_sets.PROBE_DIR / f"{name}.jsonl").read_text(encoding="utf-8") == probe_sets.to_jsonl(items)
    assert list(probe_sets.load()) == EXPECTED_SETS


def test_probe_sets_are_balanced_and_built_as_described():
    sets = probe_sets.load()
    for name, items in sets.items():
        labels = [item["label"] for item in items]
        distinct = len({item["text"] for item in items}) / len(items)
        assert labels.count(0) == labels.count(1) and distinct >= (0.4 if name == "memory_0" else 0.9), name
    for words in probe_sets.FILLER_WORDS:
        for item in sets[f"memory_{words}"]:
            opener = item["text"].split(". ")[0]
            assert words <= len(item["text"].split()) - len(opener.split()) < words + 25
    pairs = {}
    for item in sets["negation"]:
        pairs.setdefault(item["pair"], []).append(item)
    assert all(sorted(i["label"] for i in p) == [0, 1] for p in pairs.values())
    assert all(len(item["text"].split(". ")) == 1 for item in sets["one_sentence"])


def test_runner_reports_accuracy_per_set_for_a_version_folder(tmp_path, capsys):
    version = build_tiny_repository(tmp_path) / "imdb-lstm" / "1"
    report = run_probes(model=version, threads=1)
    assert list(report["sets"]) == EXPECTED_SETS
    for name, result in report["sets"].items():
        assert 0.0 <= result["accuracy"] <= 1.0 and result["count"] in (100, 200)
        assert result.get("target") == TARGETS.get(name)
    assert 0.0 <= report["sets"]["negation"]["pair_accuracy"] <= report["sets"]["negation"]["accuracy"] + 0.5

    assert main(["probes", "--model", str(version), "--threads", "1", "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["sets"] == report["sets"]
    assert "verdict_at_end" in capsys.readouterr().out and "verdict_at_end" in format_report(report)


def test_runner_accuracy_is_the_share_of_right_answers(tmp_path, monkeypatch):
    """Against fake scorers: one always right, one right only on positive texts."""
    import train.probes as probes

    labels = {item["text"]: item["label"] for items in probe_sets.load().values() for item in items}

    def fake(right_on):
        def scorer(path, precision, threads):
            def score(texts):
                if texts == probe_sets.filler_only():  # the filler diagnostic: no labels, scored 0.25
                    return np.full(len(texts), 0.25, dtype=np.float32)
                truth = np.array([labels[t] for t in texts])
                return np.where(np.isin(truth, right_on), truth, 1 - truth).astype(np.float32)
            return score, {"model": str(path)}
        return scorer

    monkeypatch.setattr(probes, "scorer_for_version", fake([0, 1]))
    report = run_probes(model=tmp_path, threads=1)
    assert all(r["accuracy"] == 1.0 for r in report["sets"].values())
    assert report["sets"]["negation"]["pair_accuracy"] == 1.0
    assert report["filler"] == {"words": 400, "count": 50, "mean_probability": 0.25, "share_positive": 0.0}
    monkeypatch.setattr(probes, "scorer_for_version", fake([1]))
    report = run_probes(model=tmp_path, threads=1)
    assert all(r["accuracy"] == 0.5 for r in report["sets"].values())  # every set is balanced
    assert all((r["positive_accuracy"], r["negative_accuracy"]) == (1.0, 0.0) for r in report["sets"].values())
    assert report["sets"]["negation"]["pair_accuracy"] == 0.0  # no pair has both texts right


def test_runner_refuses_a_folder_that_is_not_a_version(tmp_path):
    with pytest.raises(ValueError, match="version folder"):
        run_probes(model=tmp_path / "imdb-lstm", threads=1)
    with pytest.raises(ValueError, match="exactly one"):
        run_probes(threads=1)


SHIPPED = Path(__file__).resolve().parents[2] / "models" / "imdb-lstm"


@pytest.mark.skipif(not (SHIPPED / "3").is_dir(), reason="the shipped model repository has no version 3")
def test_the_shipped_v2_keeps_its_probe_results():
    """Version 3 (model v2) against the probe sets: the one-sentence target (issue 17) and, for the sets whose
    targets it misses, floors a few points under what it measured (docs/model-card.md), so a re-export or a
    change in preprocessing that loses its memory or its ear for the verdict fails here."""
    report = run_probes(model=SHIPPED / "3", threads=1)["sets"]
    assert report["one_sentence"]["accuracy"] >= TARGETS["one_sentence"]
    floors = {"memory_0": 0.88, "memory_100": 0.83, "memory_400": 0.65, "verdict_at_end": 0.74}
    assert {name: report[name]["accuracy"] >= floor for name, floor in floors.items()} == dict.fromkeys(floors, True)
