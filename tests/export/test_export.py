import json
import shutil

import numpy as np
import onnx
import pytest

from export import measure
from export.pipeline import ExportOptions, export_version
from runtime.preprocessing import encode_texts, pad_batch
from runtime.repository import load_version, open_session
from train.checkpoint import load_checkpoint, restore_model


def encode(version, reviews):
    tokenizer = version.load_tokenizer()
    return encode_texts(tokenizer, [r.text for r in reviews], version.max_tokens, version.head_tokens, version.unk_id)


def test_end_to_end_export_writes_a_complete_version(exported):
    assert exported.name == "1"
    files = {p.name for p in exported.iterdir()}
    assert files == {"model.onnx", "model.int8.onnx", "tokenizer.json", "metadata.json", "step.onnx", "head.onnx"}
    assert (exported.parent / "config.pbtxt").read_text().count('platform: "onnxruntime_onnx"') == 1
    metadata = json.loads((exported / "metadata.json").read_text())
    assert metadata["name"] == "imdb-lstm" and metadata["version"] == 1
    evaluation = metadata["evaluation"]
    assert evaluation["int8"]["accuracy"] >= evaluation["fp32"]["accuracy"] - 0.02  # 1,000 reviews: noisy
    assert evaluation["throughput"]["fp32_texts_per_s"] > 0 and evaluation["parity"]["reviews"] == 500
    assert metadata["source"]["command"].startswith("python -m export")
    assert set(metadata["files"]) == files - {"metadata.json"}
    steps = metadata["steps"]
    assert (steps["step_graph"], steps["head_graph"]) == ("step.onnx", "head.onnx")
    assert [s["name"] for s in steps["state"]] == ["h", "c", "max", "sum_out", "sum_emb"]
    assert steps["parity"]["max_abs_diff_vs_whole"] <= 1e-5


def test_graph_uses_fused_lstm_and_passes_full_check(exported):
    for name in ("model.onnx",):
        graph = onnx.load(str(exported / name))
        onnx.checker.check_model(graph, full_check=True)
        ops = {node.op_type for node in graph.graph.node}
        assert "LSTM" in ops and not ops & {"Loop", "Scan"}
        assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    int8_ops = {node.op_type for node in onnx.load(str(exported / "model.int8.onnx")).graph.node}
    assert "DynamicQuantizeLSTM" in int8_ops


@pytest.mark.parametrize(("batch", "length"), [(1, 1), (1, 2048), (256, 1), (256, 64), (3, 2048)])
def test_dynamic_batch_and_sequence_axes(exported, batch, length):
    version = load_version(exported.parent.parent, "imdb-lstm", 1)
    for precision in ("fp32", "int8"):
        session = open_session(version, precision)
        ids = np.random.default_rng(0).integers(2, 500, size=(batch, length), dtype=np.int64)
        lengths = np.full(batch, length, dtype=np.int64)
        (probability,) = session.run(None, {"input_ids": ids, "lengths": lengths})
        assert probability.shape == (batch,) and probability.dtype == np.float32
        assert np.all((probability >= 0) & (probability <= 1))


def test_onnx_matches_pytorch_on_500_real_reviews(exported, smoke_run, test_reviews):
    version = load_version(exported.parent.parent, "imdb-lstm", 1)
    ids = encode(version, test_reviews[:500])
    assert len({len(s) for s in ids}) > 100  # varied lengths
    model, _ = restore_model(load_checkpoint(smoke_run / "best.pt"))
    reference = measure.score_torch(model, ids, version.pad_id)
    onnx_probs = measure.score_onnx(open_session(version, "fp32"), ids, version.pad_id)
    np.testing.assert_allclose(onnx_probs, reference, atol=1e-5, rtol=0)


def test_onnx_score_does_not_depend_on_padding(exported, test_reviews):
    version = load_version(exported.parent.parent, "imdb-lstm", 1)
    session = open_session(version, "fp32")
    ids = sorted(encode(version, test_reviews[:200]), key=len)
    short, long = ids[0], ids[-1]
    long = (long * 20)[: 10 * len(short) + 5]
    assert len(long) > 10 * len(short)
    alone = session.run(None, dict(zip(("input_ids", "lengths"), pad_batch([short], version.pad_id), strict=True)))[0]
    together = session.run(None, dict(zip(("input_ids", "lengths"), pad_batch([short, long], version.pad_id),
                                          strict=True)))[0]
    assert abs(float(alone[0]) - float(together[0])) <= 1e-5


def test_int8_agrees_with_fp32_on_labels(exported, test_reviews):
    version = load_version(exported.parent.parent, "imdb-lstm", 1)
    ids = encode(version, test_reviews)
    fp32 = measure.score_onnx(open_session(version, "fp32"), ids, version.pad_id)
    int8 = measure.score_onnx(open_session(version, "int8"), ids, version.pad_id)
    assert len(ids) == 1000
    assert ((fp32 >= 0.5) == (int8 >= 0.5)).mean() >= 0.97


def test_next_export_gets_the_next_version(exported, smoke_run, tmp_path):
    repository = tmp_path / "repo"
    shutil.copytree(exported.parent, repository / "imdb-lstm")
    options = ExportOptions(smoke_run / "best.pt", repository, "imdb-lstm", None, None, 0, 0, 0, 1, 64)
    assert export_version(options).name == "2"
    assert load_version(repository, "imdb-lstm").version == 2
    assert json.loads((repository / "imdb-lstm" / "2" / "metadata.json").read_text())["evaluation"] == {
        "skipped": "no --data given"}
    with pytest.raises(FileExistsError, match="already exists"):
        export_version(ExportOptions(smoke_run / "best.pt", repository, "imdb-lstm", 2, None, 0, 0, 0, 1, 64))
