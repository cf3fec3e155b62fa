"""Texts with nothing to read are refused on every API; invisible characters change nothing;
the readability signal and the advertised limits reach clients."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from protos.inference import grpc_predict_v2_pb2 as kpb
from protos.inference import grpc_predict_v2_pb2_grpc as kpb_grpc
from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from runtime.preprocessing import Vocabulary, encode_for_model
from runtime.repository import load_version
from serve.grpc.kserve_codec import encode_bytes_tensor
from tests.serve.conftest import REVIEWS, ServerThread, make_settings

TIMEOUT = 10.0
# Handed case c16 (markup only, zero-width spaces only, a lone BOM, control characters,
# spaces), then more of each kind: other tags, other invisible and control characters.
UNREADABLE = ["<br /><br /><br />", "\u200b\u200b\u200b", "\ufeff", "\u0001\u0002\u007f", "   ",
              "<p><i></i></p>", "<br/>\u200d<br>", "\u2060\u00ad\u200c", "\u202e\u202c\u2066", "\ufe0f\U000e0020",
              "\x00\x1b\x9b", "\t\u200e\n", "<div class='x'>\u3164</div>"]


def sentiment(server: ServerThread) -> pb_grpc.SentimentServiceStub:
    return pb_grpc.SentimentServiceStub(server.channel)


def refusal(call) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return caught.value.details()


@pytest.mark.parametrize("text", UNREADABLE)
def test_predict_refuses_a_text_with_nothing_to_read(server: ServerThread, text: str) -> None:
    details = refusal(lambda: sentiment(server).Predict(pb.PredictRequest(text=text), timeout=TIMEOUT))
    assert "is empty" in details or "has nothing to read" in details


def test_predict_batch_names_the_unreadable_text(server: ServerThread) -> None:
    texts = [REVIEWS[0], "<br /><br />", REVIEWS[1]]
    details = refusal(lambda: sentiment(server).PredictBatch(pb.PredictBatchRequest(texts=texts), timeout=TIMEOUT))
    assert details.startswith("texts[1] has nothing to read")


def test_stream_refuses_an_unreadable_text_naming_its_request(server: ServerThread) -> None:
    requests = iter([pb.PredictStreamRequest(id="ok", texts=[REVIEWS[0]]),
                     pb.PredictStreamRequest(id="blank", texts=["\u200b\ufeff"])])

    def drain() -> None:
        list(sentiment(server).PredictStream(requests, timeout=TIMEOUT))

    assert "request id='blank'" in refusal(drain)


def test_a_large_request_is_refused_for_one_unreadable_text(server: ServerThread) -> None:
    """A request larger than a batch is checked as a whole before any chunk is scored."""
    texts = [REVIEWS[i % len(REVIEWS)] for i in range(40)]
    texts[33] = "<i></i>"
    details = refusal(lambda: sentiment(server).PredictBatch(pb.PredictBatchRequest(texts=texts), timeout=TIMEOUT))
    assert details.startswith("texts[33] has nothing to read")


@pytest.mark.parametrize("raw", [True, False])
def test_kserve_refuses_a_text_with_nothing_to_read(server: ServerThread, raw: bool) -> None:
    texts = [b"fine film", "\u200b<br />".encode()]
    request = kpb.ModelInferRequest(model_name="imdb-lstm")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[2])
    if raw:
        request.raw_input_contents.append(encode_bytes_tensor(texts))
    else:
        tensor.contents.bytes_contents.extend(texts)
    details = refusal(lambda: kpb_grpc.GRPCInferenceServiceStub(server.channel).ModelInfer(request, timeout=TIMEOUT))
    assert "input 'text'[1] has nothing to read" in details


def test_invisible_characters_do_not_change_the_answer(server: ServerThread) -> None:
    plain = ["wonderful moving film", "dull boring mess"]
    marked = ["won\u00adder\u200bful mo\u2060ving\ufe0f fi\u200dlm\u202e", "\ufeffdull bo\x07ring me\u00adss\u2069"]
    reply = sentiment(server).PredictBatch(pb.PredictBatchRequest(texts=plain + marked), timeout=TIMEOUT)
    probabilities = [p.probability for p in reply.predictions]
    assert probabilities[2:] == probabilities[:2]


def test_known_word_fraction_in_both_apis(server: ServerThread, repository) -> None:
    model = load_version(repository, "imdb-lstm")
    tokenizer = model.load_tokenizer()
    texts = ["a film", "zzzz qqqq film", REVIEWS[3]]
    expected = [x.known_word_fraction for x in encode_for_model(tokenizer, Vocabulary.of(tokenizer, model.unk_id),
                                                                 texts, model.max_tokens, model.head_tokens)]
    reply = sentiment(server).PredictBatch(pb.PredictBatchRequest(texts=texts), timeout=TIMEOUT)
    np.testing.assert_allclose([p.known_word_fraction for p in reply.predictions], expected, atol=1e-7)
    assert reply.predictions[0].known_word_fraction == 1.0 and reply.predictions[1].known_word_fraction < 1.0
    request = kpb.ModelInferRequest(model_name="imdb-lstm")
    request.inputs.add(name="text", datatype="BYTES", shape=[3]).contents.bytes_contents.extend(
        t.encode() for t in texts)
    request.outputs.add(name="known_word_fraction")
    answer = kpb_grpc.GRPCInferenceServiceStub(server.channel).ModelInfer(request, timeout=TIMEOUT)
    np.testing.assert_allclose(answer.outputs[0].contents.fp32_contents, expected, atol=1e-7)


def test_get_limits_advertises_the_servers_flags(repository) -> None:
    strict = ServerThread(make_settings(repository, max_message_bytes=65_536, max_texts_per_request=7,
                                        max_chars_per_text=500, max_queue_size=64))
    try:
        limits = sentiment(strict).GetLimits(pb.GetLimitsRequest(), timeout=TIMEOUT)
    finally:
        strict.close()
    assert (limits.max_message_bytes, limits.max_texts_per_request, limits.max_chars_per_text) == (65_536, 7, 500)
