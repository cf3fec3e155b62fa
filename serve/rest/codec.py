"""JSON bodies of the HTTP port <-> the gRPC APIs' messages (no HTTP library, no model: pure conversion).

KServe v2 REST (Open Inference Protocol over HTTP) is turned into the very
``ModelInferRequest`` the gRPC port receives, so both ports share one validation
(:mod:`serve.kserve_codec`) and one inference path (:meth:`serve.kserve_servicer.KServeServicer.infer`).
What only exists over HTTP is handled here:

- BYTES elements travel as JSON strings (``"data": ["a review", ...]``);
- Triton's *binary data* extension: with the header ``Inference-Header-Content-Length: N``
  the body is N bytes of JSON followed by the binary tensors, each input's share given by its
  ``binary_data_size`` parameter (a BYTES tensor in the same 4-byte-length-prefixed layout as
  gRPC's ``raw_input_contents``); outputs asked for with ``binary_data: true`` (or every
  output, with the request parameter ``binary_data_output: true``) come back the same way.
  NVIDIA's ``tritonclient.http`` uses it by default;
- the JSON of the metadata, configuration and statistics messages, with 64-bit integers as
  JSON numbers (protobuf's JSON mapping would write them as strings; Triton writes numbers).

The ``/v1`` JSON API mirrors ``sentiment.v1``: ``{"text": ...}`` and ``{"texts": [...]}`` in,
the response messages' fields out; ``/v1/explain`` answers the object ``python -m client explain
--json`` prints. Every malformation is an :class:`~serve.ops.errors.InvalidInput`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from protos.inference import grpc_predict_v2_pb2 as pb
from serve.engine.core import Scored
from serve.engine.explain_service import Explained
from serve.grpc import kserve_codec as codec
from serve.ops.errors import InvalidInput

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
# Parameters of the binary data extension: read here, never passed on as request parameters.
_BINARY_SIZE, _BINARY_OUTPUT, _BINARY = "binary_data_size", "binary_data_output", "binary_data"
_INT64 = (-2**63, 2**63 - 1)
_UINT64_MAX = 2**64 - 1
_INTEGER_TYPES = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
                  FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}


def _refuse_constant(name: str) -> None:
    raise InvalidInput(f"request body is not valid JSON: {name} is not a JSON number")


def parse_json(data: bytes, what: str = "request body") -> Any:
    """``data`` as JSON (UTF-8; NaN/Infinity refused), or :class:`InvalidInput` saying where it breaks."""
    try:  # decoded here: json.loads would guess UTF-16 or UTF-32 from the first bytes, and JSON is UTF-8 (RFC 8259)
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
                           f"(byte {exc.pos})") from exc
    except RecursionError as exc:
        raise InvalidInput(f"{what} nests JSON arrays or objects too deeply") from exc


def _json_kind(value: Any) -> str:
    """The JSON type name of a decoded value, for error messages."""
    for kind, name in ((bool, "boolean"), ((int, float), "number"), (str, "string"), (list, "array"),
                       (dict, "object")):
        if isinstance(value, kind):
            return name
    return "null"


_KINDS = {str: "a string", list: "an array", dict: "an object", bool: "a boolean", int: "an integer"}


def _member(body: dict, key: str, kind: type, where: str, default: Any = None) -> Any:
    """``body[key]`` if it has the JSON type ``kind`` (absent: ``default``); a boolean is no integer here."""
    if key not in body:
        return default
    value = body[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidInput(f"{where}{key!r} must be {_KINDS[kind]}, not {_described(value)}")
    return value


def _clip(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= limit else text[:limit] + "..."


def _described(value: Any) -> str:
    """A decoded JSON value for an error message: its JSON type and (clipped) text, ``null`` once."""
    return "null" if value is None else f"{_json_kind(value)} {_clip(value)}"


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object, not {_described(value)}")
    return value


def _set_parameter(parameters, key: str, value: Any, where: str) -> None:
    """One KServe parameter (string, number or boolean) into a protobuf parameter map."""
    parameter = parameters[key]
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:
        parameter.int64_param = value
    elif isinstance(value, int) and 0 <= value <= _UINT64_MAX:
        parameter.uint64_param = value
    elif isinstance(value, float):
        parameter.double_param = value
    elif isinstance(value, str):
        parameter.string_param = value
    else:
        del parameters[key]
        problem = "is out of the 64-bit integer range" if isinstance(value, int) else \
            f"is {_json_kind(value)}; a parameter is a string, number or boolean"
        raise InvalidInput(f"{where}parameter {key!r} {problem}")


def _parameters(source: dict, target, where: str, skip: tuple[str, ...] = ()) -> None:
    for key, value in _member(source, "parameters", dict, where, {}).items():
        if key not in skip:
            _set_parameter(target, key, value, where)


@dataclass(frozen=True)
class InferCall:
    """A KServe REST infer request as the gRPC message, and how each output is to be answered."""

    request: pb.ModelInferRequest
    binary_outputs: frozenset[str]  # outputs that go back as binary data; the rest as JSON


def _shape(tensor: dict, where: str) -> list[int]:
    shape = _member(tensor, "shape", list, where)
    if shape is None:
        raise InvalidInput(f"{where}'shape' is required (for the texts: [N])")
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or not _INT64[0] <= dim <= _INT64[1]:
            raise InvalidInput(f"{where}'shape' holds {_clip(dim)}; each dimension is an integer")
    return shape


def _texts_data(data: list, where: str) -> list[bytes]:
    """A BYTES tensor's elements given as JSON strings (UTF-8; a lone surrogate is left for the codec to refuse)."""
    items = []
    for index, element in enumerate(data):
        if not isinstance(element, str):
            raise InvalidInput(f"{where}'data' element {index} is {_json_kind(element)} {_clip(element)}: BYTES "
                               "elements travel as JSON strings, in a flat array for shape [N]")
        items.append(element.encode("utf-8", "surrogatepass"))
    return items


def _add_input(request: pb.ModelInferRequest, tensor: dict, index: int, binary: memoryview, offset: int) -> int:
    """Append input ``index`` to ``request``; returns the binary offset after its data."""
    where = f"inputs[{index}]: "
    name = _member(tensor, "name", str, where)
    datatype = _member(tensor, "datatype", str, where)
    if name is None or datatype is None:
        raise InvalidInput(f"{where}'name' and 'datatype' are required")
    shape = _shape(tensor, where)
    added = request.inputs.add(name=name, datatype=datatype, shape=shape)
    _parameters(tensor, added.parameters, where, skip=(_BINARY_SIZE,))
    size = _member(_member(tensor, "parameters", dict, where, {}), _BINARY_SIZE, int, where + "parameters: ")
    data = _member(tensor, "data", list, where)
    if size is not None:
        if data is not None:
            raise InvalidInput(f"{where}has both 'data' and parameter {_BINARY_SIZE!r}; send the tensor one way")
        if size < 0 or offset + size > len(binary):
            raise InvalidInput(f"{where}{_BINARY_SIZE} {size} runs past the binary data after the JSON "
                               f"({len(binary) - offset} bytes left)")
        request.raw_input_contents.append(bytes(binary[offset:offset + size]))
        return offset + size
    if data is None:
        raise InvalidInput(f"{where}'data' is required (or parameter {_BINARY_SIZE!r} with binary data)")
    if (name, datatype, len(shape)) == (codec.INPUT, "BYTES", 1):  # anything else: the codec names the defect
        if shape[0] >= 1 and len(data) != shape[0]:
            raise InvalidInput(f"{where}'shape' is [{shape[0]}] but 'data' holds {len(data)} elements; "
                               "send one string per text")
        added.contents.bytes_contents.extend(_texts_data(data, where))
    return offset


def _outputs(request: pb.ModelInferRequest, body: dict, binary_default: bool) -> set[str]:
    """Copy the requested outputs; returns those to answer as binary data (their own ``binary_data``, else the
    request's ``binary_data_output``)."""
    binary = set()
    for index, output in enumerate(_member(body, "outputs", list, "", [])):
        where = f"outputs[{index}]: "
        output = _object(output, f"outputs[{index}]")
        name = _member(output, "name", str, where)
        if name is None:
            raise InvalidInput(f"{where}'name' is required")
        added = request.outputs.add(name=name)
        _parameters(output, added.parameters, where, skip=(_BINARY,))
        if _member(_member(output, "parameters", dict, where, {}), _BINARY, bool, where + "parameters: ",
                   binary_default):
            binary.add(name)
    return binary


def infer_request(body: bytes, header_length: str | None, model_name: str, model_version: str) -> InferCall:
    """A KServe REST infer body (and its ``Inference-Header-Content-Length``, if any) as a ModelInferRequest."""
    binary = memoryview(b"")
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
            raise InvalidInput(f"{HEADER_LENGTH} {header_length!r} must be the byte length of the JSON at the start "
                               f"of the body (0 to {len(body)})")
        binary = memoryview(body)[int(header_length):]
        body = body[:int(header_length)]
    parsed = _object(parse_json(body), "the inference request")
    request = pb.ModelInferRequest(model_name=model_name, model_version=model_version,
                                   id=_member(parsed, "id", str, "", ""))
    _parameters(parsed, request.parameters, "request ", skip=(_BINARY_OUTPUT,))
    binary_default = _member(_member(parsed, "parameters", dict, "", {}), _BINARY_OUTPUT, bool, "parameters: ",
                             False)
    inputs = _member(parsed, "inputs", list, "")
    if inputs is None:
        raise InvalidInput(f"'inputs' is required: [{{\"name\": \"{codec.INPUT}\", \"datatype\": \"BYTES\", "
                           "\"shape\": [N], \"data\": [\"a review\", ...]}]")
    offset = 0
    for index, tensor in enumerate(inputs):
        offset = _add_input(request, _object(tensor, f"inputs[{index}]"), index, binary, offset)
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data follow the JSON but no input's "
                           f"{_BINARY_SIZE} accounts for them")
    binary_outputs = _outputs(request, parsed, binary_default)
    if not request.outputs:  # every output, each answered the default way
        binary_outputs = set(codec.OUTPUTS) if binary_default else set()
    return InferCall(request, frozenset(binary_outputs))


def _output_values(response: pb.ModelInferResponse, index: int) -> list:
    """Output ``index`` of ``response`` as Python values (floats or strings), from typed or raw contents."""
    output = response.outputs[index]
    if not response.raw_output_contents:
        contents = output.contents
        return list(contents.fp32_contents) if output.datatype == "FP32" else \
            [item.decode("utf-8") for item in contents.bytes_contents]
    raw = response.raw_output_contents[index]
    if output.datatype == "FP32":
        return np.frombuffer(raw, dtype="<f4").tolist()
    return [item.decode("utf-8") for item in codec.decode_bytes_tensor(raw, output.shape[0])]


def _binary(values: list, datatype: str) -> bytes:
    if datatype == "FP32":
        return np.asarray(values, dtype="<f4").tobytes()
    return codec.encode_bytes_tensor([value.encode("utf-8") for value in values])


def infer_response(call: InferCall, response: pb.ModelInferResponse) -> tuple[bytes, int | None]:
    """The response body, and the JSON's length when binary outputs follow it (else None).

    Each output goes back as JSON data or as binary data, as the request asked for it,
    whichever way (typed or raw) the codec built ``response``.
    """
    body: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        body["id"] = response.id
    outputs, chunks = [], []
    for index, output in enumerate(response.outputs):
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": list(output.shape)}
        values = _output_values(response, index)
        if output.name in call.binary_outputs:
            chunk = _binary(values, output.datatype)
            entry["parameters"] = {_BINARY_SIZE: len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = values
        outputs.append(entry)
    body["outputs"] = outputs
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if not chunks:
        return text, None
    return b"".join([text, *chunks]), len(text)


# --- the /v1 JSON API (sentiment.v1's messages as JSON)


def _v1_body(data: bytes, field: str, kind: type) -> Any:
    body = _object(parse_json(data), "the request body")
    unknown = sorted(set(body) - {field})
    if unknown:
        raise InvalidInput(f"unknown field(s) {unknown}; the body is {{\"{field}\": ...}}")
    value = _member(body, field, kind, "")
    if value is None:
        example = '"a review"' if kind is str else '["a review", ...]'
        raise InvalidInput(f"{field!r} is required: {{\"{field}\": {example}}}")
    return value


def _no_surrogates(text: str, where: str) -> str:
    """A JSON string may escape a lone surrogate (``\\ud800``), which no UTF-8 text can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{where} holds a lone surrogate (U+{ord(text[exc.start]):04X} at character "
                           f"{exc.start}); send valid Unicode text") from exc
    return text


def predict_text(data: bytes) -> str:
    """The text of a ``POST /v1/predict`` body ``{"text": "..."}``."""
    return _no_surrogates(_v1_body(data, "text", str), "'text'")


def predict_texts(data: bytes) -> list[str]:
    """The texts of a ``POST /v1/predict:batch`` body ``{"texts": ["...", ...]}``."""
    texts = _v1_body(data, "texts", list)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInput(f"'texts'[{index}] must be a string, not {_described(text)}")
        _no_surrogates(text, f"'texts'[{index}]")
    return texts


def _prediction(label: str, probability: float) -> dict[str, Any]:
    return {"label": label, "probability": float(np.float32(probability))}


def predict_response(scored: Scored) -> dict[str, Any]:
    """``PredictResponse`` as JSON: the prediction and the model version that made it."""
    p = scored.predictions[0]
    return {"prediction": _prediction(p.label, p.probability),
            "model": {"name": scored.model.name, "version": scored.model.version}}


def predict_batch_response(scored: Scored) -> dict[str, Any]:
    """``PredictBatchResponse`` as JSON: predictions in the order of the texts."""
    return {"predictions": [_prediction(p.label, p.probability) for p in scored.predictions],
            "model": {"name": scored.model.name, "version": scored.model.version}}


def explain_request(data: bytes) -> tuple[str, bool]:
    """The text and ``per_token`` flag of a ``POST /v1/explain`` body ``{"text": "...", "per_token": false}``."""
    body = _object(parse_json(data), "the request body")
    unknown = sorted(set(body) - {"text", "per_token"})
    if unknown:
        raise InvalidInput(f"unknown field(s) {unknown}; the body is {{\"text\": ..., \"per_token\": false}}")
    text = _member(body, "text", str, "")
    if text is None:
        raise InvalidInput("'text' is required: {\"text\": \"a review\"}")
    return _no_surrogates(text, "'text'"), bool(_member(body, "per_token", bool, "", False))


def _f32(value: float | None) -> float | None:
    """A probability as the gRPC port sends it (float32), so both ports give the same number."""
    return None if value is None else float(np.float32(value))


def explain_response(explained: Explained) -> dict[str, Any]:
    """``ExplainResponse`` as JSON, the same object as ``python -m client explain --json`` (docs/explain.md).

    ``probability``, ``label``, ``model``, ``version``, ``sentences`` (``{text, start, end,
    running_probability, effect, swing, tokens, tokens_read}``, offsets in code points, ``null``
    where the model read none of the sentence), ``turning_point`` and ``most_decisive`` (sentence
    indices or ``null``), ``tokens``, ``tokens_read``; ``token_steps`` when asked for.
    """
    e, text, model = explained.explanation, explained.text, explained.model
    negative, positive = model.labels
    out: dict[str, Any] = {
        "probability": _f32(e.probability), "label": positive if e.probability >= model.threshold else negative,
        "model": model.name, "version": model.version,
        "sentences": [{"text": text[s.start:s.end], "start": s.start, "end": s.end,
                       "running_probability": _f32(s.running_probability), "effect": _f32(s.effect),
                       "swing": _f32(s.swing), "tokens": s.tokens, "tokens_read": s.tokens_read}
                      for s in e.sentences],
        "turning_point": e.turning_point, "most_decisive": e.most_decisive,
        "tokens": e.tokens, "tokens_read": e.tokens_read}
    if e.token_steps:
        out["token_steps"] = [{"start": t.start, "end": t.end, "sentence": t.sentence,
                               "running_probability": _f32(t.running_probability)} for t in e.token_steps]
    return out


# --- protobuf messages (metadata, configuration, statistics) as Triton's JSON


def message_json(message: Message) -> dict[str, Any]:
    """``message`` in protobuf's JSON mapping (declared field names, defaults included), 64-bit integers as numbers."""
    data = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
    return _integers(message.DESCRIPTOR, data)


def _integers(descriptor, data: dict[str, Any]) -> dict[str, Any]:
    for field in descriptor.fields:
        if field.name not in data:
            continue
        value = data[field.name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            data[field.name] = {key: _convert(value_field, item) for key, item in value.items()}
        elif isinstance(value, list):
            data[field.name] = [_convert(field, item) for item in value]
        else:
            data[field.name] = _convert(field, value)
    return data


def _convert(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None:
        return _integers(field.message_type, value)
    if field.type in _INTEGER_TYPES:
        return int(value)
    return value


def repository_ready_only(data: bytes) -> bool:
    """``POST /v2/repository/index`` body: ``{"ready": bool}``, optional (empty body: every model)."""
    if not data.strip():
        return False
    return bool(_member(_object(parse_json(data), "the request body"), "ready", bool, "", False))


def error_body(message: str) -> bytes:
    """KServe v2 REST's error object ``{"error": message}``."""
    return json.dumps({"error": message}, ensure_ascii=False).encode("utf-8")


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

