"""Text encodings of input files and arguments: byte-order marks, non-UTF-8 bytes, invalid Unicode.

Reviews travel as UTF-8 (protobuf strings, Parquet strings, the tokenizer). Anything else is
found here, before a request is built or a row is scored, and reported with what was wrong,
where, and what to do:

* a byte-order mark (UTF-8, UTF-16, UTF-32) at the start of a file says how it is encoded;
  it is consumed, never part of a column name or a record (:func:`open_text`);
* bytes that are not UTF-8 are read as surrogate escapes (``errors="surrogateescape"``) so
  one bad row does not stop a run; :func:`unicode_problem` names them;
* lone surrogates (a JSON ``\\ud83d`` escape without its pair) are not valid Unicode and
  cannot be encoded as UTF-8; :func:`unicode_problem` names them too.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterable
from pathlib import Path
from typing import IO

# Longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
BOM = "\ufeff"
_SURROGATE = re.compile("[\ud800-\udfff]")
ENCODING_HINT = ("save the file as UTF-8, or pass --encoding with the encoding it is in "
                 "(e.g. --encoding cp1252 for Windows Western European, --encoding latin-1)")


class EncodingError(ValueError):
    """A file or argument is not in the expected encoding (the message says what to do)."""


def sniff_encoding(head: bytes) -> tuple[str, str | None]:
    """The codec to read a file that starts with ``head``, and the byte-order mark found (or None).

    Without a mark the file is read as UTF-8. Raises :class:`EncodingError` when ``head``
    holds NUL bytes (UTF-16 or UTF-32 without a mark: read as UTF-8 every other byte would
    be NUL and no column would match).
    """
    for mark, codec in _BOMS:
        if head.startswith(mark):
            return codec, {"utf-8-sig": "UTF-8", "utf-16": "UTF-16", "utf-32": "UTF-32"}[codec]
    if b"\x00" in head:
        guess = "utf-16-le" if head[1:2] == b"\x00" else "utf-16-be" if head[:1] == b"\x00" else None
        hint = f"pass --encoding {guess}" if guess else "pass --encoding with the file's encoding"
        raise EncodingError(f"the file holds NUL bytes, so it is not UTF-8 text (UTF-16 or UTF-32 without a "
                            f"byte-order mark?): {hint}, or save it as UTF-8")
    return "utf-8", None


def open_text(path: Path, encoding: str | None, newline: str | None) -> tuple[IO[str], str]:
    """``path`` opened for reading text, and a description of the encoding used.

    ``encoding=None`` reads UTF-8, or what a byte-order mark at the start says; the mark is
    consumed either way. Undecodable bytes come through as surrogate escapes (see
    :func:`unicode_problem`). Works on pipes and FIFOs (only buffered bytes are peeked).
    Raises :class:`EncodingError` for an unknown ``encoding`` or a file that is plainly not
    UTF-8 (NUL bytes), and OSError when the file cannot be opened.
    """
    if encoding is not None:
        try:
            codec = codecs.lookup(encoding).name
        except LookupError as exc:
            raise EncodingError(f"unknown --encoding {encoding!r}: use a Python codec name such as utf-8, "
                                "utf-16, cp1252 or latin-1") from exc
        if codec == "utf-8":
            codec = "utf-8-sig"  # a mark at the start is still not part of the first field
        described = encoding
    binary = io.BufferedReader(path.open("rb", buffering=0), buffer_size=1 << 16)
    try:
        head = binary.peek(4)[:4]
        if encoding is None:
            codec, mark = sniff_encoding(head)
            described = "utf-8" if mark is None else f"{codec.removesuffix('-sig')}, from its byte-order mark"
    except EncodingError as exc:
        binary.close()
        raise EncodingError(f"{path}: {exc}") from exc
    return io.TextIOWrapper(binary, encoding=codec, errors="surrogateescape", newline=newline), described


def unicode_problem(text: str) -> str | None:
    """Why ``text`` cannot be sent as UTF-8 (a short phrase naming the character), or None when it can.

    A surrogate U+DC80..U+DCFF is a byte that was not valid in the file's encoding (read
    with ``surrogateescape``); any other surrogate is a lone half of a pair, such as a JSON
    ``\\ud83d`` escape without its partner.
    """
    match = _SURROGATE.search(text)
    if match is None:
        return None
    code, where = ord(match.group()), match.start() + 1
    if 0xDC80 <= code <= 0xDCFF:
        return f"not valid UTF-8 (byte 0x{code - 0xDC00:02x} at character {where})"
    return (f"not valid Unicode (lone surrogate U+{code:04X} at character {where}: half of a pair, "
            "e.g. a JSON \\u escape without its partner)")


def row_problem(column: str, text: str) -> str | None:
    """:func:`unicode_problem` of one field, phrased for the bad-rows file with what to do."""
    problem = unicode_problem(text)
    if problem is None:
        return None
    hint = ENCODING_HINT if problem.startswith("not valid UTF-8") else "fix the text where it was produced"
    return f"column {column!r} is {problem}; {hint}"


def repair(text: str) -> str:
    """``text`` with every surrogate replaced by U+FFFD, so that it can be written as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def check_arguments(texts: Iterable[str], what: str = "argument") -> list[str]:
    """Command-line texts with a leading byte-order mark removed; raises EncodingError for invalid ones.

    An argument that was not UTF-8 reaches Python as surrogate escapes (PEP 383); the error
    names the argument, the byte and what to do, instead of failing inside protobuf.
    """
    cleaned = []
    for number, text in enumerate(texts, 1):
        problem = unicode_problem(text)
        if problem is not None:
            raise EncodingError(f"{what} {number} is {problem}: the terminal, or the file it came from, is not "
                                "UTF-8; convert it (e.g. iconv -f cp1252 -t utf-8) or use a UTF-8 locale")
        cleaned.append(text.removeprefix(BOM))
    return cleaned
