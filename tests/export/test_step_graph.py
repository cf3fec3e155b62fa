"""The step graph and head (export/step_graph.py) against the whole-sequence graph and PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export.onnx_export import export_onnx
from export.step_graph import export_step_graphs, onnx_lstm_weights
from runtime.preprocessing import pad_batch
from runtime.step_runner import StateTensor, StepGraphSpec, StepRunner
from train.model import ModelConfig, SentimentLSTM

VOCAB, PAD = 50, 0


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module", params=["max_mean", "streaming"])
def graphs(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """A small random SentimentLSTM of each pooling exported whole (model.onnx) and as step + head graphs."""
    torch.manual_seed(0)
    model = SentimentLSTM(ModelConfig(vocab_size=VOCAB, embedding_dim=6, hidden_size=10, pad_id=PAD,
                                      pooling=request.param)).eval()
    if request.param == "streaming":  # spread the attention scores, so that the running maximum moves
        with torch.no_grad():
            model.attention.weight.mul_(8.0)
    folder = tmp_path_factory.mktemp("step_graph")
    export_onnx(model, folder / "model.onnx")
    section = export_step_graphs(model, folder)
    spec = StepGraphSpec(folder / section["step_graph"], folder / section["head_graph"],
                         tuple(StateTensor(**s) for s in section["state"]))
    runner = StepRunner(spec, session(spec.step_path), session(spec.head_path), PAD)
    return model, session(folder / "model.onnx"), runner, folder


def whole(whole_session: ort.InferenceSession, sequences: list[list[int]]) -> np.ndarray:
    input_ids, lengths = pad_batch(sequences, PAD)
    return whole_session.run(None, {"input_ids": input_ids, "lengths": lengths})[0]


def test_step_graph_uses_the_fused_lstm_with_initial_state_and_lengths(graphs) -> None:
    folder = graphs[3]
    step = onnx.load(str(folder / "step.onnx"))
    (lstm,) = [n for n in step.graph.node if n.op_type == "LSTM"]
    assert list(lstm.input[4:7]) == ["sequence_lens", "initial_h", "initial_c"]
    assert not {n.op_type for n in step.graph.node} & {"Loop", "Scan"}
    head_inputs = [i.name for i in onnx.load(str(folder / "head.onnx")).graph.input]
    assert head_inputs in (["max", "sum_out", "sum_emb", "lengths"], ["h", "max", "weight_sum", "weighted"])


sequences_strategy = st.lists(st.lists(st.integers(1, VOCAB - 1), min_size=1, max_size=70), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequences=sequences_strategy, step_tokens=st.integers(1, 80))
def test_steps_of_any_size_give_the_whole_graph_probability(graphs, sequences, step_tokens) -> None:
    _, whole_session, runner, _ = graphs
    np.testing.assert_allclose(runner.score(sequences, step_tokens), whole(whole_session, sequences),
                               atol=1e-5, rtol=0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.lists(st.integers(1, VOCAB - 1), min_size=1, max_size=60), mates=sequences_strategy,
       cuts=st.lists(st.integers(1, 25), min_size=1, max_size=20), data=st.data())
def test_a_row_joining_mid_stream_among_other_rows_gets_its_own_answer(graphs, target, mates, cuts, data) -> None:
    """Uneven steps, batch-mates at other positions in their own reviews, the target placed anywhere."""
    _, whole_session, runner, _ = graphs
    mate_progress = [data.draw(st.integers(0, len(m) - 1)) for m in mates]
    position = data.draw(st.integers(0, len(mates)))
    # Mates first read some tokens alone, so the target joins a batch whose rows carry state.
    state = runner.initial_state(len(mates))
    for i, (mate, done) in enumerate(zip(mates, mate_progress, strict=True)):
        if done:
            one = runner.step(np.array([mate[:done]]), np.array([done]), {k: v[i:i + 1] for k, v in state.items()})
            for name in state:
                state[name][i] = one[name][0]
    fresh = runner.initial_state(1)
    state = {k: np.insert(v, position, fresh[k][0], axis=0) for k, v in state.items()}
    rows = [*mates[:position], target, *mates[position:]]
    read = [*mate_progress[:position], 0, *mate_progress[position:]]
    cut = 0
    while read[position] < len(target):
        k = cuts[cut % len(cuts)]
        cut += 1
        live = [i for i in range(len(rows)) if read[i] < len(rows[i])]
        ids = np.full((len(live), k), PAD, dtype=np.int64)
        step_lengths = np.zeros(len(live), dtype=np.int64)
        for j, i in enumerate(live):
            chunk = rows[i][read[i]:read[i] + k]
            ids[j, :len(chunk)] = chunk
            step_lengths[j] = len(chunk)
        moved = runner.step(ids, step_lengths, {name: v[live] for name, v in state.items()})
        for name in state:
            state[name][live] = moved[name]
        for j, i in enumerate(live):
            read[i] += int(step_lengths[j])
    got = runner.head({k: v[position:position + 1] for k, v in state.items()}, np.array([len(target)]))
    np.testing.assert_allclose(got, whole(whole_session, [target]), atol=1e-5, rtol=0)


def test_step_graph_matches_pytorch(graphs) -> None:
    model, _, runner, _ = graphs
    rng = np.random.default_rng(1)
    sequences = [rng.integers(1, VOCAB, size=n).tolist() for n in (1, 2, 17, 64, 65, 130)]
    input_ids, lengths = pad_batch(sequences, PAD)
    with torch.no_grad():
        reference = torch.sigmoid(model(torch.from_numpy(input_ids), torch.from_numpy(lengths))).numpy()
    np.testing.assert_allclose(runner.score(sequences, 16), reference, atol=1e-5, rtol=0)


def test_refuses_an_lstm_the_step_graph_cannot_express() -> None:
    model = SentimentLSTM(ModelConfig(vocab_size=VOCAB, embedding_dim=4, hidden_size=4, num_layers=2))
    with pytest.raises(ValueError, match="one-layer unidirectional"):
        onnx_lstm_weights(model.lstm)


def test_export_publishes_a_checked_step_graph_for_each_pooling(tmp_path) -> None:
    """Both poolings get a step graph whose parity with model.onnx export measures (and would refuse)."""
    from export.pipeline import step_section

    for pooling in ("max_mean", "streaming"):
        folder = tmp_path / pooling
        folder.mkdir()
        model = SentimentLSTM(ModelConfig(vocab_size=VOCAB, embedding_dim=4, hidden_size=4, pooling=pooling)).eval()
        export_onnx(model, folder / "model.onnx")
        section = step_section(model, folder, PAD, 40)
        assert section is not None and (folder / section["step_graph"]).exists()
        assert section["parity"]["max_abs_diff_vs_whole"] <= 1e-5
        assert [s["name"] for s in section["state"]][:3] == ["h", "c", "max"]


def test_refuses_a_pooling_it_does_not_carry(tmp_path) -> None:
    from export.step_graph import export_step_graphs

    model = SentimentLSTM(ModelConfig(vocab_size=VOCAB, embedding_dim=4, hidden_size=4))
    object.__setattr__(model.config, "pooling", "attention_only")  # a pooling from a future release
    with pytest.raises(ValueError, match="carries max_mean and streaming pooling"):
        export_step_graphs(model, tmp_path)
    assert not any(tmp_path.iterdir())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(st.integers(1, VOCAB - 1), min_size=1, max_size=90), data=st.data())
def test_running_probability_after_each_span_is_the_prefix_answer(graphs, sequence, data) -> None:
    """What Explain (issue 19) reads: the state carried to each boundary, never a re-read prefix."""
    _, whole_session, runner, _ = graphs
    ends = sorted(data.draw(st.sets(st.integers(1, len(sequence)), min_size=1, max_size=8)))
    expected = [whole(whole_session, [sequence[:end]])[0] for end in ends]
    np.testing.assert_allclose(runner.running(sequence, ends), expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="ends must increase"):
        runner.running(sequence, [*ends, ends[-1]])
