"""Domain errors raised by the inference core and the batcher.

They know nothing about gRPC: :mod:`serve.ops.edge` maps each to a status code, in one place.
"""

from __future__ import annotations

# Defined beside the ONNX Runtime session, which raises it too; one class, so callers catch both.
from runtime.errors import ConfigurationError as ConfigurationError


class ServingError(Exception):
    """Base of every error a client can be told about (the message is shown to the client)."""


class InvalidInput(ServingError):
    """The request is malformed or breaks a documented limit (INVALID_ARGUMENT)."""


class ModelNotFound(ServingError):
    """The request names a model or version this server does not serve (NOT_FOUND)."""


class ModelNotReady(ServingError):
    """The model is not loaded and warm yet, or the server is shutting down (UNAVAILABLE)."""


class Overloaded(ServingError):
    """The queue is full; the client should back off and retry (RESOURCE_EXHAUSTED)."""


class DeadlineExpired(ServingError):
    """The client's deadline passed before the request reached the model (DEADLINE_EXCEEDED)."""


class ExplainUnavailable(ServingError):
    """The served version cannot explain (exported without a step graph) (FAILED_PRECONDITION)."""


class ReloadRejected(ServingError):
    """A model version failed to load, verify or warm up; the previous one keeps serving (FAILED_PRECONDITION)."""


class AdminDisabled(ServingError):
    """Admin RPCs are off because the server has no token authentication configured (PERMISSION_DENIED)."""
