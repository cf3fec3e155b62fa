"""Row plans: what a step-graph computation reads, where it looks, and where it branches.

Most requests read each text from the start to its end: one row per text, answered by the
head at its end. Explain (runtime/explain.py) needs more of the same machinery: the state of
one row at several positions (its running probability), and new rows that start from that
state and read other ids (the review without a sentence shares the prefix before it). A
:class:`RowPlan` says all of that as data:

* ``ids``: what the row reads, from ``offset`` tokens already read (the state it starts from);
* ``slot``: where the head's answer goes when the row ends (length ``offset + len(ids)``);
* ``stops``: positions inside ``ids`` where the row pauses after reading that many of them,
  with actions: a :class:`Snapshot` (the head's answer for the state there goes to its slot)
  or another :class:`RowPlan` (a *branch*: a new row starting from this row's state there).

Two executors run plans and must agree: :func:`run_plans` here, alone on a
:class:`~runtime.step_runner.StepRunner` (every row reads to the next stop or end together, no
padding: the reference, used by ``--local`` scoring and the whole-sequence server), and the
step scheduler (serve/engine/scheduler.py), among other requests' rows.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

State = dict[str, np.ndarray]  # state tensor name -> float32 [rows, width]


@dataclass(frozen=True)
class Snapshot:
    """At a stop: the head's answer for the row's state there goes to ``slot``."""

    slot: int


@dataclass(frozen=True, eq=False)
class RowPlan:
    """One row: read ``ids`` int64 [n >= 1] from a state that has read ``offset`` tokens; see the module docstring.

    ``stops`` maps positions ``1 .. n - 1`` (tokens of ``ids`` read) to actions. A branch
    (a :class:`RowPlan` action) starts from this row's state there, so its ``offset`` must be
    this row's ``offset`` plus the position (checked).
    """

    ids: np.ndarray
    slot: int
    offset: int = 0
    stops: Mapping[int, tuple[Snapshot | RowPlan, ...]] = field(default_factory=dict)
    stop_positions: tuple[int, ...] = field(init=False, repr=False)  # the stops' positions, ascending

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop_positions", tuple(sorted(self.stops)))
        if len(self.ids) < 1:
            raise ValueError("a row plan reads at least one id")
        for position, actions in self.stops.items():
            if not 1 <= position < len(self.ids):
                raise ValueError(f"stop at {position} is outside 1..{len(self.ids) - 1}")
            for action in actions:
                if isinstance(action, RowPlan) and action.offset != self.offset + position:
                    raise ValueError(f"a branch at {position} starts at offset {self.offset + position}, "
                                     f"not {action.offset}")


def next_pause(plan: RowPlan, read: int) -> int:
    """Tokens of ``plan.ids`` read at its first stop after ``read`` tokens, or at its end."""
    at = bisect.bisect_right(plan.stop_positions, read)
    return plan.stop_positions[at] if at < len(plan.stop_positions) else len(plan.ids)


def count_rows(roots: Sequence[RowPlan]) -> int:
    """Rows the plans make in all (roots and every branch)."""
    return sum(1 + count_rows([a for actions in r.stops.values() for a in actions if isinstance(a, RowPlan)])
               for r in roots)


class StepModel(Protocol):
    """What the executors (:func:`run_plans`, the server's step scheduler) need of a model
    (:class:`~runtime.step_runner.StepRunner` is one)."""

    pad_id: int

    def initial_state(self, rows: int) -> State: ...

    def step(self, input_ids: np.ndarray, step_lengths: np.ndarray, state: State) -> State: ...

    def head(self, state: State, lengths: np.ndarray) -> np.ndarray: ...


@dataclass(eq=False)
class _Active:
    plan: RowPlan
    read: int = 0

    def next_pause(self) -> int:
        return next_pause(self.plan, self.read)


def run_plans(model: StepModel, roots: Sequence[RowPlan], slots: int) -> np.ndarray:
    """Run ``roots`` (and their branches) alone on ``model``; returns float32 [slots], every slot filled.

    Every step, each active row reads to the nearest stop or end among all rows, so no row
    reads padding; new branches join the next step. Raises ``ValueError`` when the plans leave a
    slot unfilled or fill one twice.
    """
    if any(r.offset for r in roots):
        raise ValueError("a root row starts from the initial state (offset 0)")
    out = np.full(slots, np.nan, dtype=np.float32)
    filled = np.zeros(slots, dtype=bool)
    rows: list[_Active] = [_Active(r) for r in roots]
    state = model.initial_state(len(rows))
    heads: list[tuple[State, int, int]] = []  # (one-row state, length, slot)
    while rows:
        k = min(row.next_pause() - row.read for row in rows)
        ids = np.stack([row.plan.ids[row.read:row.read + k] for row in rows])
        state = model.step(ids, np.full(len(rows), k, dtype=np.int64), state)
        keep, joining, joining_states = [], [], []
        for i, row in enumerate(rows):
            row.read += k
            one = {name: value[i:i + 1] for name, value in state.items()}
            if row.read == len(row.plan.ids):
                heads.append((one, row.plan.offset + row.read, row.plan.slot))
                continue
            keep.append(i)
            for action in row.plan.stops.get(row.read, ()):
                if isinstance(action, Snapshot):
                    heads.append((one, row.plan.offset + row.read, action.slot))
                else:
                    joining.append(_Active(action))
                    joining_states.append(one)
        rows = [rows[i] for i in keep] + joining
        state = {name: np.concatenate([value[keep], *(s[name] for s in joining_states)])
                 for name, value in state.items()}
    if heads:
        stacked = {name: np.concatenate([h[0][name] for h in heads]) for name in heads[0][0]}
        answers = model.head(stacked, np.array([h[1] for h in heads], dtype=np.int64))
        for (_, _, slot), answer in zip(heads, answers.tolist(), strict=True):
            if filled[slot]:
                raise ValueError(f"slot {slot} is filled twice by the plans")
            out[slot], filled[slot] = answer, True
    if not filled.all():
        raise ValueError(f"the plans leave slots {np.flatnonzero(~filled).tolist()} unfilled")
    return out
