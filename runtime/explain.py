"""Explain one review from the LSTM's own memory: the running probability, sentence by sentence,
and each sentence's effect. Pure computation over a :class:`~runtime.step_runner.StepRunner`; no gRPC.

Given the review's token ids with their character offsets and its sentence spans
(:func:`runtime.sentences.split_sentences`):

* **What the model reads** is what Predict reads: all ids, or, past ``max_tokens``, the first
  ``head_tokens`` and the last ``max_tokens - head_tokens`` (:func:`~runtime.preprocessing.truncate_head_tail`).
  A sentence whose tokens all sit in the dropped middle has ``tokens_read == 0``: it gets no
  running probability and no effect (None), never an invented number.
* **Running probability** of a sentence: the head applied to the state the step graph carries
  after the sentence's last read token, i.e. the model's answer had the review ended there.
  The state is carried from sentence to sentence; no prefix is ever scored again from the
  start. The last one is the review's probability (Predict's, within the step graph's 1e-5 parity).
* **Effect** of a sentence: P(review) - P(review without the sentence's read tokens), from the
  same batched pass (:func:`explanation_plans`): at each sentence's start a row takes the
  carried state and sits that sentence out, then reads on beside the others (the prefix is
  shared, not re-read). A review left with no token scores as ``[unk_id]``, as Predict scores
  an empty one.

The computation is a set of row plans (:mod:`runtime.row_plan`): :func:`explain_ids` runs them
alone on a step runner; the server's step scheduler runs the same plans among predictions'
rows (:func:`prepare_explanation`, then :meth:`ExplainJob.finish` on the answers).
* **Swing** of a sentence: its running probability minus the previous read sentence's; the
  **turning point** is the sentence with the largest absolute swing (None with fewer than two
  read sentences); the **most decisive** sentence has the largest absolute effect.

Cost, in model work: alone, one step call per sentence, with 2, 3, ... ``sentences + 1`` rows; the
rows read what follows their sentence, about ``sentences / 2 + 1`` reviews' worth of
row-steps in all, batched (bench/explain_bench.py measures it against Predict).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runtime.preprocessing import truncate_head_tail
from runtime.row_plan import RowPlan, Snapshot, StepModel, run_plans
from runtime.sentences import Span


class TooManySentences(ValueError):
    """The review has more sentences the model reads than the caller allows (each costs a row)."""

    def __init__(self, sentences: int, limit: int) -> None:
        super().__init__(f"the model reads {sentences} sentences of this text; Explain takes at most {limit}")
        self.sentences, self.limit = sentences, limit


@dataclass(frozen=True)
class SentenceExplanation:
    """One sentence: its span ``[start, end)`` in the original text (code points) and what the model made of it.

    ``tokens``: the sentence's token count; ``tokens_read``: how many of them the model reads
    (fewer when the review is truncated). ``running_probability``, ``swing`` and ``effect`` are
    None when ``tokens_read`` is 0 (``swing`` also for the first read sentence).
    """

    start: int
    end: int
    tokens: int
    tokens_read: int
    running_probability: float | None
    swing: float | None
    effect: float | None


@dataclass(frozen=True)
class TokenStep:
    """One read token: its span in the original text, its sentence's index, P(positive) after reading it."""

    start: int
    end: int
    sentence: int
    running_probability: float


@dataclass(frozen=True)
class Explanation:
    """The review's probability, its sentences in order, and the two sentences worth a look (indices or None)."""

    probability: float
    sentences: list[SentenceExplanation]
    turning_point: int | None
    most_decisive: int | None
    tokens: int
    tokens_read: int
    token_steps: list[TokenStep]


def sentence_of_tokens(token_starts: Sequence[int], spans: Sequence[Span]) -> list[int]:
    """Index of the sentence each token belongs to: the last sentence starting at or before the token.

    Tokens before the first sentence (none, for spans from :func:`~runtime.sentences.split_sentences`,
    which drops only whitespace and markup the tokenizer also drops) go to sentence 0.
    """
    starts = [start for start, _ in spans]
    return [max(0, bisect.bisect_right(starts, s) - 1) for s in token_starts]


def _segments(sentence_ids: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(sentence, begin, end)`` runs of equal sentence index in ``sentence_ids`` (ascending)."""
    runs: list[tuple[int, int, int]] = []
    for position, sentence in enumerate(sentence_ids):
        if runs and runs[-1][0] == sentence:
            runs[-1] = (sentence, runs[-1][1], position + 1)
        else:
            runs.append((sentence, position, position + 1))
    return runs


@dataclass(frozen=True)
class ExplainJob:
    """An explanation prepared: the row plans to run (:mod:`runtime.row_plan`) and what turns their
    answers into an :class:`Explanation` (:meth:`finish`).

    ``roots`` fill ``slots`` answers: first the running probability at each of ``cuts`` (token
    counts), then P(review without segment ``i``) for each of ``segments``.
    """

    roots: tuple[RowPlan, ...]
    slots: int
    spans: tuple[Span, ...]
    offsets: tuple[tuple[int, int], ...]
    positions: tuple[int, ...]
    owner: tuple[int, ...]
    segments: tuple[tuple[int, int, int], ...]
    cuts: tuple[int, ...]
    total_tokens: int
    per_token: bool

    def finish(self, results: np.ndarray) -> Explanation:
        """The explanation from the plans' answers, float32 [slots] (from any executor)."""
        answers = results.tolist()
        if not self.segments:  # nothing read: scored as Predict scores it, one unknown token
            empty = [SentenceExplanation(s, e, 0, 0, None, None, None) for s, e in self.spans]
            return Explanation(answers[0], empty, None, None, self.total_tokens, 0, [])
        running_at = dict(zip(self.cuts, answers[:len(self.cuts)], strict=True))
        probability = running_at[len(self.positions)]
        effects = {sentence: probability - p
                   for (sentence, _, _), p in zip(self.segments, answers[len(self.cuts):], strict=True)}
        return _assemble(probability, self.spans, list(self.owner), list(self.positions), self.offsets,
                         list(self.segments), running_at, effects, self.total_tokens, self.per_token)


def explanation_plans(read: Sequence[int], segments: Sequence[tuple[int, int, int]], cuts: Sequence[int],
                      unk_id: int) -> list[RowPlan]:
    """Row plans computing the running probability at ``cuts`` (increasing, ending at ``len(read)``) and
    P(``read`` without segment ``i``) for each ``(sentence, begin, end)`` of ``segments`` (which tile ``read``).

    Slots: ``j`` for ``cuts[j]``, ``len(cuts) + i`` for segment ``i``. One root reads everything
    and snapshots at the cuts; at each later segment's start a branch takes its state, skips
    that segment and reads on (the prefix is shared, not re-read); the review without its
    first segment is a second root. A review left with no token scores as ``[unk_id]``, as
    Predict scores an empty one.
    """
    ids = np.asarray(read, dtype=np.int64)
    without = len(cuts)
    stops: dict[int, list[Snapshot | RowPlan]] = {}
    for j, cut in enumerate(cuts[:-1]):
        stops.setdefault(cut, []).append(Snapshot(j))
    for i, (_, begin, end) in enumerate(segments[1:], start=1):
        if end < len(ids):
            stops.setdefault(begin, []).append(RowPlan(ids[end:], without + i, offset=begin))
        else:  # the last segment: what is left is exactly the prefix before it
            stops.setdefault(begin, []).append(Snapshot(without + i))
    running = RowPlan(ids, len(cuts) - 1, stops={p: tuple(a) for p, a in stops.items()})
    first_end = segments[0][2]
    rest = ids[first_end:] if first_end < len(ids) else np.array([unk_id], dtype=np.int64)
    return [running, RowPlan(rest, without)]


def prepare_explanation(ids: Sequence[int], offsets: Sequence[tuple[int, int]], spans: Sequence[Span], *,
                        max_tokens: int, head_tokens: int, unk_id: int, per_token: bool = False,
                        max_sentences: int | None = None) -> ExplainJob:
    """The :class:`ExplainJob` of a review given all its token ids (untruncated), their ``(start, end)``
    offsets into the original text, and its sentence spans in that text (see the module docstring).

    ``per_token``: also the running probability after each read token (a snapshot at every
    token). Raises :class:`TooManySentences` when the model reads more than ``max_sentences``
    sentences (sentences in a truncated middle do not count: they cost nothing).
    """
    if ids and not spans:  # tokens where the splitter saw none (markup it and the tokenizer read apart)
        spans = [(offsets[0][0], offsets[-1][1])]
    positions = truncate_head_tail(list(range(len(ids))), max_tokens, head_tokens)
    read = [ids[p] for p in positions]
    owner = sentence_of_tokens([offsets[p][0] for p in positions], spans)
    common = {"spans": tuple(spans), "offsets": tuple(tuple(o) for o in offsets), "positions": tuple(positions),
              "owner": tuple(owner), "total_tokens": len(ids), "per_token": per_token}
    if not read:  # nothing to read: scored as Predict scores it, one unknown token
        return ExplainJob((RowPlan(np.array([unk_id], dtype=np.int64), 0),), 1, segments=(), cuts=(), **common)
    segments = _segments(owner)
    if max_sentences is not None and len(segments) > max_sentences:
        raise TooManySentences(len(segments), max_sentences)
    cuts = list(range(1, len(read) + 1)) if per_token else [end for _, _, end in segments]
    roots = explanation_plans(read, segments, cuts, unk_id)
    return ExplainJob(tuple(roots), len(cuts) + len(segments), segments=tuple(segments), cuts=tuple(cuts), **common)


def explain_ids(runner: StepModel, ids: Sequence[int], offsets: Sequence[tuple[int, int]], spans: Sequence[Span],
                *, max_tokens: int, head_tokens: int, unk_id: int, per_token: bool = False,
                max_sentences: int | None = None) -> Explanation:
    """Explain a review alone on ``runner`` (:func:`prepare_explanation`, then :func:`~runtime.row_plan.run_plans`).

    Raises :class:`TooManySentences` (see :func:`prepare_explanation`), else whatever the
    runner's sessions raise.
    """
    job = prepare_explanation(ids, offsets, spans, max_tokens=max_tokens, head_tokens=head_tokens, unk_id=unk_id,
                              per_token=per_token, max_sentences=max_sentences)
    return job.finish(run_plans(runner, job.roots, job.slots))


def _assemble(probability: float, spans: Sequence[Span], owner: list[int], positions: list[int],
              offsets: Sequence[tuple[int, int]], segments: list[tuple[int, int, int]], running_at: dict[int, float],
              effects: dict[int, float], total_tokens: int, per_token: bool) -> Explanation:
    """The per-sentence records, swings, turning point and most decisive sentence."""
    tokens = [0] * len(spans)
    for sentence in sentence_of_tokens([start for start, _ in offsets], spans):
        tokens[sentence] += 1
    running = {sentence: running_at[end] for sentence, _, end in segments}
    read_count = {sentence: end - begin for sentence, begin, end in segments}
    sentences, previous, swings = [], None, {}
    for i, (start, end) in enumerate(spans):
        now = running.get(i)
        if now is not None and previous is not None:
            swings[i] = now - previous
        previous = now if now is not None else previous
        sentences.append(SentenceExplanation(start, end, tokens[i], read_count.get(i, 0), now, swings.get(i),
                                             effects.get(i)))
    turning = max(swings, key=lambda i: abs(swings[i]), default=None)
    decisive = max(effects, key=lambda i: abs(effects[i]), default=None)
    steps = [TokenStep(*offsets[p], owner[j], running_at[j + 1]) for j, p in enumerate(positions)] if per_token else []
    return Explanation(probability, sentences, turning, decisive, total_tokens, len(positions), steps)
