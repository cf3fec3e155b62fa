"""The real model in models/imdb-lstm/ (from the export stage), served end to end."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from protos.inference import grpc_predict_v2_pb2 as kpb
from protos.inference import grpc_predict_v2_pb2_grpc as kpb_grpc
from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from runtime.preprocessing import encode_texts, pad_batch
from runtime.repository import list_versions, load_version, open_session
from serve.grpc.kserve_codec import encode_bytes_tensor
from tests.conftest import REPO_ROOT
from tests.serve.conftest import ServerThread, make_settings

SHIPPED = REPO_ROOT / "models"
TIMEOUT = 30.0
POSITIVE = ("One of the best films I have seen in years. The acting is superb, the story moving and the "
            "ending beautiful. I loved every minute of it and will watch it again.")
NEGATIVE = ("A dull, boring mess. The plot makes no sense, the acting is awful and the dialogue is "
            "laughable. A complete waste of time; I wanted my money back.")

pytestmark = pytest.mark.skipif(not (SHIPPED / "imdb-lstm").is_dir() or not list_versions(SHIPPED, "imdb-lstm"),
                                reason="no shipped model in models/imdb-lstm/ yet (run the export stage)")


@pytest.fixture(scope="module")
def shipped() -> ServerThread:
    running = ServerThread(make_settings(SHIPPED, max_batch_size=16))
    yield running
    running.close()


def in_process(texts: list[str]) -> np.ndarray:
    model = load_version(SHIPPED, "imdb-lstm")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = open_session(model, "fp32", options)
    ids = encode_texts(model.load_tokenizer(), texts, model.max_tokens, model.head_tokens, model.unk_id)
    return np.array([session.run(None, dict(zip(("input_ids", "lengths"), pad_batch([row], model.pad_id),
                                                strict=True)))[0][0] for row in ids])


def test_shipped_model_scores_reviews_like_in_process_onnx_runtime(shipped: ServerThread) -> None:
    texts = [POSITIVE, NEGATIVE, POSITIVE * 20, "ok"]
    reply = pb_grpc.SentimentServiceStub(shipped.channel).PredictBatch(pb.PredictBatchRequest(texts=texts),
                                                                       timeout=TIMEOUT)
    got = np.array([p.probability for p in reply.predictions])
    np.testing.assert_allclose(got, in_process(texts), atol=1e-6, rtol=0)
    assert [p.label for p in reply.predictions[:3]] == ["positive", "negative", "positive"]
    assert reply.model.name == "imdb-lstm" and reply.model.version == max(list_versions(SHIPPED, "imdb-lstm"))


def test_shipped_model_over_kserve(shipped: ServerThread) -> None:
    request = kpb.ModelInferRequest(model_name="imdb-lstm")
    request.inputs.add(name="text", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(encode_bytes_tensor([POSITIVE.encode(), NEGATIVE.encode()]))
    reply = kpb_grpc.GRPCInferenceServiceStub(shipped.channel).ModelInfer(request, timeout=TIMEOUT)
    probability = np.frombuffer(reply.raw_output_contents[0], dtype="<f4")
    assert probability[0] > 0.5 > probability[1]


def test_shipped_model_on_the_steps_path_gives_the_whole_path_answers() -> None:
    """``--batching steps`` on the latest shipped version (it has a step graph from version 2 on)."""
    from runtime.step_runner import read_step_spec

    if read_step_spec(load_version(SHIPPED, "imdb-lstm")) is None:
        pytest.skip("the latest shipped version has no step graph")
    running = ServerThread(make_settings(SHIPPED, batching="steps", step_tokens=16, max_active_rows=4))
    try:
        texts = [POSITIVE, NEGATIVE, POSITIVE * 20, "ok", NEGATIVE * 3, POSITIVE + NEGATIVE]
        reply = pb_grpc.SentimentServiceStub(running.channel).PredictBatch(pb.PredictBatchRequest(texts=texts),
                                                                           timeout=TIMEOUT)
        np.testing.assert_allclose([p.probability for p in reply.predictions], in_process(texts), atol=1e-5, rtol=0)
    finally:
        running.close()


def test_shipped_model_explains_a_review_that_turns_and_agrees_with_predict(shipped: ServerThread) -> None:
    """The latest shipped version has a step graph: Explain's last running probability is Predict's,
    also for a review long enough to be truncated (its middle sentences unread)."""
    api = pb_grpc.SentimentServiceStub(shipped.channel)
    turning = POSITIVE + " " + NEGATIVE
    for text in (turning, POSITIVE * 20):
        reply = api.Explain(pb.ExplainRequest(text=text), timeout=TIMEOUT)
        predicted = api.Predict(pb.PredictRequest(text=text), timeout=TIMEOUT).prediction.probability
        read = [s for s in reply.sentences if s.tokens_read]
        assert read[-1].running_probability == reply.prediction.probability
        assert reply.prediction.probability == pytest.approx(predicted, abs=1e-5)
    assert any(s.tokens_read == 0 and not s.HasField("effect") for s in reply.sentences)  # the long one
    reply = api.Explain(pb.ExplainRequest(text=turning), timeout=TIMEOUT)
    assert reply.prediction.label == "negative"
    assert reply.sentences[reply.turning_point].text.startswith(("A dull", "The plot", "A complete"))
    assert reply.sentences[2].running_probability > 0.9  # the praise, before the turn
