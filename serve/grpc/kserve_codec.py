"""KServe v2 tensors <-> texts and predictions (no gRPC, no model: pure conversion and validation).

The served signature: input ``text`` BYTES [N]; outputs ``probability`` FP32 [N],
``label`` BYTES [N] and ``known_word_fraction`` FP32 [N] (the share of each text's words
the vocabulary knew whole: the readability signal of docs/model-repository.md). BYTES
tensors travel either as ``contents.bytes_contents`` (one entry per element) or in
``raw_input_contents``, where each element is a 4-byte little-endian length followed by
that many bytes. Every malformation is an :class:`InvalidInput`.

Triton's clients also send *parameters*: per request ``timeout`` (honoured), ``priority``
(one level here: accepted, no effect) and ``sequence_id`` / ``sequence_start`` /
``sequence_end`` (refused: the model is stateless); per tensor ``shared_memory_*`` and, on
outputs, ``classification`` (refused: extensions this server does not implement). A
feature a client asked for is never dropped silently. Other keys are custom parameters,
which KServe v2 lets a server ignore.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from protos.inference import grpc_predict_v2_pb2 as pb
from serve.engine.core import Prediction
from serve.ops.errors import InvalidInput

INPUT = "text"
OUTPUTS = {"probability": "FP32", "label": "BYTES", "known_word_fraction": "FP32"}
_LENGTH = struct.Struct("<I")
_SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")
_SHARED_MEMORY_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
_TYPED_FIELDS = ("bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents",
                 "fp32_contents", "fp64_contents", "bytes_contents")


def decode_bytes_tensor(buffer: bytes, count: int) -> list[bytes]:
    """Split a raw BYTES tensor into exactly ``count`` elements; the buffer must end with the last one."""
    items: list[bytes] = []
    offset, size = 0, len(buffer)
    for index in range(count):
        if offset + 4 > size:
            raise InvalidInput(f"raw input {INPUT!r}: buffer of {size} bytes ends at element {index} of {count} "
                               "(each element is a 4-byte little-endian length, then its bytes)")
        (length,) = _LENGTH.unpack_from(buffer, offset)
        offset += 4
        if offset + length > size:
            raise InvalidInput(f"raw input {INPUT!r}: element {index} declares {length} bytes but only "
                               f"{size - offset} remain in the buffer")
        items.append(buffer[offset:offset + length])
        offset += length
    if offset != size:
        raise InvalidInput(f"raw input {INPUT!r}: {size - offset} bytes left after the {count} elements "
                           "its shape declares")
    return items


def encode_bytes_tensor(items: Sequence[bytes]) -> bytes:
    """The raw encoding of a BYTES tensor."""
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def _utf8(items: Sequence[bytes]) -> list[str]:
    texts = []
    for index, item in enumerate(items):
        try:
            texts.append(item.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"input {INPUT!r} element {index} is not valid UTF-8 ({exc.reason} at byte "
                               f"{exc.start})") from exc
    return texts


def _parameter_value(parameters, key: str) -> bool | int | str | None:
    """The value of ``parameters[key]``, whichever of the oneof's fields carries it (None: absent or unset)."""
    parameter = parameters.get(key)  # not parameters[key]: that would insert the key into the request
    kind = parameter.WhichOneof("parameter_choice") if parameter is not None else None
    return getattr(parameter, kind) if kind else None


def refuse_unsupported_parameters(request: pb.ModelInferRequest) -> None:
    """Refuse the Triton parameters that ask for a feature this server lacks, rather than ignore them.

    ``sequence_*``: a stateless model cannot keep a sequence's state. ``shared_memory_*`` on a
    tensor and ``classification`` on an output: extensions not implemented here.
    """
    asked = {key: _parameter_value(request.parameters, key) for key in _SEQUENCE_PARAMETERS
             if key in request.parameters}
    if any(asked.values()):
        raise InvalidInput(f"request parameters {asked} ask for Triton's sequence batching; this model is "
                           "stateless and scores each text on its own: send no sequence_id")
    tensors = [(f"input {t.name!r}", t.parameters) for t in request.inputs]
    tensors += [(f"output {t.name!r}", t.parameters) for t in request.outputs]
    for tensor, parameters in tensors:
        if any(key in parameters for key in _SHARED_MEMORY_PARAMETERS):
            region = _parameter_value(parameters, "shared_memory_region")
            raise InvalidInput(f"{tensor} names shared-memory region {region!r}: this server has no shared-memory "
                               "extension; send the data in the request")
    for output in request.outputs:
        if "classification" in output.parameters:
            raise InvalidInput(f"output {output.name!r} asks for classification (class_count="
                               f"{_parameter_value(output.parameters, 'classification')}): this server has no "
                               "classification extension; request the 'label' output for the class")


def request_timeout_s(request: pb.ModelInferRequest) -> float | None:
    """Seconds from Triton's ``timeout`` request parameter (microseconds; absent or 0: none)."""
    if "timeout" not in request.parameters:
        return None
    microseconds = _parameter_value(request.parameters, "timeout")
    if request.parameters["timeout"].WhichOneof("parameter_choice") not in ("int64_param", "uint64_param"):
        raise InvalidInput(f"request parameter 'timeout' must be an integer number of microseconds, not "
                           f"{microseconds!r}")
    if microseconds < 0:
        raise InvalidInput(f"request parameter 'timeout' is {microseconds} us; send 0 (none) or more")
    return microseconds / 1e6 if microseconds else None


def texts_from_request(request: pb.ModelInferRequest, max_texts: int) -> tuple[list[str], bool]:
    """The request's texts, and whether they came raw (then the answer goes raw too)."""
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT:
        names = [tensor.name for tensor in request.inputs]
        raise InvalidInput(f"expected exactly one input named {INPUT!r} (BYTES, shape [N]); got {names}")
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {INPUT!r} must have datatype BYTES, not {tensor.datatype!r}")
    if len(tensor.shape) != 1:
        raise InvalidInput(f"input {INPUT!r} must have shape [N], not {list(tensor.shape)}")
    count = tensor.shape[0]
    if count < 1:
        raise InvalidInput(f"input {INPUT!r} has shape [{count}]: send at least one text")
    if count > max_texts:
        raise InvalidInput(f"input {INPUT!r} has {count} texts; at most {max_texts} per request")
    typed = [name for name in _TYPED_FIELDS if len(getattr(tensor.contents, name))]
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InvalidInput(f"raw_input_contents has {len(request.raw_input_contents)} entries for 1 input")
        if typed:
            raise InvalidInput(f"input {INPUT!r} has both raw_input_contents and contents; send one of them")
        return _utf8(decode_bytes_tensor(request.raw_input_contents[0], count)), True
    if typed not in ([], ["bytes_contents"]):
        raise InvalidInput(f"input {INPUT!r} is BYTES: put its elements in contents.bytes_contents, not {typed}")
    items = tensor.contents.bytes_contents
    if len(items) != count:
        raise InvalidInput(f"input {INPUT!r} declares shape [{count}] but contents.bytes_contents has "
                           f"{len(items)} elements")
    return _utf8(items), False


def requested_outputs(request: pb.ModelInferRequest) -> list[str]:
    """Output names to answer, in the order asked (all of them when none is named)."""
    names = [output.name for output in request.outputs] or list(OUTPUTS)
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown:
        raise InvalidInput(f"unknown output(s) {unknown}; this model has {list(OUTPUTS)}")
    if len(set(names)) != len(names):
        raise InvalidInput(f"output names repeat: {names}")
    return names


def build_response(request: pb.ModelInferRequest, model_name: str, model_version: int, outputs: Sequence[str],
                   predictions: Sequence[Prediction], raw: bool) -> pb.ModelInferResponse:
    """ModelInferResponse with ``outputs`` in order, raw-encoded if ``raw``, else typed."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=str(model_version), id=request.id)
    count = len(predictions)
    for name in outputs:
        tensor = response.outputs.add(name=name, datatype=OUTPUTS[name], shape=[count])
        if OUTPUTS[name] == "FP32":
            values = np.fromiter((getattr(p, name) for p in predictions), dtype="<f4", count=count)
            if raw:
                response.raw_output_contents.append(values.tobytes())
            else:
                tensor.contents.fp32_contents.extend(values.tolist())
        else:
            labels = [p.label.encode("utf-8") for p in predictions]
            if raw:
                response.raw_output_contents.append(encode_bytes_tensor(labels))
            else:
                tensor.contents.bytes_contents.extend(labels)
    return response
