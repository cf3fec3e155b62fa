"""Composed training reviews (train/compose.py): mining sentences and composing labelled reviews."""

import random

import numpy as np
import pytest

from tests.fixtures.tiny_repository import NAME, build_tiny_repository
from train.compose import KINDS, compose_review, compose_reviews, mine_sentences, vader_compound
from train.data import Review
from train.probes import scorer_for_version

PRAISE = ["A wonderful, moving film.", "The cast is brilliant and the story is great fun.",
          "I loved every minute of it."]
SCORN = ["A boring, stupid waste of time.", "The acting is awful and the plot is terrible.",
         "I hated every minute of it."]
PLOT = ["The story is set in a small town in Ohio.", "Anna drives to the station on a Monday morning.",
        "Her brother keeps a box of letters in the attic.", "The film runs for about two hours."]
NEGATED = {1: ["I was not disappointed at all.", "It was not bad at all."],
           0: ["The acting is not good at all.", "Nothing about it impressed me."]}
# The teacher of these tests: confident on the opinion sentences, unsure on the plot ones, and (like the
# networks trained here) calling every negated sentence negative.
TEACHER = {**{s: 0.99 for s in PRAISE}, **{s: 0.01 for s in SCORN}, **{s: 0.5 for s in PLOT},
           **{s: 0.01 for s in NEGATED[1] + NEGATED[0]}}


def teacher(texts: list[str]) -> np.ndarray:
    return np.array([TEACHER[t] for t in texts], dtype=np.float32)


def reviews() -> list[Review]:
    return [Review(1, 9, 1, " ".join(PRAISE + PLOT[:2]), "train"),
            Review(2, 2, 0, " ".join(SCORN + PLOT[2:]), "train")]


def test_vader_finds_opinions_and_none_in_plot():
    compound = vader_compound()
    assert all(compound(s) > 0.3 for s in PRAISE) and all(compound(s) < -0.3 for s in SCORN)
    assert all(compound(s) == 0.0 for s in PLOT)


def test_mining_sorts_sentences_by_teacher_label_and_lexicon():
    pool = mine_sentences(reviews(), teacher)
    assert sorted(pool.polar[1]) == sorted(PRAISE) and sorted(pool.polar[0]) == sorted(SCORN)
    assert sorted(pool.neutral) == sorted(PLOT)


def test_a_confident_sentence_that_disagrees_with_its_review_is_not_polar():
    mixed = [Review(1, 9, 1, " ".join(SCORN[:1] + PRAISE[1:] + PLOT), "train"),
             Review(2, 2, 0, " ".join(SCORN[1:] + PLOT), "train")]
    pool = mine_sentences(mixed, teacher)
    assert SCORN[0] not in pool.polar[0] + pool.polar[1] + pool.neutral
    assert pool.polar[0] == SCORN[1:]  # from the negative review only


def test_the_lexicon_vetoes_neutral_sentences_with_opinion_words():
    unsure = dict(TEACHER, **{s: 0.5 for s in PRAISE[:1]})
    pool = mine_sentences(reviews(), lambda texts: np.array([unsure[t] for t in texts]))
    assert PRAISE[0] not in pool.neutral and PRAISE[0] not in pool.polar[1]


def test_mining_refuses_a_pool_it_cannot_compose_from():
    with pytest.raises(ValueError, match="neutral"):
        mine_sentences([reviews()[0]], teacher)  # no negative sentence
    with pytest.raises(ValueError, match="polar"):
        mine_sentences(reviews(), teacher, polar=0.4)


def test_composed_reviews_are_built_and_labelled_as_described():
    pool = mine_sentences(reviews(), teacher)
    composed = compose_reviews(reviews(), pool, 60, seed=7)
    assert [r.label for r in composed].count(1) == 30 and {r.split for r in composed} == {"composed"}
    for i, review in enumerate(composed):
        kind, label = KINDS[i % 3], review.label
        own, other = (PRAISE, SCORN) if label == 1 else (SCORN, PRAISE)
        if kind == "memory":
            assert review.text.startswith(tuple(own)) and not any(s in review.text for s in other)
            tail = review.text
            for s in own:
                tail = tail.replace(s, "")
            assert 20 <= len(tail.split()) < 450 + 12
        elif kind == "verdict":
            assert review.text.startswith(tuple(other)) and review.text.endswith(tuple(own))
        else:
            assert review.text.startswith(reviews()[1 - label].text)
    assert [r.text for r in compose_reviews(reviews(), pool, 60, seed=7)] == [r.text for r in composed]
    assert [r.text for r in compose_reviews(reviews(), pool, 60, seed=8)] != [r.text for r in composed]


def test_negated_sentences_are_judged_by_lexicon_and_label_not_by_the_teacher():
    negated = [Review(3, 8, 1, " ".join(NEGATED[1] + NEGATED[0][:1]), "train"),
               Review(4, 3, 0, " ".join(NEGATED[0]), "train")]
    pool = mine_sentences(reviews() + negated, teacher)
    assert pool.negated == {1: NEGATED[1], 0: NEGATED[0]}  # the negative one in a positive review is left out
    assert not set(NEGATED[1] + NEGATED[0]) & set(pool.polar[0] + pool.polar[1] + pool.neutral)
    composed = compose_reviews(reviews(), pool, 40, seed=3)
    for review in composed[3::4]:  # the fourth kind in turn
        assert review.text.startswith(tuple(NEGATED[review.label]))
        assert not any(s in review.text for s in NEGATED[1 - review.label])


def test_unknown_composition_is_refused():
    with pytest.raises(ValueError, match="unknown composition"):
        compose_review("sarcasm", 1, mine_sentences(reviews(), teacher), random.Random(0))


def test_a_model_repository_version_can_be_the_teacher(tmp_path):
    repository = build_tiny_repository(tmp_path)
    score, _ = scorer_for_version(repository / NAME / "1", "fp32", threads=1)
    scores = score(PRAISE + PLOT)
    assert scores.shape == (len(PRAISE + PLOT),) and np.all((scores >= 0) & (scores <= 1))
