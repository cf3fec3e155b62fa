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
  The state is carried from sentence to sentence (one step call per sentence); no prefix is
  ever scored again from the start. The last one is the review's probability (Predict's, within
  the step graph's 1e-5 parity).
* **Effect** of a sentence: P(review) - P(review without the sentence's read tokens), from the
  same batched pass (:func:`read_with_and_without`): at each sentence's start a row takes the
  carried state and sits that sentence out, then reads on beside the others (the prefix is
  shared, not re-read). A review left with no token scores as ``[unk_id]``, as Predict scores
  an empty one.
* **Swing** of a sentence: its running probability minus the previous read sentence's; the
  **turning point** is the sentence with the largest absolute swing (None with fewer than two
  read sentences); the **most decisive** sentence has the largest absolute effect.

Cost, in model work: one step call per sentence, with 1, 2, ... ``sentences`` rows; the
rows read what follows their sentence, about ``sentences / 2 + 1`` reviews' worth of
row-steps in all, batched (bench/explain_bench.py measures it against Predict).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runtime.preprocessing import truncate_head_tail
from runtime.sentences import Span
from runtime.step_runner import State, StepRunner


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


def _rows(state: State, rows: np.ndarray | list[int] | slice) -> State:
    return {name: value[rows] for name, value in state.items()}


def _stack(states: Sequence[State]) -> State:
    return {name: np.concatenate([s[name] for s in states]) for name in states[0]}


def _step_rows(runner: StepRunner, chunk: Sequence[int], state: State) -> State:
    """Every row of ``state`` reads the same ids ``chunk`` (one step call, no padding)."""
    rows = len(next(iter(state.values())))
    ids = np.tile(np.asarray(chunk, dtype=np.int64), (rows, 1))
    return runner.step(ids, np.full(rows, len(chunk), dtype=np.int64), state)


def read_with_and_without(runner: StepRunner, read: Sequence[int],
                          segments: Sequence[tuple[int, int, int]]) -> tuple[list[State], State]:
    """One batched pass over ``read``, segment by segment (``(sentence, begin, end)`` positions in ``read``).

    One row reads everything: its state after each segment is returned (the running states). At
    each segment's start a new row takes that row's state and sits the segment out, then reads
    on with the others. All rows of a step read the same ids, so nothing is padded; a step's
    batch is the rows that exist by then (1, 2, ... ``len(segments)`` rows).
    Returns (the running states, one ``[1, width]`` state per segment; the without-states,
    ``[len(segments), width]``, whose row ``i`` is the review read without segment ``i``).
    """
    running, without = runner.initial_state(1), None
    after: list[State] = []
    for _, begin, end in segments:
        rows = running if without is None else _stack([running, without])
        moved = _step_rows(runner, read[begin:end], rows)
        sitting_out = running  # the new row: the state at this segment's start
        running = _rows(moved, [0])
        without = sitting_out if len(after) == 0 else _stack([_rows(moved, slice(1, None)), sitting_out])
        after.append(running)
    assert without is not None  # segments is never empty here
    return after, without


def explain_ids(runner: StepRunner, ids: Sequence[int], offsets: Sequence[tuple[int, int]], spans: Sequence[Span],
                *, max_tokens: int, head_tokens: int, unk_id: int, per_token: bool = False,
                max_sentences: int | None = None) -> Explanation:
    """Explain a review given all its token ids (untruncated), their ``(start, end)`` offsets into the
    original text, and its sentence spans in that text (see the module docstring).

    ``per_token``: also the running probability after each read token (one more pass, one step
    call per token: several times slower). Raises :class:`TooManySentences` when the model
    reads more than ``max_sentences`` sentences (sentences in a truncated middle do not count:
    they cost nothing), else whatever the runner's sessions raise.
    """
    if ids and not spans:  # tokens where the splitter saw none (markup it and the tokenizer read apart)
        spans = [(offsets[0][0], offsets[-1][1])]
    positions = truncate_head_tail(list(range(len(ids))), max_tokens, head_tokens)
    read = [ids[p] for p in positions]
    owner = sentence_of_tokens([offsets[p][0] for p in positions], spans)
    if not read:  # nothing to read: scored as Predict scores it, one unknown token
        state = _step_rows(runner, [unk_id], runner.initial_state(1))
        probability = float(runner.head(state, np.array([1], np.int64))[0])
        empty = [SentenceExplanation(s, e, 0, 0, None, None, None) for s, e in spans]
        return Explanation(probability, empty, None, None, len(ids), 0, [])
    segments = _segments(owner)
    if max_sentences is not None and len(segments) > max_sentences:
        raise TooManySentences(len(segments), max_sentences)
    after, without = read_with_and_without(runner, read, segments)
    cuts = [end for _, _, end in segments]
    if per_token:  # the running state after every token, carried one token at a time
        after, state = [], runner.initial_state(1)
        for token in read:
            state = _step_rows(runner, [token], state)
            after.append(state)
        cuts = list(range(1, len(read) + 1))
    lengths = np.array([len(read) - (end - begin) for _, begin, end in segments], dtype=np.int64)
    empty_rows = np.flatnonzero(lengths == 0)  # the review's only sentence: what is left is nothing
    if len(empty_rows):
        unk = _step_rows(runner, [unk_id], runner.initial_state(len(empty_rows)))
        for name, value in unk.items():
            without[name][empty_rows] = value
        lengths[empty_rows] = 1
    # One head call: the running states, then the rows without each sentence.
    head = runner.head(_stack([*after, without]), np.concatenate([np.array(cuts, dtype=np.int64), lengths]))
    running_at = dict(zip(cuts, head[:len(cuts)].tolist(), strict=True))
    probability = running_at[len(read)]
    effects = {sentence: probability - p for (sentence, _, _), p in zip(segments, head[len(cuts):].tolist(),
                                                                        strict=True)}
    return _assemble(probability, spans, owner, positions, offsets, segments, running_at, effects,
                     len(ids), per_token)


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
