"""Domain errors raised by the inference core and the batcher.

They know nothing about gRPC: :mod:`serve.edge` maps each to a status code, in one place.
"""

from __future__ import annotations


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


class ConfigurationError(Exception):
    """The server cannot start as configured (bad flag, CUDA requested but unavailable, ...)."""
