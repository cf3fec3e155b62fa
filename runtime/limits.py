"""The per-text limit every path applies, in plain Python (the gRPC-only client imports it too).

:func:`text_problem` is the one wording of a refused text: the server prefixes the field
(``texts[3] has ...``) and answers INVALID_ARGUMENT; ``--local``, ``--server`` and ``--ray``
list it as the row's reason in the bad-rows file.
"""

from __future__ import annotations

# Longest accepted text, in characters (Unicode code points, before cleaning): the server's
# --max-chars-per-text default and the limit of --local and --ray scoring.
MAX_CHARS_PER_TEXT = 100_000
NOTHING_TO_READ = ("has nothing to read: only markup, whitespace, invisible (format) or control characters; "
                   "send the review's words")


def text_problem(text: str, max_chars: int) -> str | None:
    """Why ``text`` is refused before tokenizing (empty, blank, over ``max_chars``), or None.

    Nothing-to-read after cleaning (:data:`NOTHING_TO_READ`) is found when tokenizing
    (:func:`runtime.preprocessing.nothing_to_read`).
    """
    if not text or text.isspace():
        return "is empty: a review needs at least one non-space character"
    if len(text) > max_chars:
        return (f"has {len(text)} characters; at most {max_chars} accepted "
                "(the model reads only the first and last tokens of long reviews)")
    return None
