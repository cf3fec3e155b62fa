"""The model side of step-level batching: run one step of the step graph on a batch of rows.

A version exported with a step graph (docs/model-repository.md, metadata.json's optional
``steps`` section) carries two more ONNX graphs beside ``model.onnx``:

* ``step``: ``input_ids [B,K] int64``, ``step_lengths [B] int64`` (1..K real tokens per row) and
  the carried state tensors ``[B, width]`` float32 -> the next state tensors;
* ``head``: some of the state tensors (and optionally ``lengths [B] int64``, tokens read so
  far) -> ``probability [B]`` float32.

:class:`StepRunner` knows nothing about requests, queues or deadlines (that is
:mod:`serve.scheduler`): it holds the two sessions, makes initial states and runs a step or
the head on whatever rows it is given. A version without the section has no step runner
(:func:`read_step_spec` returns None) and is served on the whole-sequence path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from serve.repository import ModelVersion, RepositoryError

log = logging.getLogger("serve.step_runner")
STEP_INPUTS = ("input_ids", "step_lengths")
HEAD_LENGTHS = "lengths"
# state tensor name -> float32 [rows, width]
State = dict[str, np.ndarray]


@dataclass(frozen=True)
class StateTensor:
    """One carried tensor: the step graph's input ``name`` and output ``output``, ``[rows, width]`` float32."""

    name: str
    output: str
    width: int
    initial: float


@dataclass(frozen=True)
class StepGraphSpec:
    """metadata.json's ``steps`` section, checked: the graph files and the carried state."""

    step_path: Path
    head_path: Path
    state: tuple[StateTensor, ...]


def read_step_spec(model: ModelVersion) -> StepGraphSpec | None:
    """The version's step-graph description, or None when it has none (an older export).

    Raises :class:`~serve.repository.RepositoryError` naming the field when the section is
    malformed, or names files that metadata.json's ``files`` does not list (and so are not
    checksummed).
    """
    section = model.metadata.get("steps")
    if section is None:
        return None
    where = f"{model.path / 'metadata.json'} 'steps'"
    try:
        files = [section["step_graph"], section["head_graph"]]
        state = tuple(StateTensor(str(s["name"]), str(s["output"]), int(s["width"]), float(s["initial"]))
                      for s in section["state"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RepositoryError(f"{where} is malformed ({exc!r}); expected step_graph, head_graph and state "
                              "[{name, output, width, initial}] (docs/model-repository.md)") from exc
    for filename in files:
        if filename not in model.metadata["files"]:
            raise RepositoryError(f"{where} names {filename!r}, which metadata.json's files does not list")
    if not state or any(s.width < 1 for s in state) or len({s.name for s in state}) != len(state):
        raise RepositoryError(f"{where}: state needs at least one tensor, unique names, widths >= 1")
    return StepGraphSpec(model.path / files[0], model.path / files[1], state)


def _open(path: Path, options: ort.SessionOptions | None, providers: list[Any] | None) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
        raise RepositoryError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc


class StepRunner:
    """The step and head sessions of one version; ``step`` and ``head`` are thread-safe (ORT's ``run`` is)."""

    def __init__(self, spec: StepGraphSpec, step: ort.InferenceSession, head: ort.InferenceSession,
                 pad_id: int) -> None:
        self.spec = spec
        self.pad_id = pad_id
        self._step = step
        self._head = head
        self._outputs = [s.output for s in spec.state]
        names = {s.name for s in spec.state}
        step_inputs = {arg.name for arg in step.get_inputs()}
        if step_inputs != names | set(STEP_INPUTS):
            raise RepositoryError(f"{spec.step_path}: graph inputs {sorted(step_inputs)} differ from "
                                  f"{sorted(names | set(STEP_INPUTS))} (input_ids, step_lengths and the state)")
        missing = set(self._outputs) - {arg.name for arg in step.get_outputs()}
        if missing:
            raise RepositoryError(f"{spec.step_path}: graph lacks the state outputs {sorted(missing)}")
        self._head_inputs = [arg.name for arg in head.get_inputs()]
        unknown = set(self._head_inputs) - names - {HEAD_LENGTHS}
        if unknown or [arg.name for arg in head.get_outputs()] != ["probability"]:
            raise RepositoryError(f"{spec.head_path}: the head reads {self._head_inputs} and writes "
                                  f"{[a.name for a in head.get_outputs()]}; it may read only state tensors "
                                  f"{sorted(names)} and 'lengths', and must write 'probability'")

    def initial_state(self, rows: int) -> State:
        """The state of ``rows`` rows that have read nothing yet."""
        return {s.name: np.full((rows, s.width), s.initial, dtype=np.float32) for s in self.spec.state}

    def step(self, input_ids: np.ndarray, step_lengths: np.ndarray, state: State) -> State:
        """Read ``step_lengths[b]`` (1..K) more tokens of each row of ``input_ids`` int64 [B, K]; returns new state."""
        feeds = {"input_ids": input_ids, "step_lengths": step_lengths, **state}
        results = self._step.run(self._outputs, feeds)
        return {s.name: value for s, value in zip(self.spec.state, results, strict=True)}

    def head(self, state: State, lengths: np.ndarray) -> np.ndarray:
        """P(positive) float32 [B] of rows in ``state`` that have read ``lengths`` int64 [B] tokens in all."""
        feeds = {name: (lengths if name == HEAD_LENGTHS else state[name]) for name in self._head_inputs}
        return self._head.run(["probability"], feeds)[0]

    def score(self, sequences: Sequence[Sequence[int]], step_tokens: int) -> np.ndarray:
        """P(positive) of each id list (1+ ids each), read together in steps of ``step_tokens``: a reference path.

        Rows leave as they end; the result is in input order.
        """
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        state = self.initial_state(len(sequences))
        out = np.empty(len(sequences), dtype=np.float32)
        for start in range(0, int(lengths.max()), step_tokens):
            rows = np.flatnonzero(lengths > start)
            ids = np.full((len(rows), min(step_tokens, int(lengths[rows].max()) - start)), self.pad_id, np.int64)
            for i, row in enumerate(rows):
                chunk = sequences[row][start:start + ids.shape[1]]
                ids[i, :len(chunk)] = chunk
            taken = {k: v[rows] for k, v in state.items()}
            moved = self.step(ids, np.minimum(lengths[rows] - start, ids.shape[1]), taken)
            for name, value in moved.items():
                state[name][rows] = value
            ending = rows[lengths[rows] <= start + ids.shape[1]]
            if len(ending):
                out[ending] = self.head({k: v[ending] for k, v in state.items()}, lengths[ending])
        return out

    def running(self, sequence: Sequence[int], ends: Sequence[int]) -> np.ndarray:
        """P(positive) of ``sequence`` read up to each of ``ends`` (increasing, 1..len): float32 [len(ends)].

        The answer the model would give had the text ended there, from the state carried to that
        point (one step per span, never re-reading a prefix). Raises ``ValueError`` for ends that
        are not increasing within 1..len(sequence).
        """
        bounds = [0, *ends]
        if any(b <= a for a, b in zip(bounds, bounds[1:], strict=False)) or (ends and ends[-1] > len(sequence)):
            raise ValueError(f"ends must increase within 1..{len(sequence)}, got {list(ends)}")
        state = self.initial_state(1)
        out = np.empty(len(ends), dtype=np.float32)
        for i, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False)):
            state = self.step(np.asarray([sequence[start:end]], dtype=np.int64), np.array([end - start]), state)
            out[i] = self.head(state, np.array([end], dtype=np.int64))[0]
        return out


def open_step_runner(model: ModelVersion, options: ort.SessionOptions | None = None,
                     providers: list[Any] | None = None) -> StepRunner | None:
    """The version's :class:`StepRunner`, or None when it was exported without a step graph."""
    spec = read_step_spec(model)
    if spec is None:
        return None
    return StepRunner(spec, _open(spec.step_path, options, providers), _open(spec.head_path, options, providers),
                      model.pad_id)
