"""The shared cleaning: what a reader does not see does not change the ids, on any text."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.preprocessing import (
    INVISIBLE,
    Vocabulary,
    clean_text,
    encode_for_model,
    nothing_to_read,
    quick_readability,
    tokenize,
)
from tests.conftest import REPO_ROOT
from tests.fixtures.tiny_repository import tiny_tokenizer

SHIPPED_TOKENIZER = REPO_ROOT / "models" / "imdb-lstm" / "1" / "tokenizer.json"
TOKENIZER = tiny_tokenizer()
INVISIBLE_CHARS = [chr(c) for a, b in INVISIBLE for c in range(a, b + 1)]
# One of each kind the issue names, and more of each kind.
KINDS = {"soft hyphen": "\u00ad", "zero-width space": "\u200b", "zero-width non-joiner": "\u200c",
         "zero-width joiner": "\u200d", "word joiner": "\u2060", "left-to-right mark": "\u200e",
         "right-to-left override": "\u202e", "pop directional isolate": "\u2069", "arabic letter mark": "\u061c",
         "variation selector 16": "\ufe0f", "variation selector 256": "\U000e01ef", "tag letter a": "\U000e0061",
         "byte-order mark": "\ufeff", "mongolian vowel separator": "\u180e", "combining grapheme joiner": "\u034f",
         "hangul filler": "\u3164", "interlinear annotation": "\ufff9", "NUL": "\x00", "bell": "\x07",
         "escape": "\x1b", "delete": "\x7f", "C1 control": "\x9b"}


def bounded(examples: int):
    return settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))


words = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_invisible_character_is_removed(kind: str) -> None:
    mark = KINDS[kind]
    assert clean_text(f"Ex{mark}cel{mark}lent{mark} film") == "Excellent film"


def test_the_table_holds_format_and_control_characters_and_not_whitespace() -> None:
    removed = set(INVISIBLE_CHARS)
    assert all(c in removed for c in map(chr, range(0x110000)) if unicodedata.category(c) == "Cf")
    assert not removed & set("\t\n\x0b\x0c\r\x85 \u00a0\u2028\u3000")
    assert all(unicodedata.category(c) in ("Cc", "Cf", "Mn", "Lo", "Cn") for c in removed)


@bounded(200)
@given(text=words, marks=st.lists(st.tuples(st.integers(0, 40), st.sampled_from(INVISIBLE_CHARS)), max_size=8))
def test_inserting_invisible_characters_anywhere_leaves_the_ids_unchanged(text: str, marks) -> None:
    marked = text
    for position, mark in marks:
        position = min(position, len(marked))
        marked = marked[:position] + mark + marked[position:]
    assert tokenize(TOKENIZER, [marked]) == tokenize(TOKENIZER, [text])


@bounded(300)
@given(text=st.one_of(words, st.lists(st.sampled_from(["<br />", "<i>", " ", "\u200b", "\x01", "<", "a", "\ufeff",
                                                         "<b\u200b>", "\t", "&nbsp;", ">"]),
                                       max_size=8).map("".join)))
def test_nothing_to_read_is_exactly_no_token(text: str) -> None:
    """The server's cheap check agrees with the tokenizer on every text."""
    assert nothing_to_read(TOKENIZER, text) == (not tokenize(TOKENIZER, [text])[0])


@pytest.mark.parametrize("text", ["<br /><br /><br />", "\u200b\u200b\u200b", "\ufeff", "\x01\x02\x7f", "   ",
                                  "<p></p>\u200d", "\u2066\u2069", "\ufe0f\n\U000e0041", "<b>\u00ad</b>", ""])
def test_texts_with_nothing_to_read(text: str) -> None:
    assert nothing_to_read(TOKENIZER, text)
    assert encode_for_model(TOKENIZER, Vocabulary.of(TOKENIZER, 1), [text], 24, 8) == [None]


def test_quick_readability_needs_the_tokenizer_only_for_markup() -> None:
    assert quick_readability(" \u200bgreat") is True
    assert quick_readability("\u200b \x01") is False
    assert quick_readability(" <br />") is None


@pytest.mark.skipif(not SHIPPED_TOKENIZER.is_file(), reason="no shipped model")
def test_soft_hyphens_leave_the_shipped_models_ids_whole() -> None:
    """Handed case c20: soft hyphens inside words once made a 1.00 review score 0.005."""
    from tokenizers import Tokenizer

    shipped = Tokenizer.from_file(str(SHIPPED_TOKENIZER))
    pairs = [("Excellent film, highly recommended.", "Ex\xadcel\xadlent film, high\xadly rec\xadom\xadmend\xaded."),
             ("I loved it. Superb.", "I lo\xadved it. Su\xadperb.")]
    for plain, hyphenated in pairs:
        assert tokenize(shipped, [hyphenated]) == tokenize(shipped, [plain])


@pytest.mark.skipif(not SHIPPED_TOKENIZER.is_file(), reason="no shipped model")
def test_known_word_fraction_tells_english_from_what_the_model_cannot_read() -> None:
    from tokenizers import Tokenizer

    shipped = Tokenizer.from_file(str(SHIPPED_TOKENIZER))
    vocabulary = Vocabulary.of(shipped, shipped.token_to_id("[UNK]"))
    texts = ["This movie was a wonderful surprise, the acting was great and the plot kept me guessing.",
             "Der Film war großartig, die Schauspieler waren hervorragend und die Handlung spannend.",
             "この映画は素晴らしかった。俳優の演技も最高でした。"]
    english, german, japanese = (x.known_word_fraction for x in encode_for_model(shipped, vocabulary, texts, 400, 128))
    assert english == 1.0 and german < 0.6 and japanese == 0.0


def test_known_word_fraction_counts_whole_words() -> None:
    vocabulary = Vocabulary(np.array([False, False, False, True, False]), unk_id=1)
    assert vocabulary.known_word_fraction([2, 4]) == 1.0  # two words, each one known piece
    assert vocabulary.known_word_fraction([2, 3, 4]) == 0.5  # "2 ##3" is a word in pieces
    assert vocabulary.known_word_fraction([1, 4]) == 0.5  # an unknown word
    assert vocabulary.known_word_fraction([]) == 0.0
