"""``python -m client explain``: an Explain answer as a plain dict (the ``--json`` contract) and in the terminal.

The dict (:func:`explanation_dict`) is the contract scripts read: ``probability`` and
``sentences``, a list of ``{text, start, end, running_probability, effect}`` (offsets in code
points into the text sent; ``null`` where the model read none of a sentence), plus ``label``,
``model``, ``version``, ``turning_point``, ``most_decisive`` (sentence indices or null), token
counts, and per sentence ``swing``, ``tokens``, ``tokens_read``. Fields may be added, never
removed or renamed.

:func:`render` draws it with ``rich``: the review with each sentence coloured by its effect
(green pushed towards positive, red towards negative, stronger for larger effects; grey: not
read), then one bar per sentence of the running probability, 0 to 1, with the 0.5 threshold.
"""

from __future__ import annotations

from typing import Any

BAR_WIDTH = 40
# score --explain's added columns (name, pyarrow type): the turning point's sentence and swing,
# the most decisive sentence and its effect (empty when the review has none, or was refused).
EXPLAIN_COLUMNS = (("turning_point", "string"), ("turning_point_swing", "float32"),
                   ("most_decisive", "string"), ("most_decisive_effect", "float32"))


def _optional(message: Any, name: str) -> float | None:
    return getattr(message, name) if message.HasField(name) else None


def explanation_dict(response: Any) -> dict[str, Any]:
    """A sentiment.v1 ``ExplainResponse`` as the ``--json`` object (see the module docstring)."""
    sentences = [{"text": s.text, "start": s.start, "end": s.end,
                  "running_probability": _optional(s, "running_probability"), "effect": _optional(s, "effect"),
                  "swing": _optional(s, "swing"), "tokens": s.tokens, "tokens_read": s.tokens_read}
                 for s in response.sentences]
    out = {"probability": response.prediction.probability, "label": response.prediction.label,
           "model": response.model.name, "version": int(response.model.version), "sentences": sentences,
           "turning_point": _optional(response, "turning_point"),
           "most_decisive": _optional(response, "most_decisive"),
           "tokens": response.tokens, "tokens_read": response.tokens_read}
    if response.token_steps:
        out["token_steps"] = [{"start": t.start, "end": t.end, "sentence": t.sentence,
                               "running_probability": t.running_probability} for t in response.token_steps]
    return out


def explain_columns(explanation: dict[str, Any]) -> dict[str, Any]:
    """The values of :data:`EXPLAIN_COLUMNS` for one :func:`explanation_dict`."""
    sentences, turning, decisive = (explanation["sentences"], explanation["turning_point"],
                                    explanation["most_decisive"])
    return {"turning_point": None if turning is None else sentences[turning]["text"],
            "turning_point_swing": None if turning is None else sentences[turning]["swing"],
            "most_decisive": None if decisive is None else sentences[decisive]["text"],
            "most_decisive_effect": None if decisive is None else sentences[decisive]["effect"]}


def effect_style(effect: float | None) -> str:
    """A rich style for a sentence with this effect: green or red, brighter as |effect| grows; dim if unread."""
    if effect is None:
        return "dim italic"
    strength = min(1.0, abs(effect) / 0.5) ** 0.5  # 0.5 and beyond: full colour; small effects stay visible
    level = int(60 + 195 * strength)
    colour = f"rgb(0,{level},0)" if effect >= 0 else f"rgb({level},0,0)"
    return f"bold {colour}" if strength > 0.5 else colour


def probability_bar(probability: float, width: int = BAR_WIDTH) -> str:
    """``probability`` (0..1) as a bar of ``width`` cells with eighth-cell precision and a ``│`` at 0.5."""
    eighths = round(max(0.0, min(1.0, probability)) * width * 8)
    full, part = divmod(eighths, 8)
    cells = list("█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "") + " " * width)[:width]
    if cells[width // 2] == " ":
        cells[width // 2] = "│"
    return "".join(cells)


def render(explanation: dict[str, Any], console: Any) -> None:
    """Print ``explanation`` (:func:`explanation_dict`) on a ``rich.console.Console``."""
    from rich.table import Table
    from rich.text import Text

    sentences = explanation["sentences"]
    turning, decisive = explanation["turning_point"], explanation["most_decisive"]
    console.print(Text.assemble((explanation["label"], "bold"), f"  P(positive) = {explanation['probability']:.4f}",
                                f"   {explanation['model']} v{explanation['version']}, "
                                f"{explanation['tokens_read']} of {explanation['tokens']} tokens read"))
    review = Text()
    for i, s in enumerate(sentences):
        review.append(s["text"], style=effect_style(s["effect"]))
        review.append(" " if i + 1 < len(sentences) else "")
    console.print(review)
    table = Table(box=None, pad_edge=False, show_edge=False, expand=True)
    for name, width in (("#", 2), ("running P(positive): 0 ─ 0.5 ─ 1", BAR_WIDTH), ("P", 5), ("swing", 6),
                        ("effect", 6)):
        table.add_column(name, justify="left" if width == BAR_WIDTH else "right", min_width=width, no_wrap=True)
    table.add_column("sentence", ratio=1, overflow="fold")  # wraps in its column: every word stays readable
    for i, s in enumerate(sentences):
        p = s["running_probability"]
        marks = "".join(mark for mark, at in (("◆", turning), ("★", decisive)) if at == i)
        bar = Text("(not read: truncated middle)" if p is None and s["tokens"] else "(no tokens)" if p is None
                   else probability_bar(p), style="dim" if p is None else ("green" if p >= 0.5 else "red"))
        table.add_row(str(i + 1), bar, "" if p is None else f"{p:.3f}", _signed(s["swing"]), _signed(s["effect"]),
                      Text.assemble((f"{marks} " if marks else "", "bold"),
                                    (s["text"], effect_style(s["effect"]))))
    console.print(table)
    console.print("◆ turning point (largest swing)   ★ most decisive (largest effect)   swing: change of the running "
                  "P from the previous sentence   effect: P(review) - P(review without the sentence)", style="dim")


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.3f}"

