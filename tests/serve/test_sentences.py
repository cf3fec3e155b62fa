"""runtime/sentences.py: sentence spans always point at sentence text in the original string."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.sentences import HARD_BREAK, is_space, split_sentences

PIECES = ["Great film", "awful", ".", "!", "?", "?!", "...", "…", "。", "！", ",", ";", " - ", ":", "\"", "”", "'",
          ")", "(", " ", "  ", "\n", "\n\n", "\t", "<br />", "<br/>", "<BR>", "<p>", "</p>", "<i>", "</i>", "<",
          ">", "Mr.", "Dr. ", "e.g. ", "U.S.", "J. R. R.", "3.5", "No. 5", "naïve", "drôle", "电影很好", "🎬",
          "\u200b", "\u00ad", "ﬁne", "A", "b", "x" * 30, "\u2028", "\x1c"]
texts = st.lists(st.sampled_from(PIECES), max_size=40).map("".join) | st.text(max_size=300)


def covered(text: str, spans: list[tuple[int, int]]) -> set[int]:
    return {i for start, end in spans for i in range(start, end)}


def uncovered_allowed(text: str) -> set[int]:
    """Positions no span needs to cover: whitespace and hard-break markup."""
    allowed = {i for i, ch in enumerate(text) if is_space(ch)}
    for match in HARD_BREAK.finditer(text):
        allowed.update(range(match.start(), match.end()))
    return allowed


@settings(max_examples=400, deadline=None)
@given(text=texts, max_chars=st.sampled_from([1, 7, 40, 400]))
def test_spans_are_ordered_disjoint_stripped_bounded_and_cover_every_visible_character(text, max_chars) -> None:
    spans = split_sentences(text, max_chars)
    previous_end = 0
    for start, end in spans:
        assert previous_end <= start < end <= len(text)
        assert not is_space(text[start]) and not is_space(text[end - 1])
        assert end - start <= max_chars
        assert not HARD_BREAK.search(text[start:end])
        previous_end = end
    assert set(range(len(text))) - covered(text, spans) <= uncovered_allowed(text)


@pytest.mark.parametrize(("text", "sentences"), [
    ("Lovely photography and a strong cast. The first act promises a lot. Sadly the story never goes anywhere "
     "and the finale is dreadful. Skip it.",
     ["Lovely photography and a strong cast.", "The first act promises a lot.",
      "Sadly the story never goes anywhere and the finale is dreadful.", "Skip it."]),
    ("Mr. Smith and Dr. Jones, e.g. in the U.S. cut, were fine... mostly. Really?! \"Yes.\" (Sure.)",
     ["Mr. Smith and Dr. Jones, e.g. in the U.S. cut, were fine... mostly.", "Really?!", "\"Yes.\"", "(Sure.)"]),
    ("A good start.<br /><br />A bad end<br/>no stop", ["A good start.", "A bad end", "no stop"]),
    ("J. R. R. Tolkien would weep. It scored 3.5 stars", ["J. R. R. Tolkien would weep.", "It scored 3.5 stars"]),
    ("no punctuation at all in this one", ["no punctuation at all in this one"]),
    ("First paragraph\n\nSecond one", ["First paragraph", "Second one"]),
    ("电影很好。演员很差！", ["电影很好。", "演员很差！"]),
    ("   <br />  ", []),
    ("", []),
])
def test_known_splits(text: str, sentences: list[str]) -> None:
    assert [text[s:e] for s, e in split_sentences(text)] == sentences


def test_a_very_long_sentence_is_cut_at_clause_marks_within_the_limit() -> None:
    text = "and then, " * 200 + "the end"
    spans = split_sentences(text, max_chars=100)
    assert len(spans) > 10 and all(e - s <= 100 for s, e in spans)
    assert all(text[s:e].endswith(",") for s, e in spans[:-1])
    assert "".join(re.sub(r"\s", "", text[s:e]) for s, e in spans) == re.sub(r"\s", "", text)


def test_max_chars_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        split_sentences("text", 0)
