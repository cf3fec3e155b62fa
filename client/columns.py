"""Which columns a scoring run reads and adds: repeated names, text and gold-label detection.

Nothing is dropped or overwritten without a word:

* a column name that appears more than once (CSV header, Parquet schema, JSON object keys)
  keeps its first column under the name and the others under ``name.1``, ``name.2`` ...
  (pandas' convention); every rename is reported;
* the text column is the one named by ``--text-column``, else the one column whose name is
  a common name for review text (:data:`TEXT_NAMES`); none or several: refused, naming the
  columns and the flag;
* the gold-label column likewise (:data:`LABEL_NAMES`); none or several: no evaluation, and
  the summary says why;
* the two added columns default to ``probability`` and ``label``; when the input already
  has one of these (the common ``text,label`` layout), the added one is called
  ``predicted_probability`` / ``predicted_label`` instead. Names given by flag that clash
  are refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

# Common names of the review-text and gold-label columns in public text-classification sets
# (IMDB's own CSV exports use review/sentiment; most sets on the Hugging Face hub use text/label).
TEXT_NAMES = ("review", "text", "review_text", "sentence", "content")
LABEL_NAMES = ("sentiment", "label", "labels", "polarity", "gold_label")
PROBABILITY = "probability"
BOM = "\ufeff"
PREDICTION = "label"
# The share of a review's words the model knew (docs/batch-scoring.md): low means it could not read it.
KNOWN = "known_word_fraction"


class ColumnError(ValueError):
    """The columns to read or add cannot be chosen without guessing (the message names the flag)."""


def unique_names(names: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Distinct names for ``names`` (order kept) and, per repeated name, what its copies are called.

    ``["note", "note", "x"]`` -> ``(["note", "note.1", "x"], {"note": ["note", "note.1"]})``;
    a generated name never collides with a name present in the input.
    """
    taken, counts = set(names), Counter(names)
    out: list[str] = []
    repeated: dict[str, list[str]] = {}
    for name in names:
        if counts[name] == 1:
            out.append(name)
            continue
        copies = repeated.setdefault(name, [])
        new, number = name, len(copies)
        while copies and new in taken:  # the first copy keeps the name
            new = f"{name}.{number}"
            number += 1
        taken.add(new)
        copies.append(new)
        out.append(new)
    return out, repeated


def without_marks(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """``names`` with leading byte-order marks (U+FEFF) removed, and a note per name changed.

    A mark is invisible and never part of a name a user would type: it is what a tool that
    read a UTF-8 file with a mark as plain UTF-8 leaves on the first column (pandas from such
    a CSV, then written to Parquet). A name that would become another one present is kept.
    """
    present, out, notes = set(names), [], []
    for name in names:
        clean = name.lstrip(BOM)
        if clean != name and clean and clean not in present:
            notes.append(f"column {name!r} starts with a byte-order mark: read as {clean!r}")
            name = clean
        out.append(name)
    return out, notes


def _match(columns: Sequence[str], known: Sequence[str]) -> list[str]:
    """Columns whose name (ignoring case and surrounding spaces) is one of ``known``."""
    return [c for c in columns if c.strip().lower() in known]


@dataclass
class ColumnChoice:
    """The columns a run reads (``text``, ``label`` or None) and what the user should be told (``notes``)."""

    text: str
    label: str | None
    notes: list[str] = field(default_factory=list)


def choose_columns(source: str, columns: Sequence[str], repeated: dict[str, list[str]], text: str | None,
                   label: str | None) -> ColumnChoice:
    """The text and gold-label columns of an input with ``columns`` (already made distinct).

    ``text``/``label``: the flags' values (None: detect; ``label=""``: no evaluation).
    Raises :class:`ColumnError` when the text column is missing, ambiguous, or detected but
    repeated in the input (which copy to score would be a guess).
    """
    notes = [f"repeated column {name!r} read as {', '.join(map(repr, copies))}" for name, copies in repeated.items()]
    if text is not None:
        if text not in columns:
            raise ColumnError(f"{source}: no column {text!r} (columns: {list(columns)}); pass --text-column")
        chosen = text
    else:
        found = _match(columns, TEXT_NAMES)
        if len(found) != 1:
            what = "no column with a usual name" if not found else f"several candidates {found}"
            raise ColumnError(f"{source}: cannot tell which column holds the review text ({what}; columns: "
                              f"{list(columns)}); pass --text-column NAME")
        chosen = found[0]
        if chosen in repeated:
            raise ColumnError(f"{source}: column {chosen!r} appears {len(repeated[chosen])} times; its copies are "
                              f"read as {repeated[chosen]}: pass --text-column with the one to score "
                              "(the others are kept in the output)")
    return ColumnChoice(chosen, _choose_label(columns, repeated, chosen, label, notes), notes)


def _choose_label(columns: Sequence[str], repeated: dict[str, list[str]], text: str, label: str | None,
                  notes: list[str]) -> str | None:
    if label == "":
        return None
    if label is not None:
        if label not in columns:
            notes.append(f"no column {label!r} for --label-column: not evaluated")
            return None
        return label
    found = [c for c in _match(columns, LABEL_NAMES) if c != text]
    if len(found) > 1:
        notes.append(f"several gold-label candidates {found}: not evaluated; pass --label-column NAME")
        return None
    if found and found[0] in repeated:
        notes.append(f"gold-label column {found[0]!r} is repeated: not evaluated; pass --label-column NAME")
        return None
    return found[0] if found else None


def added_columns(columns: Sequence[str], probability: str | None, prediction: str | None,
                  known: str | None = None) -> tuple[str, str, str]:
    """Names of the added P(positive), predicted-label and known-word-fraction columns for an
    input with ``columns``.

    Given names (flags) are used as they are, and refused when the input has them or when two
    are the same; default names step aside (``predicted_<name>``, then ``predicted_<name>_2`` ...).
    """
    taken = set(columns)
    given = [name for name in (probability, prediction, known) if name is not None]
    clash = sorted(set(given) & taken)
    if clash:
        raise ColumnError(f"the input already has column(s) {clash}: name the added columns differently with "
                          "--probability-column/--prediction-column/--known-column")
    if len(set(given)) < len(given):
        raise ColumnError(f"--probability-column, --prediction-column and --known-column must differ (got {given})")
    names = []
    for name, default in ((probability, PROBABILITY), (prediction, PREDICTION), (known, KNOWN)):
        if name is None:
            name, number = default, 1
            while name in taken or name in given:
                number += 1
                name = f"predicted_{default}" if number == 2 else f"predicted_{default}_{number - 1}"
        taken.add(name)
        names.append(name)
    return names[0], names[1], names[2]
