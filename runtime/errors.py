"""Errors of the model runtime that callers act on (the repository's own is ``RepositoryError``)."""

from __future__ import annotations


class ConfigurationError(Exception):
    """The server cannot start as configured (bad flag, CUDA requested but unavailable, ...)."""
