"""Hostile input on the HTTP port, property-based: every request is answered 2xx or with the specific
4xx its defect calls for, as KServe's ``{"error": "..."}``; never a 5xx, never a crash.

Like tests/reliability/test_hostile_input.py (whose text strategies and limits it shares),
each property knows from how it built a request what the answer must be; every example ends
with the server still ready on both ports. Then the cases a property cannot draw cheaply:
bodies over the size limit, and slow clients (a stalled request line, headers or body).
Bounded: 430 examples in all, no example database written to the shared tree.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serve.grpc.kserve_codec import encode_bytes_tensor
from tests.fixtures.http_client import Reply, infer_body, request
from tests.fixtures.server_thread import ServerThread, make_settings
from tests.reliability.conftest import TIMEOUT
from tests.reliability.test_hostile_input import (
    ADVERSARIAL,
    LIMITS,
    MAX_TEXTS,
    adversarial_text,
    any_text,
    batches,
    bounded,
    still_serving,
    text_error,
    texts,
)

INFER = "/v2/models/imdb-lstm/infer"


def has_surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


MAX_BYTES = LIMITS.max_message_bytes
# JSON can escape what no UTF-8 text holds: a lone surrogate.
# (A high surrogate followed by a low one is a valid pair once JSON-decoded, so such texts are left out.)
surrogate_text = st.lists(st.sampled_from([*ADVERSARIAL, "\ud800", "\udfff", "\udbff"]), min_size=1,
                          max_size=10).map("".join).filter(
    lambda text: has_surrogate(text) and not re.search("[\ud800-\udbff][\udc00-\udfff]", text))
finite = st.floats(allow_nan=False, allow_infinity=False)  # JSON has no NaN or Infinity (the server refuses them)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | finite | any_text,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
                           max_leaves=6)


def parses(data: bytes) -> bool:
    """Whether ``data`` is UTF-8 JSON as the server reads it."""
    try:
        json.loads(data.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError both
        return False
    return True


def send(server: ServerThread, method: str, path: str, body: bytes | dict | list | str | None = None,
         headers: dict[str, str] | None = None) -> Reply:
    reply = request(server.server.http_port, method, path, body, headers)
    assert reply.status < 500, (reply.status, reply.body[:300])
    return reply


def ready_on_both_ports(server: ServerThread) -> None:
    assert send(server, "GET", "/v2/health/ready").status == 200
    still_serving(server)


def encoded(body: object) -> bytes:
    """What ``request`` sends for a JSON body (ASCII with escapes: lone surrogates travel as \\udXXX)."""
    return json.dumps(body).encode()


@bounded(100)
@given(text=st.one_of(texts, surrogate_text))
def test_predict_any_text(server: ServerThread, text: str) -> None:
    reply = send(server, "POST", "/v1/predict", {"text": text})
    if has_surrogate(text):
        assert reply.status == 400 and "lone surrogate" in reply.error
    elif text_error(text) is not None:
        assert reply.status == 400 and text_error(text) in reply.error
    else:
        assert reply.status == 200, reply.body[:300]
        prediction = reply.json()["prediction"]
        assert (prediction["label"] == "positive") == (prediction["probability"] >= 0.5)
    ready_on_both_ports(server)


@bounded(40)
@given(batch=batches)
def test_predict_batch_any_batch(server: ServerThread, batch: list[str]) -> None:
    reply = send(server, "POST", "/v1/predict:batch", {"texts": batch})
    errors = [e for e in map(text_error, batch) if e]
    if len(encoded({"texts": batch})) > MAX_BYTES:
        assert reply.status == 413 and "--max-message-bytes" in reply.error
    elif not batch:
        assert reply.status == 400 and "send at least one text" in reply.error
    elif len(batch) > MAX_TEXTS:
        assert reply.status == 400 and f"at most {MAX_TEXTS} per request" in reply.error
    elif errors:
        # Cheap checks (empty, too long) come before the ones that need the tokenizer, so any
        # refused text may be the one named.
        assert reply.status == 400 and any(e in reply.error for e in errors), (errors, reply.error)
    else:
        assert reply.status == 200, reply.body[:300]
        assert len(reply.json()["predictions"]) == len(batch)
    ready_on_both_ports(server)


# --- KServe infer: a valid request (JSON or binary tensors), then at most one defect whose answer the test knows.


@dataclass
class Case:
    path: str
    body: bytes
    headers: dict[str, str]
    status: int
    needle: str  # part of the expected error ('' when 200)


def binary_body(header: dict, tail: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + tail, {"Inference-Header-Content-Length": str(len(text))}


WRONG_TYPES = st.one_of(st.none(), st.booleans(), st.integers(), finite,
                        st.lists(st.integers(), max_size=2), st.dictionaries(any_text, st.integers(), max_size=2))


@st.composite
def infer_cases(draw: st.DrawFn) -> Case:
    items = draw(st.lists(st.one_of(any_text, adversarial_text).filter(lambda t: text_error(t) is None),
                          min_size=1, max_size=5))
    binary = draw(st.booleans())
    body = infer_body(items)
    tensor = body["inputs"][0]
    if draw(st.booleans()):
        body["outputs"] = [{"name": name, "parameters": {"binary_data": draw(st.booleans())}}
                           for name in draw(st.sampled_from([["probability"], ["label"], ["label", "probability"]]))]
    defect = draw(st.sampled_from(
        ["none", "none", "not_json", "top_level", "member_type", "element_type", "shape_mismatch", "shape_type",
         "datatype", "name", "blank", "too_long", "surrogate", "output", "parameter_type", "custom_parameter",
         "timeout", "sequence", "model", "header_length", "binary_size", "binary_tail", "too_many"]))
    path, status, needle = INFER, 200, ""
    if defect == "element_type":
        wrong = draw(WRONG_TYPES.filter(lambda v: not isinstance(v, str)))
        tensor["data"][draw(st.integers(0, len(items) - 1))] = wrong
        binary, status, needle = False, 400, "BYTES elements travel as JSON strings"
    elif defect == "shape_mismatch":
        tensor["shape"] = [draw(st.integers(1, MAX_TEXTS).filter(lambda n: n != len(items)))]
        status, needle = 400, "'shape' is" if not binary else "raw input 'text'"
    elif defect == "shape_type":
        tensor["shape"] = [draw(st.one_of(finite, any_text, st.booleans(), st.none(),
                                          st.integers(min_value=2**63)))]
        status, needle = 400, "each dimension is an integer"
    elif defect == "too_many":
        tensor["shape"] = [draw(st.sampled_from([MAX_TEXTS + 1, 2**31, 2**63 - 1]))]
        binary, status, needle = True, 400, f"at most {MAX_TEXTS} per request"
    elif defect == "datatype":
        tensor["datatype"] = draw(st.sampled_from(["", "bytes", "FP32", "STRING", "BYTES "]))
        status, needle = 400, "datatype BYTES"
    elif defect == "name":
        tensor["name"] = draw(st.sampled_from(["", "TEXT", "input", "text "]))
        status, needle = 400, "exactly one input named 'text'"
    elif defect in ("blank", "too_long", "surrogate"):
        bad = {"blank": draw(st.sampled_from(["", " ", "\t\n", "\u3000"])),
               "too_long": "x" * (LIMITS.max_chars_per_text + 1), "surrogate": draw(surrogate_text)}[defect]
        items.insert(draw(st.integers(0, len(items))), bad)
        tensor["data"], tensor["shape"] = items, [len(items)]
        binary = binary and defect != "surrogate"
        status, needle = 400, {"blank": "is empty", "too_long": "characters", "surrogate": "not valid UTF-8"}[defect]
    elif defect == "output":
        body["outputs"] = [{"name": draw(st.sampled_from(["logits", "", "Label", "probability "]))}]
        status, needle = 400, "unknown output"
    elif defect == "parameter_type":
        body["parameters"] = {draw(any_text.filter(lambda k: k != "binary_data_output")): draw(st.one_of(
                                  st.none(), st.lists(st.integers(), max_size=2),
                                                             st.dictionaries(any_text, st.integers(), max_size=1)))}
        status, needle = 400, "a parameter is a string, number or boolean"
    elif defect == "custom_parameter":  # KServe lets a server ignore parameters it does not know
        key = draw(any_text.filter(lambda k: k not in ("timeout", "priority", "sequence_id", "sequence_start",
                                                       "sequence_end", "binary_data_output")))
        body["parameters"] = {key: draw(st.one_of(any_text, st.integers(-2**63, 2**63 - 1), st.booleans(), finite))}
    elif defect == "timeout":
        body["parameters"] = {"timeout": draw(st.one_of(st.integers(max_value=-1), any_text, st.booleans()))}
        status, needle = 400, "request parameter 'timeout'"
    elif defect == "sequence":
        body["parameters"] = {"sequence_id": draw(st.integers(1, 2**63 - 1))}
        status, needle = 400, "stateless"
    elif defect == "member_type":
        member = draw(st.sampled_from(["inputs", "outputs", "parameters", "id"]))
        kind = {"inputs": list, "outputs": list, "parameters": dict, "id": str}[member]
        body[member] = draw(WRONG_TYPES.filter(lambda v, kind=kind: not isinstance(v, kind) or isinstance(v, bool)))
        status, needle = 400, f"'{member}' must be"
    elif defect == "model":
        # '.' and '..' are path segments to HTTP, not names: a URL cannot carry them as a model name.
        name = draw(any_text.filter(lambda n: n not in ("imdb-lstm", ".", "..")))
        path = f"/v2/models/{quote(name, safe='')}/infer"
        status, needle = 404, ""  # "unknown model", or no route at all for a name like '' or '..'
    if binary and defect not in ("element_type", "member_type"):
        raw = encode_bytes_tensor([t.encode("utf-8") for t in tensor.pop("data")])
        tensor["parameters"] = {"binary_data_size": len(raw)}
        data, headers = binary_body(body, raw)
    else:
        data, headers = encoded(body), {}
    if defect == "not_json":
        cut = data[:draw(st.integers(0, len(data) - 1))]
        data, headers = cut + draw(st.sampled_from([b"", b"}", b"\x00"])), {}
        if parses(data):  # the cut (and a closing brace) happened to leave valid JSON: a NUL never is
            data = cut + b"\x00"
        status, needle = 400, "request body is not valid"  # JSON; or UTF-8, where the cut splits a character
    elif defect == "top_level":
        data, headers = encoded(draw(WRONG_TYPES.filter(lambda v: not isinstance(v, dict)))), {}
        status, needle = 400, "must be a JSON object"
    elif defect == "header_length":
        headers = {"Inference-Header-Content-Length": draw(st.sampled_from(
            ["-1", "abc", "", "5.0", str(len(data) + 1), "1e3", str(2**64)]))}
        status, needle = 400, "Inference-Header-Content-Length"
    elif defect == "binary_size" and binary:
        size = tensor["parameters"]["binary_data_size"]
        tensor["parameters"]["binary_data_size"] = draw(st.integers(-5, size + 64).filter(lambda n: n != size))
        data, headers = binary_body(body, data[int(headers["Inference-Header-Content-Length"]):])
        status, needle = 400, ""  # past the end, short of it, or a tensor cut wrong: each refused its own way
    elif defect == "binary_tail" and binary:
        data += draw(st.binary(min_size=1, max_size=16))
        status, needle = 400, "bytes of binary data follow the JSON"
    return Case(path, data, headers, status, needle)


@bounded(150)
@given(case=infer_cases())
def test_infer_valid_or_refused_with_the_right_status(server: ServerThread, case: Case) -> None:
    reply = send(server, "POST", case.path, case.body, case.headers)
    assert reply.status == case.status, reply.body[:400]
    if reply.status != 200:
        assert case.needle in reply.error
    else:
        if "inference-header-content-length" in reply.headers:
            header = json.loads(reply.body[:int(reply.headers["inference-header-content-length"])])
        else:
            header = reply.json()
        assert header["model_name"] == "imdb-lstm" and header["model_version"] == "1"
        assert all(output["shape"] == header["outputs"][0]["shape"] for output in header["outputs"])
    ready_on_both_ports(server)


ROUTES = ["/v2/models/imdb-lstm/infer", "/v1/predict", "/v1/predict:batch", "/v2/repository/index"]


@bounded(60)
@given(path=st.sampled_from(ROUTES), body=st.one_of(st.binary(max_size=200), json_values.map(encoded)),
       header_length=st.one_of(st.none(), st.integers(-2, 210).map(str)))
def test_any_bytes_as_a_body_are_parsed_or_refused(server: ServerThread, path: str, body: bytes,
                                                  header_length: str | None) -> None:
    headers = {} if header_length is None else {"Inference-Header-Content-Length": header_length}
    reply = send(server, "POST", path, body, headers)
    if reply.status != 200:  # bytes that happen to parse are ordinary requests, answered by the API's own rules
        assert reply.status in (400, 404) and reply.error
    ready_on_both_ports(server)


METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "FOO"]
segments = st.one_of(st.sampled_from(["v2", "v1", "models", "imdb-lstm", "versions", "1", "ready", "infer", "health",
                                      "live", "stats", "config", "repository", "index", "predict", "predict:batch",
                                      "..", ".", ""]),
                     any_text.map(lambda s: quote(s, safe="")))


@bounded(80)
@given(method=st.sampled_from(METHODS), parts=st.lists(segments, max_size=6))
def test_any_method_and_path_get_an_answer_never_a_server_error(server: ServerThread, method: str,
                                                               parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    reply = send(server, method, path, b"{}" if method in ("POST", "PUT", "PATCH") else None)
    assert reply.status in (200, 400, 404, 405), (method, path, reply.status)
    if method == "FOO":  # not HTTP's: aiohttp's parser refuses it before any route, in plain text
        assert reply.status == 400 and b"Invalid method" in reply.body
    elif reply.status >= 400 and method != "HEAD":
        assert reply.error
    ready_on_both_ports(server)


# --- Bodies over the limit, and slow clients.


def test_a_declared_oversized_body_is_refused_before_it_is_read(server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", server.server.http_port), timeout=TIMEOUT) as sock:
        sock.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BYTES + 1}\r\n\r\n".encode()
                     + b'{"text": "')  # then nothing: the answer must not wait for the other 16 MiB
        head = sock.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head
    assert f"limit of {MAX_BYTES} bytes (--max-message-bytes)" in head
    ready_on_both_ports(server)


def test_a_real_oversized_body_is_refused(server: ServerThread) -> None:
    reply = send(server, "POST", "/v1/predict:batch", {"texts": ["x" * 1000] * (MAX_BYTES // 1000 + 1)})
    assert reply.status == 413 and "--max-message-bytes" in reply.error
    ready_on_both_ports(server)


@pytest.fixture(scope="module")
def impatient(repository: Path) -> Iterator[ServerThread]:
    """A server that gives clients one second to send their headers, and one more for the body."""
    running = ServerThread(make_settings(repository, http_read_timeout_s=1.0))
    yield running
    running.close()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by the socket timeout)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("sent", [b"", b"POST /v1/pre", b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Le"],
                         ids=["nothing", "part of the request line", "part of the headers"])
def test_a_client_stalling_before_its_headers_end_is_disconnected(impatient: ServerThread, sent: bytes) -> None:
    with socket.create_connection(("127.0.0.1", impatient.server.http_port), timeout=TIMEOUT) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        assert read_until_closed(sock) == b""  # closed, without an answer
        assert time.monotonic() - started < TIMEOUT
    assert send(impatient, "GET", "/v2/health/ready").status == 200


def test_a_client_stalling_in_its_body_gets_408_and_others_are_served_meanwhile(impatient: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", impatient.server.http_port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"text\": \"a fin")
        # Another client is answered while this one stalls: one slow client holds no one up.
        assert send(impatient, "POST", "/v1/predict", {"text": "a fine film"}).status == 200
        answer = read_until_closed(sock).decode("latin-1")
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "did not arrive within 1 s (--http-read-timeout-s)" in answer
    assert send(impatient, "GET", "/v2/health/ready").status == 200


def test_slow_but_steady_clients_within_the_limit_are_served(impatient: ServerThread) -> None:
    """The limit is on the whole body; a client that trickles it in under the limit is answered."""
    body = json.dumps({"text": "a fine film"}).encode()
    with socket.create_connection(("127.0.0.1", impatient.server.http_port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n")
        for index in range(0, len(body), 4):
            sock.sendall(body[index:index + 4])
        answer = read_until_closed(sock).decode("utf-8")
    assert answer.startswith("HTTP/1.1 200"), answer
