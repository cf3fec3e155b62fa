"""runtime/explain.py on real ONNX Runtime sessions of a trained tiny model: running probabilities,
effects and offsets against the whole-sequence graph and against the text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.explain import explain_ids
from runtime.preprocessing import encode_texts, encode_with_offsets, pad_batch
from runtime.repository import load_version
from runtime.sentences import split_sentences
from runtime.step_runner import open_step_runner
from tests.fixtures.trained_repository import DAMNING, NEUTRAL, PRAISE, review

TURNING = review([PRAISE[3], PRAISE[4], PRAISE[1], DAMNING[4]])
ODD_TEXTS = [
    TURNING,
    review([DAMNING[0], NEUTRAL[0], PRAISE[2]]),
    "no punctuation a wonderful film the plot is terrible",
    "A wonderful film.<br /><br />The plot is terrible!!<br/>I loved every minute of it",
    "Naïve “brilliant” acting\u200b and a su\u00adperb cast 🎬. ﬁne… The worst film of the year?!",
    review([PRAISE[0]] * 9 + [DAMNING[1]] * 9),  # longer than max_tokens: head and tail only
    "Great",
]


class Explainer:
    def __init__(self, root: Path) -> None:
        self.model = load_version(root, "imdb-lstm")
        self.tokenizer = self.model.load_tokenizer()
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.runner = open_step_runner(self.model, options)
        self.whole = ort.InferenceSession(str(self.model.model_path()), options, providers=["CPUExecutionProvider"])

    def explain(self, text: str, per_token: bool = False):
        ids, offsets = encode_with_offsets(self.tokenizer, text)
        m = self.model
        return explain_ids(self.runner, ids, offsets, split_sentences(text), max_tokens=m.max_tokens,
                           head_tokens=m.head_tokens, unk_id=m.unk_id, per_token=per_token)

    def predict_ids(self, sequences: list[list[int]]) -> np.ndarray:
        input_ids, lengths = pad_batch([s or [self.model.unk_id] for s in sequences], self.model.pad_id)
        return self.whole.run(None, {"input_ids": input_ids, "lengths": lengths})[0]

    def predict(self, text: str) -> float:
        m = self.model
        return float(self.predict_ids(encode_texts(self.tokenizer, [text], m.max_tokens, m.head_tokens,
                                                   m.unk_id))[0])


@pytest.fixture(scope="module")
def explainer(trained_repository: Path) -> Explainer:
    return Explainer(trained_repository)


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_last_running_probability_is_predicts_probability(explainer: Explainer, text: str) -> None:
    explanation = explainer.explain(text)
    read = [s for s in explanation.sentences if s.tokens_read]
    assert read[-1].running_probability == explanation.probability
    assert explanation.probability == pytest.approx(explainer.predict(text), abs=1e-5)


@pytest.mark.parametrize("text", ODD_TEXTS[:5])
def test_each_effect_is_the_whole_graphs_probability_without_that_sentence(explainer: Explainer, text: str) -> None:
    """Not truncated: removing a sentence's tokens is removing the sentence (checked on the whole graph)."""
    ids, offsets = encode_with_offsets(explainer.tokenizer, text)
    explanation = explainer.explain(text)
    assert explanation.tokens_read == len(ids) <= explainer.model.max_tokens
    without = [[i for i, (start, _) in zip(ids, offsets, strict=True) if not s.start <= start < s.end]
               for s in explanation.sentences]
    expected = explainer.predict(text) - explainer.predict_ids(without)
    got = [s.effect for s in explanation.sentences]
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)


def test_a_review_that_turns_at_its_last_sentence_swings_there(explainer: Explainer) -> None:
    explanation = explainer.explain(TURNING)
    running = [s.running_probability for s in explanation.sentences]
    assert len(running) == 4
    assert min(running[:3]) > 0.8 and running[3] < 0.2, running
    assert explanation.turning_point == 3 and explanation.most_decisive == 3
    assert explanation.sentences[3].effect < -0.5
    assert explanation.sentences[0].swing is None


def test_sentences_in_the_truncated_middle_are_marked_unread_not_given_numbers(explainer: Explainer) -> None:
    text = ODD_TEXTS[5]
    explanation = explainer.explain(text)
    m = explainer.model
    assert explanation.tokens > m.max_tokens and explanation.tokens_read == m.max_tokens
    unread = [s for s in explanation.sentences if s.tokens_read == 0]
    assert unread, "a review this long has sentences the model does not read"
    assert all(s.running_probability is None and s.effect is None and s.swing is None for s in unread)
    assert sum(s.tokens_read for s in explanation.sentences) == m.max_tokens
    assert sum(s.tokens for s in explanation.sentences) == explanation.tokens
    assert explanation.sentences[0].tokens_read == explanation.sentences[0].tokens  # the head is read
    assert explanation.sentences[-1].tokens_read == explanation.sentences[-1].tokens  # and the tail


def test_per_token_running_probabilities_end_at_the_review_probability(explainer: Explainer) -> None:
    explanation = explainer.explain(TURNING, per_token=True)
    steps = explanation.token_steps
    assert len(steps) == explanation.tokens_read
    assert steps[-1].running_probability == explanation.probability
    by_sentence = explainer.explain(TURNING)
    for sentence, coarse in zip(explanation.sentences, by_sentence.sentences, strict=True):
        last = [t for t in steps if t.sentence == explanation.sentences.index(sentence)][-1]
        assert last.running_probability == pytest.approx(coarse.running_probability, abs=1e-5)
        assert sentence.effect == pytest.approx(coarse.effect, abs=1e-5)


def test_a_review_of_one_sentence_is_compared_with_an_empty_review(explainer: Explainer) -> None:
    explanation = explainer.explain("The plot is terrible.")
    (only,) = explanation.sentences
    unk = float(explainer.predict_ids([[explainer.model.unk_id]])[0])
    assert only.effect == pytest.approx(explanation.probability - unk, abs=1e-5)
    assert explanation.turning_point is None and explanation.most_decisive == 0


PIECES = ["A wonderful film", "the plot is terrible", ".", "!", "?!", "...", "…", ",", " ", "\n\n", "<br />",
          "<i>", "Mr.", "e.g. ", "naïve", "电影很好。", "🎬", "\u200b", "\u00ad", "ﬁne", "x" * 50, "\x1c", "\t"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from(PIECES), min_size=1, max_size=30).map("".join) | st.text(min_size=1,
                                                                                                 max_size=200))
def test_tokens_fall_inside_their_sentence_and_the_last_step_is_predict(explainer: Explainer, text: str) -> None:
    explanation = explainer.explain(text, per_token=True)
    spans = [(s.start, s.end) for s in explanation.sentences]
    for step in explanation.token_steps:
        start, end = spans[step.sentence]
        assert start <= step.start < end, (text, step, spans)
    if explanation.token_steps:
        assert explanation.token_steps[-1].running_probability == explanation.probability
    assert explanation.probability == pytest.approx(explainer.predict(text), abs=1e-5)
