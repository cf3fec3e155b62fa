"""Split a review into sentences, as character spans of the text it was given.

Pure and dependency-free (the server's dependencies stay minimal), used by Explain
(:mod:`runtime.explain`). A span is ``(start, end)``: Python string indices, i.e. Unicode code
points, ``end`` exclusive, so ``text[start:end]`` is the sentence. The rules, in order:

1. Hard breaks: line-break and block markup (``<br />``, ``<br>``, ``<p>``, ``</div>``, ...; the
   IMDB reviews' paragraph marks) and blank lines end a sentence; they belong to no sentence.
2. Sentence ends: ``.``, ``!``, ``?``, ``…`` (and runs of them, ``?!``, ``...``), optionally
   followed by closing quotes or brackets, then whitespace; or the CJK marks ``。！？``.
   Not an end: a known abbreviation (``Mr.``, ``Dr.``, ``e.g.``, ``vs.``), a single-letter
   initial (``J. R. R.``), or any full stop/ellipsis followed by a lower-case letter or a digit.
3. Long sentences: a piece longer than ``max_chars`` is cut at its last clause mark
   (``; : , -``) or, failing that, its last whitespace before the limit (a run without
   either is cut at the limit), so no sentence outweighs the rest of a review.
4. Each piece is stripped of surrounding whitespace; empty pieces are dropped.

Guarantees (tests/serve/test_sentences.py, property-based): spans are non-empty, ascending,
disjoint, start and end on non-space characters (Unicode White_Space), are at most ``max_chars`` long, and cover
every character of the text except whitespace and hard-break markup.
"""

from __future__ import annotations

import re

Span = tuple[int, int]
DEFAULT_MAX_CHARS = 400
# Whitespace as the tokenizer's pre-tokenizer sees it (Unicode's White_Space property), not
# Python's str.isspace(), which also counts the separators U+001C..U+001F: those are tokens.
WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
SPACE, NOT_SPACE = f"[{WS}]", f"[^{WS}]"
# Markup that breaks a line or a block: a sentence never runs across it.
# Tags are matched as the tokenizer's normalizer removes them (``<[^<>]{0,40}>``), so whatever
# the splitter drops as a break is never read as tokens.
HARD_BREAK = re.compile(r"<(?=\s*/?\s*(?:br|p|div|li|ul|ol|hr|h[1-6]|tr|blockquote)\b)[^<>]{0,40}>"
                        r"|\n[ \t\r\f\v]*\n", re.IGNORECASE)
# A sentence end: terminal marks, closing quotes/brackets, then whitespace (or the CJK marks alone).
END = re.compile(rf"[.!?…]+[\"'”’»)\]]*(?={SPACE})|[。！？]+[」』”’)]*")
ABBREVIATIONS = frozenset([
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "eg", "ie", "cf", "al", "approx", "no",
    "vol", "ch", "pp", "mt", "ft", "lt", "col", "gen", "sgt", "capt", "rev", "inc", "ltd", "co", "corp",
    "dept", "fig", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
])
CLAUSE_MARK = re.compile(rf"[;:,]{SPACE}|{SPACE}[-–—]{SPACE}")


def split_sentences(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[Span]:
    """Sentence spans of ``text`` (see the module docstring); ``[]`` when it has only whitespace and markup.

    Raises ``ValueError`` if ``max_chars`` < 1.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    spans: list[Span] = []
    block_start = 0
    for brk in [*HARD_BREAK.finditer(text), None]:
        block_end = len(text) if brk is None else brk.start()
        for start, end in _sentence_pieces(text, block_start, block_end):
            for piece in _cut_long(text, start, end, max_chars):
                stripped = _strip(text, *piece)
                if stripped is not None:
                    spans.append(stripped)
        if brk is not None:
            block_start = brk.end()
    return spans


def _sentence_pieces(text: str, start: int, end: int) -> list[Span]:
    """``text[start:end]`` (no hard break inside) cut after each sentence end."""
    pieces, begin = [], start
    for match in END.finditer(text, start, end):
        if _is_sentence_end(text, match, end):
            pieces.append((begin, match.end()))
            begin = match.end()
    pieces.append((begin, end))
    return pieces


def _is_sentence_end(text: str, match: re.Match[str], limit: int) -> bool:
    marks = match.group()
    following = re.match(rf"{SPACE}*({NOT_SPACE}?)", text[match.end():min(limit, match.end() + 40)])
    next_char = following.group(1) if following else ""
    if not next_char:
        return True  # the end of the block
    if marks[0] in ".…" and (next_char.islower() or next_char.isdigit()):
        return False  # "the U.S. version", "wait... what", "No. 5"
    if marks.rstrip("\"'”’»)]") == ".":
        word = re.search(r"([\w.]+)$", text[max(0, match.start() - 20):match.start()])
        if word:
            token = word.group(1).lower().replace(".", "")
            if token in ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
                return False  # "Dr. Who", "e.g. this", "J. R. R. Tolkien"
    return True


def _cut_long(text: str, start: int, end: int, max_chars: int) -> list[Span]:
    """``(start, end)`` cut into pieces of at most ``max_chars`` (after stripping), at clause marks if possible."""
    pieces = []
    while True:
        stripped = _strip(text, start, end)
        if stripped is None or stripped[1] - stripped[0] <= max_chars:
            pieces.append((start, end))
            return pieces
        start = stripped[0]
        window = text[start:start + max_chars]
        cut = max((m.start() + 1 for m in CLAUSE_MARK.finditer(window)), default=0)
        if cut <= max_chars // 4:  # no clause mark in a useful place: last whitespace instead
            cut = max((m.start() for m in re.finditer(SPACE, window)), default=0)
        if cut <= 0:
            cut = max_chars
        pieces.append((start, start + cut))
        start += cut


def is_space(char: str) -> bool:
    """Whether ``char`` is whitespace to the tokenizer (see :data:`WS`)."""
    return _SPACE.fullmatch(char) is not None


_SPACE = re.compile(SPACE)


def _strip(text: str, start: int, end: int) -> Span | None:
    while start < end and is_space(text[start]):
        start += 1
    while end > start and is_space(text[end - 1]):
        end -= 1
    return (start, end) if start < end else None
