"""Text -> token ids, shared by training, export, the server and local scoring so all see identical input.

Two steps, in this order, on every path:

1. :func:`clean_text` (here, in Python): removes what a reader does not see. The rule is one
   fixed table, :data:`INVISIBLE`: Unicode's ``Default_Ignorable_Code_Point`` characters (soft
   hyphen, zero-width space/joiners, word joiner, bidirectional marks and overrides, variation
   selectors, tag characters, Hangul fillers, ...), every format character (category ``Cf``),
   and every control character (``Cc``) except the whitespace ones (tab, line feed, vertical
   tab, form feed, carriage return, next line). Values are those of Unicode 14.0 (Python
   3.11's ``unicodedata`` and Perl's Default_Ignorable_Code_Point property), written out so
   that a newer Python's Unicode tables cannot change how a text is read.
2. The normalizer inside ``tokenizer.json`` (markup such as ``<br />`` -> space, NFKC,
   lower case), the pre-tokenizer and WordPiece. The shipped ``tokenizer.json`` is not
   changed: cleaning happens before it.

What the tokenizer file cannot express (the head+tail truncation) also lives here, with no
dependency on PyTorch. A text with nothing left to read after both steps has no token; the
server and the scorers refuse it (:func:`nothing_to_read`, :func:`encode_for_model`) like an
empty text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from runtime.limits import MAX_CHARS_PER_TEXT, NOTHING_TO_READ, text_problem

__all__ = ["INVISIBLE", "MAX_CHARS_PER_TEXT", "NOTHING_TO_READ", "ModelInput", "Vocabulary", "clean_text",
           "encode_for_model", "encode_texts", "nothing_to_read", "pad_batch", "quick_readability", "text_problem",
           "tokenize", "truncate_head_tail"]

# Inclusive code point ranges removed by clean_text: Default_Ignorable_Code_Point (Unicode
# 14.0 DerivedCoreProperties.txt) | General_Category=Cf | (Cc - {tab, LF, VT, FF, CR, NEL}).
INVISIBLE: tuple[tuple[int, int], ...] = (
    (0x0000, 0x0008), (0x000E, 0x001F), (0x007F, 0x0084), (0x0086, 0x009F), (0x00AD, 0x00AD),
    (0x034F, 0x034F), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F),
    (0x0890, 0x0891), (0x08E2, 0x08E2), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
    (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD),
    (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)
_INVISIBLE_CLASS = "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in INVISIBLE)
_INVISIBLE = re.compile(f"[{_INVISIBLE_CLASS}]+")
_VISIBLE_RUN = re.compile(f"[^{_INVISIBLE_CLASS}]+")
# Whitespace and invisible characters at the start of a text: what follows is either its end
# (nothing to read), a '<' (maybe markup: ask the tokenizer) or a character a reader sees.
_BLANK_PREFIX = re.compile(rf"[\s{_INVISIBLE_CLASS}]*")


def clean_text(text: str) -> str:
    """``text`` without the characters of :data:`INVISIBLE` (removed, not replaced: a soft
    hyphen or zero-width joiner inside a word leaves the word whole)."""
    return _INVISIBLE.sub("", text)


def quick_readability(text: str) -> bool | None:
    """Whether ``text`` has something to read, found without tokenizing: True (a visible
    character comes before any ``<``), False (only whitespace and invisible characters), or
    None (its first visible character is ``<``: markup or not, only the tokenizer can tell).

    Stops at the first visible character, so it costs next to nothing for ordinary texts.
    """
    end = _BLANK_PREFIX.match(text).end()  # type: ignore[union-attr]  # * always matches
    if end == len(text):
        return False
    return None if text[end] == "<" else True


def nothing_to_read(tokenizer: Tokenizer, text: str) -> bool:
    """True when ``text`` yields no token once cleaned: whitespace, markup, invisible characters only."""
    quick = quick_readability(text)
    if quick is not None:
        return not quick
    return not tokenize(tokenizer, [text])[0]


def truncate_head_tail(ids: Sequence[int], max_tokens: int, head_tokens: int) -> list[int]:
    """Keep the first ``head_tokens`` and the last ``max_tokens - head_tokens`` ids.

    Reviews tend to state their verdict at the end, so the tail is kept as well as the head.
    """
    if len(ids) <= max_tokens:
        return list(ids)
    tail = max_tokens - head_tokens
    return list(ids[:head_tokens]) + (list(ids[-tail:]) if tail > 0 else [])


def tokenize(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Clean and tokenize ``texts``: all their ids, untruncated (empty: nothing to read)."""
    # encode_batch_fast: the same ids without character offsets (about 25% less tokenizer time).
    encodings = tokenizer.encode_batch_fast([clean_text(t) for t in texts], add_special_tokens=False)
    return [enc.ids for enc in encodings]


def encode_with_offsets(tokenizer: Tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """All ids of ``text`` (untruncated; the same ids :func:`tokenize` gives) and each id's
    ``(start, end)`` character offsets (code points, end exclusive) into ``text`` as given.

    The text is cleaned first (:func:`clean_text`), like every other path; the tokenizer's
    normalizer (markup, NFKC, lower case) keeps track of alignment to the cleaned text, and
    the offsets are then mapped back over the removed invisible characters, so they point
    into the original text (Explain's sentence mapping).
    """
    kept = [m.span() for m in _VISIBLE_RUN.finditer(text)]  # runs of characters clean_text keeps
    cleaned = "".join(text[a:b] for a, b in kept)
    encoding = tokenizer.encode(cleaned, add_special_tokens=False)
    if len(cleaned) == len(text):
        return encoding.ids, [tuple(o) for o in encoding.offsets]
    original = np.empty(len(cleaned) + 1, dtype=np.int64)  # cleaned position -> original position
    at = 0
    for a, b in kept:
        original[at:at + b - a] = np.arange(a, b)
        at += b - a
    original[len(cleaned)] = len(text)
    offsets = [(int(original[start]), int(original[end - 1]) + 1 if end > start else int(original[start]))
               for start, end in encoding.offsets]
    return encoding.ids, offsets


def encode_texts(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    max_tokens: int,
    head_tokens: int,
    unk_id: int,
) -> list[list[int]]:
    """Tokenize ``texts`` into id lists of length 1..max_tokens (training, export, benchmarks).

    A text with nothing to read becomes a single unknown token here, so every text maps to a
    valid model input; the server and the scorers refuse such a text instead
    (:func:`encode_for_model`).
    """
    return [truncate_head_tail(ids, max_tokens, head_tokens) or [unk_id] for ids in tokenize(tokenizer, texts)]


@dataclass(frozen=True)
class Vocabulary:
    """What the readability signal needs to know of a WordPiece vocabulary.

    ``continuation``: bool [vocab_size], True for the ids of word pieces that continue a word
    (``##`` prefix); ``unk_id``: the unknown token.
    """

    continuation: np.ndarray
    unk_id: int

    @classmethod
    def of(cls, tokenizer: Tokenizer, unk_id: int) -> Vocabulary:
        vocab = tokenizer.get_vocab()
        prefix = getattr(tokenizer.model, "continuing_subword_prefix", None) or "##"
        continuation = np.zeros(max(vocab.values(), default=0) + 1, dtype=bool)
        continuation[[i for token, i in vocab.items() if token.startswith(prefix)]] = True
        return cls(continuation, unk_id)

    def known_word_fraction(self, ids: Sequence[int]) -> float:
        """Share of the words in ``ids`` (each a first piece and its ``##`` continuations) that
        the vocabulary holds whole: one piece, not the unknown token. About 0.96 for English
        reviews, lower for foreign, non-Latin or garbled text (German ~0.5, Chinese ~0.4,
        Japanese 0.0: docs/model-repository.md); 0.0 for no ids.
        """
        tokens = np.asarray(ids, dtype=np.int64)
        if tokens.size == 0:
            return 0.0
        continues = self.continuation[tokens]
        starts = ~continues
        whole = starts & (tokens != self.unk_id) & ~np.append(continues[1:], False)
        return float(whole.sum() / starts.sum()) if starts.any() else 0.0


@dataclass(frozen=True)
class ModelInput:
    """One text as the model reads it: ``ids`` (1..max_tokens, head+tail) and its readability signal."""

    ids: list[int]
    known_word_fraction: float


def encode_for_model(tokenizer: Tokenizer, vocabulary: Vocabulary, texts: Sequence[str], max_tokens: int,
                     head_tokens: int) -> list[ModelInput | None]:
    """Clean, tokenize and truncate ``texts``; None for a text with nothing to read (the caller refuses it)."""
    out: list[ModelInput | None] = []
    for ids in tokenize(tokenizer, texts):
        kept = truncate_head_tail(ids, max_tokens, head_tokens)
        out.append(ModelInput(kept, vocabulary.known_word_fraction(kept)) if kept else None)
    return out


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists into the model's inputs: ``input_ids`` int64 [B, T], ``lengths`` int64 [B]."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    input_ids = np.full((len(sequences), int(lengths.max(initial=1))), pad_id, dtype=np.int64)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = seq
    return input_ids, lengths
