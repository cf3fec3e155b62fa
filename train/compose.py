"""Composed training reviews: data augmentation for memory and for the verdict at the end.

Real reviews rarely state an opinion once and then describe the plot for 400 words, or praise
a film for half a page before condemning it in their last lines, so a classifier trained on
them alone learns neither to keep an early opinion through neutral text nor to let a clear
conclusion outweigh what came before (the probe sets of :mod:`train.probe_sets` measure both).
This module writes such reviews from sentences of the *training* reviews themselves:

1. **Mining** (:func:`mine_sentences`): the training reviews are split into sentences
   (:func:`runtime.sentences.split_sentences`, as Explain splits them) and each sentence is
   scored alone by a *teacher*, an existing model-repository version (a model reads a lone
   sentence well: 97% on the one-sentence probes), and by VADER's sentiment lexicon (Hutto &
   Gilbert 2014, the ``vaderSentiment`` package; its compound score in [-1, 1]). A sentence is
   *polar* when the teacher is confident (P >= ``polar`` or <= 1 - ``polar``), agrees with its
   review's label, and the lexicon agrees in sign (|compound| >= 0.3); it is *neutral* when
   the lexicon finds no opinion word in it at all (compound exactly 0) and the teacher's P lies
   within ``neutral`` of 0.5. Each judge alone lets through sentences the other catches (the
   teacher calls "funny and sad, and the entire cast is impressive." unsure).
2. **Composing** (:func:`compose_reviews`), each review labelled by its construction:

   - ``memory``: one or two polar sentences of label y, then 20-450 words of neutral sentences
     (label y): the opinion must survive the filler;
   - ``verdict``: one or two polar sentences of the opposite label, 0-120 words of neutral
     sentences, then one or two polar sentences of label y (label y): the conclusion counts;
   - ``tail``: a whole training review of label y followed by 20-300 words of neutral
     sentences (label y): real text, then filler;
   - ``negated``: one or two *negated* sentences of label y ("I was not disappointed", "it
     never gets boring"), then 0-60 words of neutral sentences (label y). A sentence with a
     negation cue (:data:`NEGATION`) is judged by the lexicon and its review's label only,
     never by the teacher: VADER's rules flip a negated opinion word, and the networks this
     project trains read every "not X" as negative (``python -m train probes``: 0% of the
     positive negation items right), so a teacher would keep exactly the wrong ones out.

The validation reviews are never mined (the caller passes the training split only), so
validation still measures the model on unseen, unmodified reviews. Method: behavioural
testing (Ribeiro et al. 2020, "Beyond Accuracy: Behavioral Testing of NLP Models with
CheckList") names the capabilities; composing labelled examples from mined sentences is
ordinary data augmentation with a teacher's sentence scores as weak labels.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from runtime.sentences import split_sentences
from train.data import Review

KINDS = ("memory", "verdict", "tail", "negated")
NEGATION = re.compile(r"\b(?:not|no|never|nothing|none|nobody|neither|nor|without|hardly)\b|n't\b", re.IGNORECASE)
COMPOSED_SPLIT = "composed"


@dataclass(frozen=True)
class SentencePool:
    """Mined sentences: ``polar[1]`` positive, ``polar[0]`` negative, ``neutral`` neither, ``negated[label]``
    polar sentences with a negation cue (plain text each)."""

    polar: dict[int, list[str]]
    neutral: list[str]
    negated: dict[int, list[str]] = field(default_factory=lambda: {0: [], 1: []})

    def summary(self) -> str:
        return (f"{len(self.polar[1])} positive, {len(self.polar[0])} negative, {len(self.neutral)} neutral, "
                f"{len(self.negated[1])} + {len(self.negated[0])} negated positive + negative sentences")


def review_sentences(text: str, min_words: int = 4, max_words: int = 40) -> list[str]:
    """The sentences of ``text`` with ``min_words``..``max_words`` words (whitespace-separated)."""
    sentences = (text[start:end] for start, end in split_sentences(text))
    return [s for s in sentences if min_words <= len(s.split()) <= max_words]


def vader_compound() -> Callable[[str], float]:
    """VADER's compound polarity of one text, in [-1, 1] (0: no opinion word found)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return lambda text: float(analyzer.polarity_scores(text)["compound"])


def mine_sentences(reviews: Sequence[Review], score: Callable[[list[str]], np.ndarray],
                   lexicon: Callable[[str], float] | None = None, polar: float = 0.95, neutral: float = 0.3,
                   chunk: int = 4096) -> SentencePool:
    """Split labelled ``reviews`` into sentences and sort them by the teacher ``score`` (texts -> P float [N])
    and the ``lexicon`` (text -> compound polarity in [-1, 1]; default :func:`vader_compound`).

    Raises ValueError when a bucket ends up empty (too few reviews, or a teacher that is never
    confident or never unsure): composing needs all three.
    """
    if not 0.5 < polar < 1 or not 0 < neutral < 0.5:
        raise ValueError(f"need 0.5 < polar < 1 and 0 < neutral < 0.5, got polar={polar}, neutral={neutral}")
    texts, labels = [], []
    for review in reviews:
        if review.label in (0, 1):
            found = review_sentences(review.text)
            texts.extend(found)
            labels.extend([review.label] * len(found))
    probabilities = np.concatenate([score(texts[i:i + chunk]) for i in tqdm(
        range(0, len(texts), chunk), desc=f"scoring {len(texts)} sentences", unit="chunk")]) if texts else np.zeros(0)
    lexicon = lexicon or vader_compound()
    pool = SentencePool({0: [], 1: []}, [])
    for text, label, p in zip(texts, labels, probabilities, strict=True):
        confident = p >= polar if label == 1 else p <= 1 - polar
        if NEGATION.search(text):  # the lexicon and the review's label decide; never the teacher
            if (1 if label == 1 else -1) * lexicon(text) >= 0.3:
                pool.negated[label].append(text)
        elif abs(p - 0.5) <= neutral:
            if lexicon(text) == 0.0:
                pool.neutral.append(text)
        elif confident and (1 if label == 1 else -1) * lexicon(text) >= 0.3:
            pool.polar[label].append(text)
    if not (pool.polar[0] and pool.polar[1] and pool.neutral):
        raise ValueError(f"mining {len(texts)} sentences from {len(reviews)} reviews gave {pool.summary()}; "
                         "composing needs some of each: mine more reviews or loosen polar/neutral")
    return pool


def _neutral_words(pool: SentencePool, words: int, rng: random.Random) -> list[str]:
    picked, count = [], 0
    while count < words:
        sentence = rng.choice(pool.neutral)
        picked.append(sentence)
        count += len(sentence.split())
    return picked


def compose_review(kind: str, label: int, pool: SentencePool, rng: random.Random,
                   reviews: Sequence[Review] = ()) -> str:
    """One composed review of ``kind`` (one of :data:`KINDS`) whose label is ``label`` (see the module docstring).

    ``reviews`` (labelled training reviews) is needed for ``tail`` only. Raises ValueError for
    an unknown kind.
    """
    if kind == "memory":
        parts = rng.sample(pool.polar[label], rng.randint(1, 2)) + _neutral_words(pool, rng.randint(20, 450), rng)
    elif kind == "verdict":
        parts = (rng.sample(pool.polar[1 - label], rng.randint(1, 2)) + _neutral_words(pool, rng.randint(0, 120), rng)
                 + rng.sample(pool.polar[label], rng.randint(1, 2)))
    elif kind == "tail":
        same = [r for r in reviews if r.label == label]
        if not same:
            raise ValueError(f"composing a 'tail' review of label {label} needs training reviews with that label")
        parts = [rng.choice(same).text] + _neutral_words(pool, rng.randint(20, 300), rng)
    elif kind == "negated":
        if not pool.negated[label]:
            raise ValueError(f"composing a 'negated' review of label {label} needs mined negated sentences")
        chosen = rng.sample(pool.negated[label], min(len(pool.negated[label]), rng.randint(1, 2)))
        parts = chosen + _neutral_words(pool, rng.randint(0, 60), rng)
    else:
        raise ValueError(f"unknown composition {kind!r}; choose one of {KINDS}")
    return " ".join(parts)


def compose_reviews(reviews: Sequence[Review], pool: SentencePool, count: int, seed: int) -> list[Review]:
    """``count`` composed reviews, the kinds in turn and labels balanced, reproducible from ``seed`` (``negated``
    only when the pool has negated sentences of both labels).

    Returned as :class:`~train.data.Review` of split ``"composed"`` (rating 0, ids 0..count-1).
    """
    rng = random.Random(seed)
    labelled = [r for r in reviews if r.label in (0, 1)]
    kinds = [k for k in KINDS if k != "negated" or (pool.negated[0] and pool.negated[1])]
    composed = []
    for i in range(count):
        kind, label = kinds[i % len(kinds)], (i // len(kinds)) % 2
        composed.append(Review(i, 0, label, compose_review(kind, label, pool, rng, labelled), COMPOSED_SPLIT))
    return composed
