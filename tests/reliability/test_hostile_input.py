"""Hostile input, property-based: every RPC of both APIs ends OK or with a specific code, never INTERNAL.

Each property has an oracle: the test knows from how it built a request whether the server
must accept it (and what the answer must look like) or refuse it, and with which code. Every
example ends with a health check, so a server that broke while answering fails the test.
Bounded: 600 examples in all, no example database written to the shared tree.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protos.inference import grpc_predict_v2_pb2 as kpb
from protos.inference import grpc_predict_v2_pb2_grpc as kpb_grpc
from protos.sentiment.v1 import sentiment_pb2 as spb
from protos.sentiment.v1 import sentiment_pb2_grpc as spb_grpc
from runtime.preprocessing import tokenize
from serve.grpc.kserve_codec import decode_bytes_tensor, encode_bytes_tensor
from serve.ops.settings import Settings
from tests.fixtures.server_thread import ServerThread
from tests.fixtures.tiny_repository import tiny_tokenizer
from tests.reliability.conftest import TIMEOUT, health_status

LIMITS = Settings()  # the server under test runs the shipped default limits
TOKENIZER = tiny_tokenizer()  # the served model's normalizer and pre-tokenizer: they decide what is readable
MAX_TEXTS, MAX_CHARS = LIMITS.max_texts_per_request, LIMITS.max_chars_per_text
OK, INVALID, NOT_FOUND, EXHAUSTED = (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
                                     grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED)


def bounded(examples: int) -> settings:
    """Few examples, no per-example deadline (the machine is shared), no database in the tree."""
    return settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))

# Characters that break naive text handling: combining marks, bidi controls and RTL letters,
# zero-width and other invisible characters, NUL and C0/C1 controls, odd spaces, the last
# code point, non-characters, astral emoji with joiners, markup the normalizer strips.
ADVERSARIAL = ["\u0301", "\u0489", "\u036f", "\u202e", "\u202d", "\u200f", "\u2067", "\u05d0", "\u0627", "\u200b",
               "\u200c", "\u200d", "\u2060", "\ufeff", "\x00", "\x07", "\x1b", "\x7f", "\x85", "\u00a0", "\u3000",
               "\u2028", "\u2029", "\U0010ffff", "\ufffe", "\uffff", "\ufffd", "\U0001f468\u200d\U0001f469",
               "\U0001f600", "<br />", "\t", "\n", " ", "a", "Z", "9", "é", "ß", "İ", "ﬃ", "𝔘"]
adversarial_text = st.lists(st.sampled_from(ADVERSARIAL), max_size=40).map("".join)
any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)  # surrogates cannot travel as proto strings
# Long texts are built by repetition: drawing a megabyte character by character would take minutes.
long_text = st.builds(lambda unit, count: (unit * count)[:count],
                      st.sampled_from(["a", "\u0301", "\u200b", "\U0001f600", "ab\u202ecd ", "é "]),
                      st.sampled_from([MAX_CHARS - 1, MAX_CHARS, MAX_CHARS + 1, 1_000_000]))
texts = st.one_of(any_text, adversarial_text, long_text)


def text_error(text: str) -> str | None:
    """The refusal the documented limits demand for one text (None: it must be scored)."""
    if not text or text.isspace():
        return "is empty"
    if len(text) > MAX_CHARS:
        return f"at most {MAX_CHARS} accepted"
    if not tokenize(TOKENIZER, [text])[0]:  # cleaned and normalized, no token is left
        return "has nothing to read"
    return None


def outcome(call: Callable[[], object]) -> tuple[grpc.StatusCode, object]:
    """Run ``call``; returns (OK, reply) or (code, details), and never lets INTERNAL/UNKNOWN pass."""
    try:
        return OK, call()
    except grpc.RpcError as exc:
        assert exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), exc.details()
        assert exc.details(), f"{exc.code()} without a message"
        return exc.code(), exc.details()


def assert_prediction(prediction: spb.Prediction) -> None:
    assert prediction.label in ("positive", "negative") and 0.0 <= prediction.probability <= 1.0
    assert (prediction.label == "positive") == (prediction.probability >= 0.5)


@pytest.fixture(scope="module")
def sentiment(server: ServerThread) -> spb_grpc.SentimentServiceStub:
    return spb_grpc.SentimentServiceStub(server.channel)


@pytest.fixture(scope="module")
def kserve(server: ServerThread) -> kpb_grpc.GRPCInferenceServiceStub:
    return kpb_grpc.GRPCInferenceServiceStub(server.channel)


def still_serving(server: ServerThread) -> None:
    assert health_status(server.channel) == "SERVING"


@bounded(100)
@given(text=texts)
def test_predict_any_text(server: ServerThread, sentiment, text: str) -> None:
    code, reply = outcome(lambda: sentiment.Predict(spb.PredictRequest(text=text), timeout=TIMEOUT))
    expected = text_error(text)
    if expected is None:
        assert code == OK, reply
        assert_prediction(reply.prediction)
    else:
        assert code == INVALID and expected in reply
    still_serving(server)


# Empty, ordinary and over-the-limit batch sizes; big ones repeat one text to stay cheap to draw.
batches = st.one_of(st.lists(texts, max_size=6),
                    st.builds(lambda text, count: [text] * count, st.sampled_from(["fine", "\u200b", "a\u0301"]),
                              st.sampled_from([MAX_TEXTS - 1, MAX_TEXTS, MAX_TEXTS + 1, 20_000])))


@bounded(60)
@given(batch=batches)
def test_predict_batch_any_batch(server: ServerThread, sentiment, batch: list[str]) -> None:
    code, reply = outcome(lambda: sentiment.PredictBatch(spb.PredictBatchRequest(texts=batch), timeout=TIMEOUT))
    errors = [e for e in map(text_error, batch) if e]
    if len(spb.PredictBatchRequest(texts=batch).SerializeToString()) > LIMITS.max_message_bytes:
        assert code == EXHAUSTED  # refused by size before any handler runs
    elif not batch:
        assert code == INVALID and "send at least one text" in reply
    elif len(batch) > MAX_TEXTS:
        assert code == INVALID and f"at most {MAX_TEXTS} per request" in reply
    elif errors:
        # Cheap checks (empty, too long) come before the ones that need the tokenizer, so any
        # refused text may be the one named.
        assert code == INVALID and any(e in reply for e in errors), (errors, reply)
    else:
        assert code == OK, reply
        assert len(reply.predictions) == len(batch)
        for prediction in reply.predictions:
            assert_prediction(prediction)
    still_serving(server)


stream_messages = st.lists(st.tuples(any_text, st.lists(st.one_of(any_text, adversarial_text), max_size=4)),
                           max_size=8)


@bounded(50)
@given(messages=stream_messages)
def test_predict_stream_any_messages(server: ServerThread, sentiment, messages: list[tuple[str, list[str]]]) -> None:
    requests = [spb.PredictStreamRequest(id=request_id, texts=batch) for request_id, batch in messages]
    answered: list[str] = []

    def run() -> None:
        for reply in sentiment.PredictStream(iter(requests), timeout=TIMEOUT):
            answered.append(reply.id)
            for prediction in reply.predictions:
                assert_prediction(prediction)

    code, details = outcome(run)
    valid = [m.id for m in requests if m.texts and not any(map(text_error, m.texts))]
    refused = [m.id for m in requests if not m.texts or any(map(text_error, m.texts))]
    if not refused:
        assert code == OK, details
        assert sorted(answered) == sorted(valid)  # every request answered once, under its own id
    else:  # the first refused request ends the stream, naming its id
        assert code == INVALID
        assert any(f"request id={request_id!r}" in details for request_id in refused), details
        assert set(answered) <= set(valid)
    still_serving(server)


# --- KServe ModelInfer: a valid request, then at most one defect whose refusal the test knows.


@dataclass
class Case:
    request: kpb.ModelInferRequest
    code: grpc.StatusCode
    needle: str  # part of the expected message ('' when OK)


def valid_infer(items: list[bytes], raw: bool, outputs: list[str]) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name="imdb-lstm", model_version="", id="req")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(items)])
    if raw:
        request.raw_input_contents.append(encode_bytes_tensor(items))
    else:
        tensor.contents.bytes_contents.extend(items)
    for name in outputs:
        request.outputs.add(name=name)
    return request


@st.composite
def infer_cases(draw: st.DrawFn) -> Case:
    items = [t.encode("utf-8") for t in draw(st.lists(st.one_of(any_text, adversarial_text).filter(
        lambda t: text_error(t) is None), min_size=1, max_size=5))]
    raw = draw(st.booleans())
    outputs = draw(st.sampled_from([[], ["probability"], ["label"], ["label", "probability"],
                                    ["known_word_fraction", "probability"]]))
    request = valid_infer(items, raw, outputs)
    tensor = request.inputs[0]
    defect = draw(st.sampled_from(
        ["none", "none", "truncate", "append", "overlong_prefix", "short_prefix", "count", "invalid_utf8",
         "blank", "too_long", "too_many", "name", "datatype", "rank", "extra_input", "no_input", "both",
         "typed_wrong_field", "raw_entries", "output", "duplicate_output", "no_model", "model", "version",
         "custom_parameter", "sequence", "timeout"]))
    if defect in ("truncate", "append", "overlong_prefix", "short_prefix") and not raw:
        defect = "none"  # raw-only defects
    buffer = request.raw_input_contents[0] if raw else b""
    if defect == "truncate":  # the last element's bytes run past the end
        request.raw_input_contents[0] = buffer[:-draw(st.integers(1, len(buffer)))]
        return Case(request, INVALID, "raw input 'text'")
    if defect == "append":
        request.raw_input_contents[0] = buffer + draw(st.binary(min_size=1, max_size=16))
        return Case(request, INVALID, "raw input 'text'")
    if defect == "overlong_prefix":  # a length beyond the whole buffer can never parse
        index = draw(st.integers(0, len(items) - 1))
        offset = sum(4 + len(item) for item in items[:index])
        length = draw(st.integers(len(buffer) + 1, 2**32 - 1))
        request.raw_input_contents[0] = buffer[:offset] + struct.pack("<I", length) + buffer[offset + 4:]
        return Case(request, INVALID, "raw input 'text'")
    if defect == "short_prefix":  # fewer than 4 bytes where a length prefix must be
        request.raw_input_contents[0] = buffer + b"\x01\x00"[:draw(st.integers(1, 2))]
        tensor.shape[0] = len(items) + 1
        return Case(request, INVALID, f"ends at element {len(items)}")
    if defect == "count":
        tensor.shape[0] = draw(st.integers(-3, MAX_TEXTS).filter(lambda n: n != len(items)))
        return Case(request, INVALID, "input 'text'")
    if defect in ("invalid_utf8", "blank", "too_long"):
        bad = {"invalid_utf8": draw(st.binary(min_size=1, max_size=12).filter(_not_utf8)),
               "blank": draw(st.sampled_from([b"", b" ", b"\t\n", "\u3000".encode()])),
               "too_long": b"x" * (MAX_CHARS + 1)}[defect]
        index = draw(st.integers(0, len(items)))
        items.insert(index, bad)
        needle = {"invalid_utf8": "not valid UTF-8", "blank": "is empty", "too_long": "characters"}[defect]
        return Case(valid_infer(items, raw, outputs), INVALID, needle)
    if defect == "too_many":
        tensor.shape[0] = draw(st.sampled_from([MAX_TEXTS + 1, 2**31, 2**63 - 1]))
        return Case(request, INVALID, f"at most {MAX_TEXTS} per request")
    if defect == "name":
        tensor.name = draw(st.sampled_from(["", "TEXT", "text\x00", "input", "text "]) | any_text).replace(
            "text", "txet") or ""
        return Case(request, INVALID, "exactly one input named 'text'")
    if defect == "datatype":
        tensor.datatype = draw(st.sampled_from(["", "bytes", "FP32", "INT64", "STRING", "BYTES "]) | any_text.filter(
            lambda d: d != "BYTES"))
        return Case(request, INVALID, "datatype BYTES")
    if defect == "rank":
        tensor.shape[:] = draw(st.sampled_from([[], [len(items), 1], [1, len(items)], [len(items), 1, 1]]))
        return Case(request, INVALID, "shape [N]")
    if defect == "extra_input":
        request.inputs.add(name=draw(st.sampled_from(["text", "other"])), datatype="BYTES", shape=[1])
        return Case(request, INVALID, "exactly one input")
    if defect == "no_input":
        del request.inputs[:]
        return Case(request, INVALID, "exactly one input")
    if defect == "both":
        tensor.contents.bytes_contents.append(b"more")
        if not raw:
            request.raw_input_contents.append(encode_bytes_tensor(items))
        return Case(request, INVALID, "both raw_input_contents and contents")
    if defect == "typed_wrong_field":
        field = draw(st.sampled_from(["fp32_contents", "int64_contents", "bool_contents"]))
        getattr(tensor.contents, field).append(1)
        if raw:
            del request.raw_input_contents[:]
        return Case(request, INVALID, "bytes_contents")
    if defect == "raw_entries":
        request.raw_input_contents.append(draw(st.binary(max_size=8)))
        if not raw:
            del tensor.contents.bytes_contents[:]
            request.raw_input_contents.insert(0, encode_bytes_tensor(items))
        return Case(request, INVALID, "entries for 1 input")
    if defect == "output":
        request.outputs.add(name=draw(st.sampled_from(["logits", "", "Label", "probability "])))
        return Case(request, INVALID, "unknown output")
    if defect == "duplicate_output":
        del request.outputs[:]
        request.outputs.add(name="label")
        request.outputs.add(name="label")
        return Case(request, INVALID, "output names repeat")
    if defect == "no_model":
        request.model_name = ""
        return Case(request, INVALID, "model_name is required")
    if defect == "model":
        request.model_name = draw(any_text.filter(lambda name: name not in ("", "imdb-lstm")))
        return Case(request, NOT_FOUND, "unknown model")
    if defect == "version":
        request.model_version = draw(st.sampled_from(["0", "2", "01", "-1", "latest", "1 "]) | any_text.filter(
            lambda v: v not in ("", "1")))
        return Case(request, NOT_FOUND, "no version")
    if defect == "custom_parameter":  # KServe v2 lets a server ignore parameters it does not know
        key = draw(any_text.filter(lambda k: k not in TRITON_REQUEST_PARAMETERS))
        value = draw(st.one_of(any_text, st.integers(-2**63, 2**63 - 1), st.booleans()))
        parameter = request.parameters[key]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int):
            parameter.int64_param = value
        else:
            parameter.string_param = value
        return Case(request, OK, "")
    if defect == "sequence":
        request.parameters["sequence_id"].int64_param = draw(st.integers(1, 2**63 - 1))
        return Case(request, INVALID, "stateless")
    if defect == "timeout":
        if draw(st.booleans()):
            request.parameters["timeout"].int64_param = draw(st.integers(-2**63, -1))
        else:
            request.parameters["timeout"].string_param = draw(any_text)
        return Case(request, INVALID, "request parameter 'timeout'")
    return Case(request, OK, "")


# Request parameters tritonclient sets, which this server reads.
TRITON_REQUEST_PARAMETERS = {"timeout", "priority", "sequence_id", "sequence_start", "sequence_end"}


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@bounded(200)
@given(case=infer_cases())
def test_model_infer_valid_or_refused_with_the_right_code(server: ServerThread, kserve, case: Case) -> None:
    code, reply = outcome(lambda: kserve.ModelInfer(case.request, timeout=TIMEOUT))
    assert code == case.code, reply
    if code != OK:
        assert case.needle in reply
    else:  # raw in, raw out; typed in, typed out; outputs as asked
        count = case.request.inputs[0].shape[0]
        names = [o.name for o in case.request.outputs] or ["probability", "label", "known_word_fraction"]
        assert [o.name for o in reply.outputs] == names and all(list(o.shape) == [count] for o in reply.outputs)
        raw = bool(case.request.raw_input_contents)
        assert len(reply.raw_output_contents) == (len(names) if raw else 0)
        if raw and "label" in names:
            labels = decode_bytes_tensor(reply.raw_output_contents[names.index("label")], count)
            assert set(labels) <= {b"positive", b"negative"}
        if not raw and "probability" in names:
            assert all(0 <= p <= 1 for p in reply.outputs[names.index("probability")].contents.fp32_contents)
    still_serving(server)


@bounded(50)
@given(cases=st.lists(infer_cases(), min_size=1, max_size=4))
def test_model_stream_infer_answers_every_request_and_refuses_each_alone(server: ServerThread, kserve,
                                                                         cases: list[Case]) -> None:
    """Triton's stream: a bad request is answered with its error, the others are scored, the stream ends OK."""
    for index, case in enumerate(cases):
        case.request.id = f"r{index}"
    code, answers = outcome(lambda: list(kserve.ModelStreamInfer(iter([c.request for c in cases]), timeout=TIMEOUT)))
    assert code == OK, answers
    assert len(answers) == len(cases)
    errors = {a.error_message.split("'")[1]: a.error_message for a in answers if a.error_message}
    scored = {a.infer_response.id for a in answers if not a.error_message}
    assert scored == {f"r{i}" for i, c in enumerate(cases) if c.code == OK}
    for index, case in enumerate(cases):
        if case.code != OK:
            assert case.needle in errors[f"r{index}"], errors
    still_serving(server)


names = st.sampled_from(["imdb-lstm", "", "IMDB-LSTM", "imdb-lstm\x00", "../imdb-lstm"]) | any_text
versions = st.sampled_from(["", "1", "2", "0", "latest", "-1", "1\u0301"]) | any_text


@bounded(40)
@given(name=names, version=versions)
def test_kserve_health_and_metadata_any_names(server: ServerThread, kserve, name: str, version: str) -> None:
    assert kserve.ServerLive(kpb.ServerLiveRequest(), timeout=TIMEOUT).live
    assert kserve.ServerReady(kpb.ServerReadyRequest(), timeout=TIMEOUT).ready
    assert kserve.ServerMetadata(kpb.ServerMetadataRequest(), timeout=TIMEOUT).name
    served = name == "imdb-lstm" and version in ("", "1")
    code, reply = outcome(lambda: kserve.ModelReady(kpb.ModelReadyRequest(name=name, version=version),
                                                    timeout=TIMEOUT))
    assert (code, getattr(reply, "ready", None)) == ((OK, True) if served else (NOT_FOUND, None))
    code, reply = outcome(lambda: kserve.ModelMetadata(kpb.ModelMetadataRequest(name=name, version=version),
                                                       timeout=TIMEOUT))
    assert code == (OK if served else NOT_FOUND)
    if served:
        assert [i.name for i in reply.inputs] == ["text"] and reply.versions == ["1"]
    code, reply = outcome(lambda: kserve.ModelConfig(kpb.ModelConfigRequest(name=name, version=version),
                                                     timeout=TIMEOUT))
    assert code == (OK if served else NOT_FOUND)
    if served:
        assert reply.config.name == "imdb-lstm" and [i.name for i in reply.config.input] == ["text"]
    code, reply = outcome(lambda: kserve.ModelStatistics(kpb.ModelStatisticsRequest(name=name, version=version),
                                                         timeout=TIMEOUT))
    everything = name == "" and version == ""
    assert code == (OK if served or everything else INVALID if name == "" else NOT_FOUND)
    if code == OK:
        assert [(m.name, m.version) for m in reply.model_stats] == [("imdb-lstm", "1")]
    assert [m.state for m in kserve.RepositoryIndex(kpb.RepositoryIndexRequest(repository_name=name),
                                                    timeout=TIMEOUT).models] == ["READY"]
    still_serving(server)


# --- Below protobuf: arbitrary bytes as the serialized request of every method.

METHODS = {
    "/sentiment.v1.SentimentService/Predict": "unary",
    "/sentiment.v1.SentimentService/PredictBatch": "unary",
    "/sentiment.v1.SentimentService/PredictStream": "stream",
    "/inference.GRPCInferenceService/ServerLive": "unary",
    "/inference.GRPCInferenceService/ServerReady": "unary",
    "/inference.GRPCInferenceService/ModelReady": "unary",
    "/inference.GRPCInferenceService/ServerMetadata": "unary",
    "/inference.GRPCInferenceService/ModelMetadata": "unary",
    "/inference.GRPCInferenceService/ModelInfer": "unary",
    "/inference.GRPCInferenceService/ModelStreamInfer": "stream",
    "/inference.GRPCInferenceService/ModelConfig": "unary",
    "/inference.GRPCInferenceService/ModelStatistics": "unary",
    "/inference.GRPCInferenceService/RepositoryIndex": "unary",
}
# Invalid UTF-8 inside a string field (the only way to send what a lone surrogate would be):
# field 1 (length-delimited) of the sentiment and KServe requests is a string in each.
BAD_UTF8_FIELD = b"\x0a\x04\xed\xa0\x80x"  # the UTF-8-style encoding of U+D800, a lone surrogate
wire_bytes = st.one_of(st.binary(max_size=64), st.just(BAD_UTF8_FIELD),
                       st.binary(max_size=16).map(lambda tail: BAD_UTF8_FIELD + tail))


@bounded(100)
@given(method=st.sampled_from(sorted(METHODS)), messages=st.lists(wire_bytes, min_size=1, max_size=3))
def test_any_bytes_on_the_wire_are_parsed_or_refused_as_invalid(server: ServerThread, method: str,
                                                                 messages: list[bytes]) -> None:
    if METHODS[method] == "stream":
        call = server.channel.stream_stream(method)

        def run() -> list[bytes]:
            return list(call(iter(messages), timeout=TIMEOUT))
    else:
        call = server.channel.unary_unary(method)

        def run() -> bytes:
            return call(messages[0], timeout=TIMEOUT)

    code, details = outcome(run)
    # Bytes that happen to parse are ordinary requests (OK, or refused by the API's own rules).
    assert code in (OK, INVALID, NOT_FOUND), details
    still_serving(server)


def test_a_lone_surrogate_cannot_be_sent_and_its_bytes_are_refused_cleanly(server: ServerThread, sentiment) -> None:
    with pytest.raises(ValueError):  # protobuf refuses it on the client side already
        spb.PredictRequest(text="bad \ud800 half").SerializeToString()
    for method in ("/sentiment.v1.SentimentService/Predict", "/inference.GRPCInferenceService/ModelInfer"):
        code, details = outcome(lambda method=method: server.channel.unary_unary(method)(BAD_UTF8_FIELD,
                                                                                         timeout=TIMEOUT))
        assert code == INVALID and "could not be parsed" in details and "UTF-8" in details
    code, details = outcome(lambda: list(server.channel.stream_stream("/sentiment.v1.SentimentService/PredictStream")(
        iter([spb.PredictStreamRequest(id="ok", texts=["fine"]).SerializeToString(), BAD_UTF8_FIELD]),
        timeout=TIMEOUT)))
    assert code == INVALID and "could not be parsed" in details
    # In a BYTES tensor the same bytes are legal protobuf: the server decodes them and refuses.
    request = valid_infer([b"fine", b"\xed\xa0\x80"], raw=False, outputs=[])
    code, details = outcome(lambda: kpb_grpc.GRPCInferenceServiceStub(server.channel).ModelInfer(request,
                                                                                                timeout=TIMEOUT))
    assert code == INVALID and "element 1 is not valid UTF-8" in details
    still_serving(server)
